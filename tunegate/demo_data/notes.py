"""Templated support notes and their one-line summaries: tiny generation data for tests.

The summaries are extractions from a fixed sentence pattern, so a small model can learn them and
ROUGE shows it; built offline in seconds for smoke runs, tests and benchmarks of the generation
path.
"""

from __future__ import annotations

import random

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
VERBS = ["bought", "returned", "ordered", "cancelled"]
COUNTS = ["one", "two", "three", "four", "five"]
COLOURS = ["red", "blue", "green", "black", "white"]
ITEMS = ["chairs", "tables", "lamps", "desks", "shelves", "beds"]
CITIES = ["oslo", "lima", "cairo", "perth", "quito", "dakar"]
DAYS = ["monday", "tuesday", "friday", "sunday"]
PAYMENTS = ["card", "cash", "voucher"]


def summarization_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`text` (a support note) and `target` (its one-line summary)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, verb, count = rng.choice(NAMES), rng.choice(VERBS), rng.choice(COUNTS)
        colour, item, city = rng.choice(COLOURS), rng.choice(ITEMS), rng.choice(CITIES)
        day, pay = rng.choice(DAYS), rng.choice(PAYMENTS)
        text = (
            f"note {i % 50} : on {day} the customer {name} {verb} {count} {colour} {item} "
            f"at the {city} store and paid by {pay} ."
        )
        rows.append({"text": text, "target": f"{name} {verb} {count} {colour} {item}"})
    return rows
