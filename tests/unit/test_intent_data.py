"""The public-style intent set used to check the training defaults."""

from collections import Counter

import pytest

from tunegate.demo_data.intents import INTENTS, generate_intents

pytestmark = pytest.mark.unit


def test_intent_set_is_many_class_balanced_noisy_and_seeded():
    rows = generate_intents(n=4000, seed=1)
    assert len(rows) == 4000 and len({r["utterance"] for r in rows}) == 4000
    counts = Counter(r["intent"] for r in rows)
    assert len(counts) == len(INTENTS) == 40
    assert max(counts.values()) - min(counts.values()) < 40  # balanced up to the 2% noise
    assert generate_intents(n=200, seed=1) == rows[:200]
    assert generate_intents(n=200, seed=2) != rows[:200]
    clean = generate_intents(n=4000, seed=1, noise=0.0)
    wrong = sum(a["intent"] != b["intent"] for a, b in zip(rows, clean, strict=True))
    assert 0 < wrong < 4000 * 0.04
