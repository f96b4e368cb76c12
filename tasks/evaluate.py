"""Evaluate candidate, baseline and champion on the same held-out test split.

- Candidate: the freshly trained folder, loaded as it will serve.
- Baseline: the untuned base model with a logistic-regression head fitted on `baseline_shots`
  examples per class of the training split (a few-shot fit on frozen mean-pooled embeddings).
  It shows what the base model gives without fine-tuning; its metrics are cached per
  (base model, dataset version, shots) so they are not recomputed every run.
- Champion: whatever a `predict(texts) -> labels` callable returns (the flow passes the model
  behind the `champion` alias).
Latency is measured one example at a time, as a request would be served.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


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


class EvalResult(BaseModel):
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    labels: list[str]


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> EvalResult:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
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
    )


def measure_latency(predict_one: Callable[[str], object], texts: list[str]) -> dict[str, float]:
    """p50 / p95 seconds for single-example requests (after one warm-up call)."""
    predict_one(texts[0])
    timings = []
    for text in texts:
        started = time.perf_counter()
        predict_one(text)
        timings.append(time.perf_counter() - started)
    timings.sort()
    p95_index = min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))
    return {"latency_p50_s": statistics.median(timings), "latency_p95_s": timings[p95_index]}


def evaluate_candidate(model_dir: Path, test_path: Path, settings: EvaluateSettings) -> EvalResult:
    from tasks.serving import TextClassifier

    test = pd.read_parquet(test_path)
    classifier = TextClassifier(model_dir)
    labels = classifier.labels
    preds = classifier.predict(test["text"].tolist(), settings.batch_size)
    result = classification_metrics(test["label"].tolist(), preds, labels)
    sample = test["text"].tolist()[: settings.latency_samples]
    result.metrics.update(measure_latency(lambda t: classifier.predict([t]), sample))
    return result


def embed(base_model: str, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised hidden states of the untuned base model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tasks.train import resolve_base_model

    source = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(source).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=256,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def few_shot_baseline(
    base_model: str,
    train_path: Path,
    test_path: Path,
    labels: list[str],
    shots: int,
    seed: int,
) -> EvalResult:
    """Logistic regression on frozen base-model embeddings of `shots` examples per class."""
    from sklearn.linear_model import LogisticRegression

    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    fit = pd.concat(
        [g.sample(min(shots, len(g)), random_state=seed) for _, g in train.groupby("label")]
    )
    head = LogisticRegression(max_iter=2000)
    head.fit(embed(base_model, fit["text"].tolist()), fit["label"])
    preds = head.predict(embed(base_model, test["text"].tolist())).tolist()
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
) -> tuple[EvalResult, bool]:
    """The baseline for (base model, dataset version, shots), computed once. (result, was_cached)."""
    key = f"{Path(base_model).name}-{dataset_version}-{settings.baseline_shots}-{seed}"
    path = cache_dir / f"baseline-{key}.json"
    if path.is_file():
        return EvalResult.model_validate_json(path.read_text()), True
    result = few_shot_baseline(
        base_model, train_path, test_path, labels, settings.baseline_shots, seed
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json())
    return result, False


def evaluate_predictions(
    predict: Callable[[list[str]], list[str]], test_path: Path, labels: list[str]
) -> EvalResult:
    test = pd.read_parquet(test_path)
    return classification_metrics(test["label"].tolist(), predict(test["text"].tolist()), labels)


def plot_confusion(result: EvalResult, out_path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(result.confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(result.labels)), result.labels, rotation=30, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def write_report(
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
    out_path: Path,
) -> Path:
    """A markdown table of headline metrics plus per-class precision / recall / F1."""
    rows = ["| metric | candidate | baseline | champion |", "|---|---|---|---|"]
    for key in (
        "f1_macro",
        "f1_micro",
        "f1_weighted",
        "accuracy",
        "latency_p50_s",
        "latency_p95_s",
    ):
        cells = [
            f"{r.metrics[key]:.4f}" if r is not None and key in r.metrics else "-"
            for r in (candidate, baseline, champion)
        ]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    rows += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for label, m in candidate.per_class.items():
        rows.append(
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {int(m['support'])} |"
        )
    out_path.write_text("# Evaluation on the test split\n\n" + "\n".join(rows) + "\n")
    return out_path


@task(name="evaluate-candidate")
def evaluate_candidate_task(
    model_dir: Path, test_path: Path, settings: EvaluateSettings
) -> EvalResult:
    return evaluate_candidate(model_dir, test_path, settings)


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
) -> EvalResult:
    result, _ = cached_baseline(
        cache_dir, base_model, dataset_version, train_path, test_path, labels, settings, seed
    )
    return result


def save_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path
