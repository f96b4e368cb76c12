"""The validation metric the best checkpoint is kept by: macro-F1, or mean ROUGE of answers.

ROUGE is the evaluate stage's scorer (`tasks.evaluate.compute_rouge`, per example), averaged, so
the training curve and the evaluation report measure the same thing.
"""

from __future__ import annotations

import numpy as np


def macro_f1(eval_pred) -> dict[str, float]:  # noqa: ANN001 - transformers' EvalPrediction
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(-1)
    return {
        "f1_macro": float(f1_score(labels, preds, average="macro")),
        "accuracy": float(accuracy_score(labels, preds)),
    }


def mean_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure of the validation answers."""
    # Here, not at the top: the evaluate stage imports Prefect, which a classification worker
    # would otherwise load for nothing (seconds of its start-up).
    from tasks.evaluate import compute_rouge

    scores = compute_rouge(predictions, references)
    n = max(len(predictions), 1)
    return {
        name: sum(scores[key]) / n
        for name, key in (("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL"))
    }
