"""The augment stage's near-duplicate filter: the same mask as the full TF-IDF product, from a
small fraction of its pair comparisons."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tasks.augment import AugmentSettings, augment_frame, near_duplicate_mask
from tasks.validate import normalise_text
from tunegate.demo_data.intents import generate_intents

pytestmark = pytest.mark.unit


def _full_product_mask(candidates: list[str], held_out: list[str], threshold: float) -> np.ndarray:
    """The reference: every candidate against every held-out text."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    held = sorted({normalise_text(t) for t in held_out})
    cand = [normalise_text(t) for t in candidates]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(held + cand)
    scores = vectorizer.transform(cand) @ vectorizer.transform(held).T
    return scores.max(axis=1).toarray().ravel() >= threshold - 1e-9


def _intent_rows(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(augmented candidates, held-out texts) from `n` rows of the 40-intent generator."""
    import pandas as pd

    frame = pd.DataFrame(list(generate_intents(n=n, seed=seed)))
    frame = frame.rename(columns={"utterance": "text", "intent": "label"})
    frame = frame[frame["text"].astype(str).str.len() > 0].reset_index(drop=True)
    order = random.Random(seed).sample(range(len(frame)), len(frame))
    cut = len(frame) // 5
    held = frame.iloc[order[:cut]]["text"].astype(str).tolist()
    train = frame.iloc[order[cut:]].reset_index(drop=True)
    out, _ = augment_frame(train, AugmentSettings(ratio=0.5))
    return out[out["source"] != "original"]["text"].tolist(), held


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9, 1.0])
def test_mask_equals_the_full_product(threshold):
    candidates, held = _intent_rows(1500)
    # texts with no feature at all, exact copies and copies with a typo
    held += ["", "!!", "a"]
    candidates += ["", held[0], held[1].upper(), held[2] + "x"]
    got = near_duplicate_mask(candidates, held, threshold)
    want = _full_product_mask(candidates, held, threshold)
    assert want.any() and not want.all()
    assert got.tolist() == want.tolist()


def test_pairs_compared_are_a_small_fraction_of_the_full_product():
    # Counted, not timed. On the generator the count still grows faster than the rows (1k->4k
    # rows: 182 -> 3,474), as the true near-duplicate pairs do (5 -> 99 candidates flagged):
    # a finite template set repeats itself more the more rows it makes.
    counts = {}
    for n in (1000, 4000):
        candidates, held = _intent_rows(n, seed=1)
        stats: dict = {}
        near_duplicate_mask(candidates, held, 0.9, stats)
        counts[n] = (stats["pairs_compared"], len(candidates) * len(set(held)))
    (small, full_small), (large, full_large) = counts[1000], counts[4000]
    # the full product is 16x larger at 4x the rows; the pairs scored are a small fraction
    assert full_large / full_small > 12
    assert large < full_large / 100
    assert small < full_small / 100


def test_no_held_out_or_no_candidates():
    stats: dict = {}
    assert near_duplicate_mask(["a text"], [], 0.9, stats).tolist() == [False]
    assert stats["pairs_compared"] == 0
    assert near_duplicate_mask([], ["a text"], 0.9).tolist() == []
