"""Version the accepted rows and split them into train / validation / test, stratified and seeded.

The dataset version is a content hash of the canonicalised rows (text, label, in line order) and
of the settings that shape the splits, so the same data and settings always give the same
version and the same splits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split

from tasks.validate import normalise_text


class SplitSettings(BaseModel):
    """Held-out shares. The test split is only ever used by the gate."""

    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="Share for validation.")
    test_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=0.5,
        description="Share for the test split (ignored with data.test_path).",
    )
    seed: int = Field(default=13, description="Seed of the stratified split.")


class SplitResult(BaseModel):
    dataset_version: str
    train_path: Path
    val_path: Path
    test_path: Path
    sizes: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    leakage_removed: int = 0


def dataset_version(frames: list[pd.DataFrame], settings: BaseModel) -> str:
    """sha256 over canonical (text, label) rows and the split settings; first 16 hex digits."""
    digest = hashlib.sha256()
    for frame in frames:
        for text, label in zip(frame["text"], frame["label"], strict=True):
            digest.update(json.dumps([text, label], ensure_ascii=False).encode())
            digest.update(b"\n")
        digest.update(b"--\n")
    digest.update(settings.model_dump_json().encode())
    return digest.hexdigest()[:16]


def split_frame(
    frame: pd.DataFrame, settings: SplitSettings, test_frame: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """(train, val, test, rows removed for leakage). An explicit test frame wins over a split."""
    leakage = 0
    if test_frame is None:
        rest, test = train_test_split(
            frame,
            test_size=settings.test_fraction,
            stratify=frame["label"],
            random_state=settings.seed,
        )
    else:
        test = test_frame
        test_texts = set(test["text"].map(normalise_text))
        keep = ~frame["text"].map(normalise_text).isin(test_texts)
        leakage = int((~keep).sum())
        rest = frame[keep]
    val_share = settings.val_fraction / (
        1 - (0 if test_frame is not None else settings.test_fraction)
    )
    train, val = train_test_split(
        rest, test_size=val_share, stratify=rest["label"], random_state=settings.seed
    )
    return (
        train.reset_index(drop=True),
        val.reset_index(drop=True),
        test.reset_index(drop=True),
        leakage,
    )


def write_splits(
    accepted_path: Path, settings: SplitSettings, out_dir: Path, test_path: Path | None = None
) -> SplitResult:
    frame = pd.read_parquet(accepted_path)
    test_frame = pd.read_parquet(test_path) if test_path else None
    train, val, test, leakage = split_frame(frame, settings, test_frame)
    version = dataset_version([frame] if test_frame is None else [frame, test_frame], settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        paths[name] = out_dir / f"{name}.parquet"
        part.to_parquet(paths[name], index=False)
    return SplitResult(
        dataset_version=version,
        train_path=paths["train"],
        val_path=paths["val"],
        test_path=paths["test"],
        sizes={"train": len(train), "val": len(val), "test": len(test)},
        class_counts={
            name: {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()}
            for name, part in (("train", train), ("val", val), ("test", test))
        },
        leakage_removed=leakage,
    )


@task(name="split")
def split_task(
    accepted_path: Path, settings: SplitSettings, out_dir: Path, test_path: Path | None = None
) -> SplitResult:
    return write_splits(accepted_path, settings, out_dir, test_path)
