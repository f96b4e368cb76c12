"""Evaluate candidate, baseline and champion on the same held-out test split.

- Candidate: the freshly trained folder, loaded as it will serve.
- Baseline: the untuned base model with a logistic-regression head fitted on `baseline_shots`
  examples per class of the training split (a few-shot fit on frozen mean-pooled embeddings).
  It shows what the base model gives without fine-tuning; its metrics are cached per
  (base model, dataset version, shots) so they are not recomputed every run.
- Champion: whatever a `predict(texts) -> labels` callable returns (the flow passes the model
  behind the `champion` alias).
Latency is measured one example at a time, as a request would be served.

Generation: ROUGE-1/2/L/Lsum F-measures from `rouge_score` with stemming, exact match, mean
output length (words) and unsupported details (`tasks.unsupported`: the share of an answer's
numbers, dates and names that its input lacks). In the flow (`evaluate_generator`) candidate,
champion and the zero-shot baseline (the untuned base model) are all prompted exactly as training prompts and decode
greedily up to `model.max_new_tokens`; `evaluate_generation` scores any causal LM folder on a
prompt/target file with the decoding config in `evaluate.decoding`.

Every result keeps its per-example predictions (and per-example scores for generation), so
candidate, baseline and champion can be compared with a paired bootstrap on the same examples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, FilePath
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from tasks import stage_logger
from tasks.metrics import name_key
from tasks.models import (
    ModelCard,
    ModelSettings,
    TextClassifier,
    TextGenerator,
    fix_pad_token,
    generate_batched,
    load_encoder,
    load_trained,
    model_device,
)
from tasks.progress import Progress
from tasks.unsupported import measure_unsupported

STEP_ROWS = 256  # rows per prediction call between progress lines (a few seconds at most)


class DecodingSettings(BaseModel):
    """How a causal LM generates during evaluation. Greedy by default: reproducible numbers."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=64, ge=1, description="Tokens generated per example.")
    num_beams: int = Field(default=1, ge=1, description="Beam width (1: greedy or sampling).")
    do_sample: bool = Field(default=False, description="Sample instead of greedy / beam search.")
    temperature: float = Field(
        default=1.0, gt=0, description="Sampling temperature (only with do_sample)."
    )
    batch_size: int = Field(
        default=16, ge=1, description="Prompts per generate call; higher is faster, more memory."
    )
    max_input_tokens: int = Field(
        default=512, ge=8, description="Prompt tokens kept (truncated from the left)."
    )
    seed: int = Field(default=0, description="Seed for sampling.")


class EvaluateSettings(BaseModel):
    """How candidate, baseline and latency are measured."""

    model_config = ConfigDict(extra="forbid")

    baseline_shots: int = Field(
        default=8, ge=1, description="Training examples per class for the few-shot baseline head."
    )
    latency_samples: int = Field(
        default=50, ge=1, description="Test examples timed one at a time for p50/p95 latency."
    )
    batch_size: int = Field(default=64, ge=1, description="Batch size for bulk prediction.")
    bootstrap_resamples: int = Field(
        default=1000, ge=0, description="Paired bootstrap resamples for intervals (0: none)."
    )
    bootstrap_confidence: float = Field(
        default=0.95, gt=0, lt=1, description="Coverage of the paired bootstrap intervals."
    )
    adversarial_path: FilePath | None = Field(
        default=None,
        description="Optional adversarial slice (same columns as the test split), also scored.",
    )
    prompt_template: str = Field(
        default="{text}\nSummary:",
        description="Standalone `evaluate_generation` of a text/summary file only; the flow "
        "prompts exactly as training does (model.prompt_template or the chat template).",
    )
    parity_min_agreement: float = Field(
        default=0.995,
        ge=0,
        le=1,
        description="Before a candidate that passed its gate is registered, the pyfunc a server "
        "loads is run on the test split: this share of its answers must agree with the "
        "evaluated model's (labels equal; generation: ROUGE-L >= 0.9), else the gate fails.",
    )
    decoding: DecodingSettings = Field(
        default_factory=lambda: DecodingSettings(),
        description="Standalone `evaluate_generation` only; the flow decodes greedily up to "
        "model.max_new_tokens, as serving does.",
    )


class EvalResult(BaseModel):
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = {}
    confusion: list[list[int]] = []
    labels: list[str] = []
    predictions: list[str] = []
    references: list[str] = []
    per_example: dict[str, list[float]] = {}
    unsupported_spans: list[list[str]] = []  # generation: per answer, details not in its input


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> EvalResult:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    class_f1 = {f"f1/{label}": float(f1[i]) for i, label in enumerate(labels)}
    return EvalResult(
        metrics={
            "f1_macro": float(
                f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
            ),
            "f1_micro": float(
                f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)
            ),
            "f1_weighted": float(
                f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
            ),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            **class_f1,
        },
        per_class={
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        labels=labels,
        predictions=list(y_pred),
        references=list(y_true),
    )


def in_steps(fn: Callable[[list[str]], list], texts: list[str], stage: str) -> list:
    """`fn(texts)` called on `STEP_ROWS` texts at a time, so a long prediction loop says how
    far it got (a stuck model is visible in the UI); the outputs in input order."""
    progress = Progress(stage, total=len(texts))
    out: list = []
    for start in range(0, len(texts), STEP_ROWS):
        chunk = texts[start : start + STEP_ROWS]
        out.extend(fn(chunk))
        progress.advance(len(chunk))
    progress.done()
    return out


def measure_latency(predict_one: Callable[[str], object], texts: list[str]) -> dict[str, float]:
    """p50 / p95 seconds for single-example requests (after one warm-up call)."""
    predict_one(texts[0])
    timings = []
    progress = Progress("evaluate-latency", total=len(texts))
    for text in texts:
        started = time.perf_counter()
        predict_one(text)
        timings.append(time.perf_counter() - started)
        progress.advance()
    progress.done()
    timings.sort()
    p95_index = min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))
    return {"latency_p50_s": statistics.median(timings), "latency_p95_s": timings[p95_index]}


def evaluate_candidate(
    model_dir: Path, test_path: Path, settings: EvaluateSettings, device: str = "auto"
) -> EvalResult:
    test = pd.read_parquet(test_path)
    classifier = TextClassifier(model_dir, device)
    labels = classifier.labels
    preds = in_steps(
        lambda texts: classifier.predict(texts, settings.batch_size),
        test["text"].tolist(),
        "evaluate",
    )
    result = classification_metrics(test["label"].tolist(), preds, labels)
    sample = test["text"].tolist()[: settings.latency_samples]
    result.metrics.update(measure_latency(lambda t: classifier.predict([t]), sample))
    return result


def embed(
    base_model: str, texts: list[str], batch_size: int = 64, device: str = "auto"
) -> np.ndarray:
    """Mean-pooled, L2-normalised hidden states of the untuned base model."""
    return _embed(*load_encoder(base_model, device), texts, batch_size)


def _embed(tokenizer, model, texts: list[str], batch_size: int = 64) -> np.ndarray:  # noqa: ANN001
    import torch

    out = []
    progress = Progress("evaluate-embed", total=len(texts))
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=256,
                padding=True,
                return_tensors="pt",
            ).to(model_device(model))
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
            progress.advance(len(pooled))
    progress.done()
    return np.concatenate(out)


def few_shot_baseline(
    base_model: str,
    train_path: Path,
    test_path: Path,
    labels: list[str],
    shots: int,
    seed: int,
    device: str = "auto",
) -> EvalResult:
    """Logistic regression on frozen base-model embeddings of `shots` examples per class."""
    from sklearn.linear_model import LogisticRegression

    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    fit = pd.concat(
        [g.sample(min(shots, len(g)), random_state=seed) for _, g in train.groupby("label")]
    )
    tokenizer, encoder = load_encoder(base_model, device)  # once, for both embeddings
    head = LogisticRegression(max_iter=2000)
    head.fit(_embed(tokenizer, encoder, fit["text"].tolist()), fit["label"])
    preds = head.predict(_embed(tokenizer, encoder, test["text"].tolist())).tolist()
    return classification_metrics(test["label"].tolist(), preds, labels)


def cached_baseline(
    cache_dir: Path,
    base_model: str,
    dataset_version: str,
    train_path: Path,
    test_path: Path,
    labels: list[str],
    settings: EvaluateSettings,
    seed: int,
    device: str = "auto",
) -> tuple[EvalResult, bool]:
    """The baseline for (base model, dataset version, shots), computed once. (result, was_cached).

    The file name carries the base model's escaped folder name (readable) and a hash of the
    whole name: `org-a/bert` and `org-b/bert` share a folder name, not a baseline."""
    model = f"{name_key(Path(base_model).name)}-{_digest(base_model)}"
    key = f"{model}-{name_key(dataset_version)}-{settings.baseline_shots}-{seed}"
    path = cache_dir / f"baseline-v3-{key}.json"
    if path.is_file():
        return EvalResult.model_validate_json(path.read_text()), True
    result = few_shot_baseline(
        base_model, train_path, test_path, labels, settings.baseline_shots, seed, device
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json())
    return result, False


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def evaluate_predictions(
    predict: Callable[[list[str]], list[str]], test_path: Path, labels: list[str]
) -> EvalResult:
    test = pd.read_parquet(test_path)
    predictions = in_steps(predict, test["text"].tolist(), "evaluate")
    return classification_metrics(test["label"].tolist(), predictions, labels)


def read_table(path: Path) -> pd.DataFrame:
    """A parquet, jsonl or csv file as a frame (test splits, adversarial slices)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path}: unsupported file type '{suffix}'; use .parquet, .jsonl or .csv")


def evaluate_classifier_on(
    predict: Callable[[list[str]], list[str]], path: Path, labels: list[str]
) -> EvalResult:
    """Classification metrics of `predict` on any file with `text` and `label` columns."""
    frame = read_table(path)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}; expected text and label")
    predictions = in_steps(predict, frame["text"].astype(str).tolist(), "evaluate")
    return classification_metrics(frame["label"].astype(str).tolist(), predictions, labels)


# ---------------------------------------------------------------- generation

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def compute_rouge(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example ROUGE F-measures from rouge-score with stemming (rougeLsum splits at newlines)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {k: [] for k in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for k in ROUGE_TYPES:
            out[k].append(float(scores[k].fmeasure))
    return out


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().split())


def generation_metrics(
    predictions: list[str], references: list[str], sources: list[str] | None = None
) -> EvalResult:
    """ROUGE-1/2/L/Lsum, exact match (case and whitespace folded) and mean output words; with
    the inputs (`sources`), the unsupported-detail rate and answer share (`tasks.unsupported`)."""
    per_example = compute_rouge(predictions, references)
    per_example["exact_match"] = [
        float(normalise_answer(p) == normalise_answer(r))
        for p, r in zip(predictions, references, strict=True)
    ]
    per_example["output_words"] = [float(len(p.split())) for p in predictions]
    metrics = {k: float(np.mean(v)) if v else 0.0 for k, v in per_example.items()}
    metrics["mean_output_words"] = metrics.pop("output_words")
    spans: list[list[str]] = []
    if sources is not None:
        unsupported = measure_unsupported(list(predictions), list(sources))
        metrics.update(unsupported.metrics())
        per_example["unsupported_details"] = [float(n) for n in unsupported.unsupported]
        per_example["details"] = [float(n) for n in unsupported.details]
        spans = unsupported.spans
    return EvalResult(
        metrics=metrics,
        predictions=list(predictions),
        references=list(references),
        per_example=per_example,
        unsupported_spans=spans,
    )


def read_generation_pairs(path: Path, prompt_template: str) -> tuple[list[str], list[str]]:
    """(prompts, targets) from `prompt`/`target` columns, or `text`/`summary` via the template."""
    frame = read_table(path)
    if {"prompt", "target"} <= set(frame.columns):
        return frame["prompt"].astype(str).tolist(), frame["target"].astype(str).tolist()
    if {"text", "summary"} <= set(frame.columns):
        prompts = [prompt_template.format(text=t) for t in frame["text"].astype(str)]
        return prompts, frame["summary"].astype(str).tolist()
    raise ValueError(
        f"{path}: a generation test file needs prompt/target or text/summary columns, "
        f"found {sorted(frame.columns)}"
    )


def load_causal_lm(model_dir: Path, device: str = "auto"):  # noqa: ANN201 - (model, tokenizer)
    """Any causal LM folder (tunegate's, or plain full weights or a peft adapter), placed."""
    card = ModelCard.read_or_describe(Path(model_dir), task="generation")
    tokenizer, model = load_trained(Path(model_dir), device, card)
    return model, tokenizer


def generate_texts(
    model,  # noqa: ANN001 - a transformers causal LM
    tokenizer,  # noqa: ANN001 - its tokenizer
    prompts: list[str],
    decoding: DecodingSettings,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Continuations of prompt strings (cut from the left to `decoding.max_input_tokens`) with
    the decoding config, through `tasks.models.generate_batched` (length-sorted left-padded
    batches); outputs come back in input order.
    """
    import torch

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    fix_pad_token(tokenizer)
    ids = tokenizer(
        prompts, add_special_tokens=True, truncation=True, max_length=decoding.max_input_tokens
    )["input_ids"]
    options: dict[str, object] = {"num_beams": decoding.num_beams, "do_sample": decoding.do_sample}
    if decoding.do_sample:
        options["temperature"] = decoding.temperature
        torch.manual_seed(decoding.seed)
    return generate_batched(
        model, tokenizer, ids, decoding.max_new_tokens, decoding.batch_size, options, progress
    )


def evaluate_generation(
    model_or_dir,  # noqa: ANN001 - a model folder, or a loaded causal LM (then pass tokenizer)
    test_path: Path,
    settings: EvaluateSettings,
    tokenizer=None,  # noqa: ANN001
    progress: Callable[[int, int], None] | None = None,
    device: str = "auto",
) -> EvalResult:
    """ROUGE, exact match and output length on the test file, plus single-request latency."""
    if isinstance(model_or_dir, str | Path):
        model, tokenizer = load_causal_lm(Path(model_or_dir), device)
    else:
        model = model_or_dir
        if tokenizer is None:
            raise ValueError("evaluate_generation: pass the tokenizer with a loaded model")
    prompts, targets = read_generation_pairs(test_path, settings.prompt_template)
    predictions = generate_texts(model, tokenizer, prompts, settings.decoding, progress)
    result = generation_metrics(predictions, targets, prompts)
    single = settings.decoding.model_copy(update={"batch_size": 1})
    result.metrics.update(
        measure_latency(
            lambda p: generate_texts(model, tokenizer, [p], single),
            prompts[: settings.latency_samples],
        )
    )
    return result


def evaluate_generator(
    generate: Callable[[list[str]], list[str]], test_path: Path, settings: EvaluateSettings
) -> EvalResult:
    """ROUGE, exact match and output length of `generate` on a split's `text` -> `target` pairs,
    plus single-request latency. The flow's candidate, champion and baseline all go through here.
    """
    test = read_table(test_path)
    missing = {"text", "target"} - set(test.columns)
    if missing:
        raise ValueError(f"{test_path}: missing columns {sorted(missing)}; expected text, target")
    texts = test["text"].astype(str).tolist()
    outputs = in_steps(generate, texts, "evaluate")
    result = generation_metrics(outputs, test["target"].astype(str).tolist(), texts)
    result.metrics.update(
        measure_latency(lambda t: generate([t]), texts[: settings.latency_samples])
    )
    return result


def cached_generation_baseline(
    cache_dir: Path,
    model_settings: ModelSettings,
    dataset_version: str,
    test_path: Path,
    settings: EvaluateSettings,
) -> tuple[EvalResult, bool]:
    """The zero-shot baseline for generation: the untuned base causal LM, prompted exactly as the
    fine-tuned model is (same template or chat template, same input budget, same decoding).

    Cached per (model settings, dataset version, latency samples). (result, was_cached).
    """
    import hashlib

    recipe = model_settings.model_dump_json() + str(settings.latency_samples)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:10]
    name = name_key(Path(model_settings.base_model).name)
    path = Path(cache_dir) / f"baseline-gen-v2-{name}-{name_key(dataset_version)}-{digest}.json"
    if path.is_file():
        return EvalResult.model_validate_json(path.read_text()), True
    result = evaluate_generator(TextGenerator.untuned(model_settings).generate, test_path, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json())
    return result, False


# ---------------------------------------------- Prefect tasks (the report: tasks/report.py)


@task(name="evaluate-candidate")
def evaluate_candidate_task(
    model_dir: Path, test_path: Path, settings: EvaluateSettings, device: str = "auto"
) -> EvalResult:
    return evaluate_candidate(model_dir, test_path, settings, device)


@task(name="evaluate-generation")
def evaluate_generation_task(
    model_dir: Path, test_path: Path, settings: EvaluateSettings, device: str = "auto"
) -> EvalResult:
    """The fine-tuned generation model on the test split, prompted as in training."""
    generator = TextGenerator(model_dir, device)
    logger = stage_logger(__name__)

    def generate(texts: list[str]) -> list[str]:
        if len(texts) > 1:
            logger.info("generating %d answers", len(texts))
        return generator.generate(texts, settings.batch_size)

    return evaluate_generator(generate, test_path, settings)


@task(name="evaluate-baseline-generation")
def generation_baseline_task(
    cache_dir: Path,
    model_settings: ModelSettings,
    dataset_version: str,
    test_path: Path,
    settings: EvaluateSettings,
) -> EvalResult:
    result, cached = cached_generation_baseline(
        cache_dir, model_settings, dataset_version, test_path, settings
    )
    stage_logger(__name__).info(
        "zero-shot baseline %s: rouge1 %.4f", "(cached)" if cached else "", result.metrics["rouge1"]
    )
    return result


@task(name="evaluate-baseline")
def baseline_task(
    cache_dir: Path,
    base_model: str,
    dataset_version: str,
    train_path: Path,
    test_path: Path,
    labels: list[str],
    settings: EvaluateSettings,
    seed: int,
    device: str = "auto",
) -> EvalResult:
    result, _ = cached_baseline(
        cache_dir,
        base_model,
        dataset_version,
        train_path,
        test_path,
        labels,
        settings,
        seed,
        device,
    )
    return result
