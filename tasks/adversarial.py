"""Adversarial examples: label-preserving perturbations searched greedily against a real model.

The reference model is the current champion when one exists, else the base model with its
(untrained) classification head. For each example the search proposes perturbations that keep the
label -- character and word edits, synonym swaps, neutral distractor clauses, negated distractors
("No co-signer was required.") whose label is known because they add no evidence -- scores them
all in one batch, keeps the one that lowers the model's probability of the true label most, and
repeats until the prediction flips or the step budget runs out.

Two uses:
- training: the perturbations that flipped a correct prediction join the training split with
  their true label (`source="adversarial"`);
- robustness slice: every test example's hardest perturbation, labelled with its true label,
  written beside the test split and evaluated separately (robust accuracy / macro-F1).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.augment import (
    CharNoiseSettings,
    SynonymSettings,
    WordEditSettings,
    char_noise,
    embedding_synonyms,
    synonym_swap,
    word_edit,
)
from tasks.models import ModelSettings, TextClassifier, load_untuned
from tasks.progress import Progress

log = logging.getLogger(__name__)

Operation = Literal["char", "word", "synonym", "distractor", "negation"]

DISTRACTORS = (
    "The weather was mild on the day of the visit.",
    "The branch was busy that afternoon.",
    "The form was filled in with a blue pen.",
    "The meeting started a few minutes late.",
    "The file was reviewed by a second clerk.",
    "A reminder was sent by post.",
)
NEGATED_DISTRACTORS = (
    "No co-signer was named.",
    "The notes do not mention anything further.",
    "Nothing else was discussed.",
    "There was no request for a rate discount.",
    "No additional documents were requested.",
    "The applicant did not ask about insurance.",
)


class AdversarialSettings(BaseModel):
    """Greedy search for label-preserving perturbations that flip the reference model."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="Add adversarial training rows and a robustness slice."
    )
    operations: list[Operation] = Field(
        default_factory=lambda: ["char", "word", "synonym", "distractor", "negation"],
        description="Perturbations the search may apply.",
    )
    candidates_per_step: int = Field(
        default=12, ge=1, description="Perturbations scored per example per step."
    )
    max_steps: int = Field(
        default=4, ge=1, description="Most perturbations stacked on one example before giving up."
    )
    max_train_examples: int = Field(
        default=400, ge=0, description="Training rows attacked (a seeded sample); 0: none."
    )
    max_test_examples: int | None = Field(
        default=None, ge=1, description="Test rows in the robustness slice (a seeded sample)."
    )
    distractors: list[str] = Field(
        default_factory=lambda: list(DISTRACTORS),
        description="Neutral clauses inserted as distractors.",
    )
    negated_distractors: list[str] = Field(
        default_factory=lambda: list(NEGATED_DISTRACTORS),
        description="Negated clauses that add no evidence, so the label is unchanged.",
    )
    seed: int = Field(default=13, description="Seed of sampling and search.")


class Predictor(Protocol):
    labels: list[str]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class HeadPredictor(TextClassifier):
    """The base model with a fresh classification head: the reference before any champion.

    Only the loading differs from a trained folder; prediction is `TextClassifier`'s.
    """

    def __init__(
        self, base_model: str, labels: list[str], max_length: int, seed: int, device: str = "auto"
    ) -> None:
        from transformers import set_seed

        set_seed(seed)
        settings = ModelSettings(base_model=base_model, max_length=max_length)
        tokenizer, model = load_untuned(settings, labels, device)
        self._setup(tokenizer, model, labels, max_length)


class Perturber:
    """Proposes label-preserving perturbations of a text."""

    def __init__(
        self, settings: AdversarialSettings, synonyms: dict[str, list[str]] | None = None
    ) -> None:
        self.settings = settings
        self.synonyms = synonyms or {}
        self.char = CharNoiseSettings(rate=0.05)
        self.word = WordEditSettings(rate=0.05)
        self.syn = SynonymSettings(rate=0.2)
        self.operations = [
            op for op in settings.operations if op != "synonym" or self.synonyms
        ] or ["char"]

    def _insert_clause(self, text: str, clause: str, rng: random.Random) -> str:
        sentences = text.split(". ")
        at = rng.randrange(1, len(sentences) + 1)
        if at == len(sentences):
            return text.rstrip() + " " + clause
        sentences.insert(at, clause.rstrip("."))
        return ". ".join(sentences)

    def propose(self, text: str, rng: random.Random) -> tuple[str, str]:
        op = rng.choice(self.operations)
        if op == "char":
            return char_noise(text, rng, self.char), op
        if op == "word":
            return word_edit(text, rng, self.word), op
        if op == "synonym":
            return synonym_swap(text, rng, self.synonyms, self.syn), op
        pool = (
            self.settings.distractors if op == "distractor" else self.settings.negated_distractors
        )
        return self._insert_clause(text, rng.choice(pool), rng), op


def greedy_attack(
    texts: list[str],
    labels: list[str],
    predictor: Predictor,
    settings: AdversarialSettings,
    synonyms: dict[str, list[str]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One row per input: the hardest perturbation found and whether it flipped the prediction.

    Columns: text (perturbed), label (true), original, operations, p_true_before, p_true_after,
    pred_before, pred_after, correct_before, flipped.
    """
    rng = random.Random(settings.seed)
    progress_lines = Progress("adversarial")  # candidates scored, over all steps
    perturber = Perturber(settings, synonyms)
    index = {label: i for i, label in enumerate(predictor.labels)}
    y = np.array([index[label] for label in labels])
    proba = predictor.predict_proba(list(texts))
    pred_before = proba.argmax(-1)
    current = list(texts)
    p_true = proba[np.arange(len(texts)), y].copy()
    pred_now = pred_before.copy()
    ops: list[list[str]] = [[] for _ in texts]
    active = [i for i in range(len(texts)) if pred_before[i] == y[i]]
    # examples the model already gets wrong are perturbed once, for the robustness slice
    wrong = [i for i in range(len(texts)) if pred_before[i] != y[i]]
    for i in wrong:
        new, op = perturber.propose(current[i], rng)
        current[i], ops[i] = new, [op]
    if wrong:
        wp = predictor.predict_proba([current[i] for i in wrong])
        for k, i in enumerate(wrong):
            p_true[i], pred_now[i] = wp[k, y[i]], wp[k].argmax()
    for step in range(settings.max_steps):
        if not active:
            break
        batch_texts, owners, batch_ops = [], [], []
        for i in active:
            seen = set()
            for _ in range(settings.candidates_per_step):
                new, op = perturber.propose(current[i], rng)
                if new != current[i] and new not in seen:
                    seen.add(new)
                    batch_texts.append(new)
                    owners.append(i)
                    batch_ops.append(op)
        if not batch_texts:
            break
        scores = _scored(predictor, batch_texts, progress_lines)
        best: dict[int, int] = {}
        for k, i in enumerate(owners):
            if i not in best or scores[k, y[i]] < scores[best[i], y[i]]:
                best[i] = k
        still = []
        for i in active:
            k = best.get(i)
            if k is None or scores[k, y[i]] >= p_true[i]:
                continue  # no candidate lowered the true-class probability: stop here
            current[i], p_true[i], pred_now[i] = batch_texts[k], scores[k, y[i]], scores[k].argmax()
            ops[i].append(batch_ops[k])
            if pred_now[i] == y[i]:
                still.append(i)
        active = still
        if progress is not None:
            progress(step + 1, len(active))
    progress_lines.done()
    return pd.DataFrame(
        {
            "text": current,
            "label": list(labels),
            "original": list(texts),
            "operations": ["+".join(o) for o in ops],
            "p_true_before": proba[np.arange(len(texts)), y],
            "p_true_after": p_true,
            "pred_before": [predictor.labels[i] for i in pred_before],
            "pred_after": [predictor.labels[i] for i in pred_now],
            "correct_before": pred_before == y,
            "flipped": (pred_before == y) & (pred_now != y),
        }
    )


def _scored(predictor: Predictor, texts: list[str], progress: Progress) -> np.ndarray:
    """Probabilities of a step's candidates, scored 256 at a time so a long step reports."""
    out = []
    for start in range(0, len(texts), 256):
        out.append(predictor.predict_proba(texts[start : start + 256]))
        progress.advance(len(out[-1]))
    return np.concatenate(out)


def _sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(frame):
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def adversarial_training_rows(
    attacked: pd.DataFrame, extra_columns: dict | None = None
) -> pd.DataFrame:
    """The perturbations that flipped a correct prediction, as training rows with true labels."""
    flipped = attacked[attacked["flipped"]]
    return pd.DataFrame(
        {
            "text": flipped["text"].tolist(),
            "label": flipped["label"].tolist(),
            "source": "adversarial",
            **(extra_columns or {}),
        }
    )


class AdversarialResult(BaseModel):
    train_path: Path
    robust_test_path: Path | None
    reference: str
    train_attacked: int
    train_flipped: int
    test_attacked: int
    test_flipped: int
    attack_success_rate: float
    per_operation: dict[str, int]


def reference_predictor(
    champion_dir: Path | None,
    base_model: str,
    labels: list[str],
    max_length: int,
    seed: int,
    device: str = "auto",
) -> tuple[Predictor, str]:
    """The champion's classifier when one exists, else the base model with a fresh head."""
    if champion_dir is not None:
        return TextClassifier(champion_dir, device), "champion"
    return HeadPredictor(base_model, labels, max_length, seed, device), "base model with head"


def build_adversarial(
    train_path: Path,
    test_path: Path,
    predictor: Predictor,
    reference: str,
    settings: AdversarialSettings,
    out_dir: Path,
    base_model: str | None = None,
) -> AdversarialResult:
    """Attack a sample of the training split (flips join training) and the test split (the
    robustness slice). Writes `train_adversarial.parquet` and `test_adversarial.parquet`."""
    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    synonyms = None
    if "synonym" in settings.operations and base_model is not None:
        words = {w.strip(".,;:").lower() for t in train["text"] for w in t.split(" ")}
        synonyms = embedding_synonyms(base_model, words, SynonymSettings())
    out_dir.mkdir(parents=True, exist_ok=True)

    def progress(name: str) -> Callable[[int, int], None]:
        return lambda step, left: log.info(
            "adversarial %s: step %d, %d examples not flipped yet", name, step, left
        )

    originals = train[train["source"] == "original"] if "source" in train else train
    train_sample = _sample(originals, settings.max_train_examples, settings.seed)
    attacked_train = (
        greedy_attack(
            train_sample["text"].tolist(),
            train_sample["label"].tolist(),
            predictor,
            settings,
            synonyms,
            progress("train"),
        )
        if len(train_sample)
        else pd.DataFrame(columns=["text", "label", "flipped", "operations", "correct_before"])
    )
    new_rows = adversarial_training_rows(attacked_train)
    base = train if "source" in train else train.assign(source="original")
    combined = pd.concat([base, new_rows], ignore_index=True)
    train_out = out_dir / "train_adversarial.parquet"
    combined.to_parquet(train_out, index=False)

    test_sample = _sample(test, settings.max_test_examples, settings.seed)
    attacked_test = greedy_attack(
        test_sample["text"].tolist(),
        test_sample["label"].tolist(),
        predictor,
        settings,
        synonyms,
        progress("test"),
    )
    robust_out = out_dir / "test_adversarial.parquet"
    attacked_test.to_parquet(robust_out, index=False)

    correct = int(attacked_train["correct_before"].sum()) if len(attacked_train) else 0
    flipped_ops = attacked_train[attacked_train["flipped"]]["operations"] if len(new_rows) else []
    ops = pd.Series([o for chain in flipped_ops for o in chain.split("+")], dtype=str)
    return AdversarialResult(
        train_path=train_out,
        robust_test_path=robust_out,
        reference=reference,
        train_attacked=len(attacked_train),
        train_flipped=len(new_rows),
        test_attacked=len(attacked_test),
        test_flipped=int(attacked_test["flipped"].sum()),
        attack_success_rate=len(new_rows) / correct if correct else 0.0,
        per_operation={str(k): int(v) for k, v in ops.value_counts().items()},
    )


@task(name="adversarial")
def adversarial_task(
    train_path: Path,
    test_path: Path,
    champion_dir: Path | None,
    base_model: str,
    labels: list[str],
    max_length: int,
    settings: AdversarialSettings,
    out_dir: Path,
    device: str = "auto",
) -> AdversarialResult:
    predictor, reference = reference_predictor(
        champion_dir, base_model, labels, max_length, settings.seed, device
    )
    result = build_adversarial(
        train_path, test_path, predictor, reference, settings, out_dir, base_model
    )
    log.info(
        "adversarial against %s: %d/%d training rows flipped (added), %d/%d test rows flipped",
        reference,
        result.train_flipped,
        result.train_attacked,
        result.test_flipped,
        result.test_attacked,
    )
    return result


def robust_metrics(
    predict: Callable[[list[str]], list[str]], robust_test_path: Path, labels: list[str]
) -> dict[str, float]:
    """Accuracy and macro-F1 on the robustness slice, keyed `robust_accuracy`, `robust_f1_macro`."""
    from tasks.evaluate import classification_metrics

    slice_ = pd.read_parquet(robust_test_path)
    result = classification_metrics(
        slice_["label"].tolist(), predict(slice_["text"].tolist()), labels
    )
    return {
        "robust_f1_macro": result.metrics["f1_macro"],
        "robust_accuracy": result.metrics["accuracy"],
        "robust_examples": float(len(slice_)),
    }
