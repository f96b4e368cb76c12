"""Augment the training split with label-preserving rewrites, each tagged with its strategy.

Strategies:
- `char_noise`: keyboard typos (swap, drop or double a letter) in a few longer words, the way
  real reviewers' notes arrive;
- `number_swap`: money amounts and plain numbers replaced with other realistic values.
Placeholders left by PII scrubbing (`<PERSON_1>`) are never touched. Only the training split is
augmented; validation and test stay as they are. The `source` column says where a row came from
(`original` or the strategy name).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["char_noise", "number_swap"]
PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
MONEY = re.compile(r"\$\d{1,3}(?:,\d{3})+|\$\d+")


class AugmentSettings(BaseModel):
    """How many extra training rows to make, and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Augment the training split.")
    ratio: float = Field(
        default=0.2, ge=0, le=5, description="Augmented rows per original training row."
    )
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["char_noise", "number_swap"], description="Strategies to use."
    )
    typo_rate: float = Field(default=0.08, gt=0, le=0.5, description="Share of words given a typo.")
    seed: int = Field(default=13, description="Seed: the same seed gives the same rows.")


class AugmentResult(BaseModel):
    train_path: Path
    rows_original: int
    rows_added: int
    per_strategy: dict[str, int]


def char_noise(text: str, rng: random.Random, rate: float) -> str:
    """Typos in about `rate` of the words longer than three letters; placeholders kept."""
    words = text.split(" ")
    candidates = [
        i for i, w in enumerate(words) if len(w) > 3 and w.isalpha() and not PLACEHOLDER.search(w)
    ]
    if not candidates:
        return text
    for i in rng.sample(candidates, max(1, round(len(candidates) * rate))):
        w = words[i]
        j = rng.randrange(1, len(w) - 1)
        kind = rng.choice(["swap", "drop", "double"])
        if kind == "swap":
            w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif kind == "drop":
            w = w[:j] + w[j + 1 :]
        else:
            w = w[:j] + w[j] + w[j:]
        words[i] = w
    return " ".join(words)


def number_swap(text: str, rng: random.Random) -> str:
    """Money amounts replaced with other amounts of similar size."""

    def swap(match: re.Match) -> str:
        value = int(match.group(0).replace("$", "").replace(",", ""))
        new = max(100, round(value * rng.uniform(0.5, 1.5), -2))
        return f"${new:,}"

    return MONEY.sub(swap, text)


def augment_frame(frame: pd.DataFrame, settings: AugmentSettings) -> pd.DataFrame:
    """`frame` (source='original') plus the augmented rows, deterministic for a seed."""
    rng = random.Random(settings.seed)
    original = frame.assign(source="original")
    if not settings.enabled or settings.ratio == 0 or not settings.strategies:
        return original
    n_new = round(len(frame) * settings.ratio)
    picks = [rng.randrange(len(frame)) for _ in range(n_new)]
    rows = []
    for i in picks:
        row = frame.iloc[i]
        strategy = rng.choice(settings.strategies)
        if strategy == "char_noise":
            text = char_noise(row["text"], rng, settings.typo_rate)
        else:
            text = number_swap(row["text"], rng)
        if text != row["text"]:
            rows.append({**row.to_dict(), "text": text, "source": strategy})
    return pd.concat([original, pd.DataFrame(rows)], ignore_index=True)


@task(name="augment")
def augment_task(train_path: Path, settings: AugmentSettings, out_dir: Path) -> AugmentResult:
    frame = pd.read_parquet(train_path)
    augmented = augment_frame(frame, settings)
    out = out_dir / "train_augmented.parquet"
    augmented.to_parquet(out, index=False)
    added = augmented[augmented["source"] != "original"]
    return AugmentResult(
        train_path=out,
        rows_original=len(frame),
        rows_added=len(added),
        per_strategy={str(k): int(v) for k, v in added["source"].value_counts().items()},
    )
