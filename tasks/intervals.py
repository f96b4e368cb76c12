"""Paired bootstrap intervals: how sure is "the candidate beats the baseline / champion"?

Both systems are scored on the same test examples, so the examples are resampled once and the
difference of the metric is taken on each resample; the gate reads the interval's bounds.
"""

from __future__ import annotations

import numpy as np

from tasks.evaluate import EvalResult
from tasks.gate import Interval


def _macro_f1_rows(y: np.ndarray, p: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each resample (rows of `idx`), as sklearn computes it with zero_division=0."""
    yy, pp = y[idx], p[idx]
    f1 = np.zeros(idx.shape[0])
    for c in range(n_classes):
        tp = ((yy == c) & (pp == c)).sum(1)
        fp = ((yy != c) & (pp == c)).sum(1)
        fn = ((yy == c) & (pp != c)).sum(1)
        denom = 2 * tp + fp + fn
        f1 += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1 / n_classes


def paired_bootstrap(
    candidate: EvalResult,
    other: EvalResult,
    metric: str,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> Interval:
    """Interval for metric(candidate) - metric(other), resampling the same examples for both.

    `metric` is `f1_macro` or `accuracy` (from per-example predictions) or any key of
    `per_example` (ROUGE, exact match: the mean of per-example scores).
    """
    n = len(candidate.predictions) or len(next(iter(candidate.per_example.values()), []))
    if metric in ("f1_macro", "accuracy"):
        if candidate.references != other.references or len(other.predictions) != n:
            raise ValueError("paired bootstrap needs both systems scored on the same examples")
        index = {label: i for i, label in enumerate(candidate.labels)}
        y = np.array([index.get(v, -1) for v in candidate.references])
        a = np.array([index.get(v, -2) for v in candidate.predictions])
        b = np.array([index.get(v, -2) for v in other.predictions])
        k = len(candidate.labels)

        def stat(pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
            if metric == "accuracy":
                return (pred[idx] == y[idx]).mean(1)
            return _macro_f1_rows(y, pred, idx, k)

    else:
        sa = np.asarray(candidate.per_example[metric], dtype=float)
        sb = np.asarray(other.per_example[metric], dtype=float)
        if len(sa) != len(sb) or candidate.references != other.references:
            raise ValueError("paired bootstrap needs both systems scored on the same examples")
        a, b = sa, sb

        def stat(pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
            return pred[idx].mean(1)

    full = np.arange(n)[None, :]
    delta = float(stat(a, full)[0] - stat(b, full)[0])
    low = high = delta
    if resamples > 0 and n > 0:
        rng = np.random.default_rng(seed)
        deltas = []
        for start in range(0, resamples, 500):  # chunks bound memory for large test sets
            idx = rng.integers(0, n, size=(min(500, resamples - start), n))
            deltas.append(stat(a, idx) - stat(b, idx))
        diffs = np.concatenate(deltas)
        tail = (1 - confidence) / 2
        low, high = (float(x) for x in np.quantile(diffs, [tail, 1 - tail]))
    return Interval(
        metric=metric,
        delta=delta,
        low=low,
        high=high,
        confidence=confidence,
        resamples=resamples,
        n=n,
    )
