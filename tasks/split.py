"""Version the accepted rows and split them into train / validation / test.

`split.method: hash` (the default) puts each row in a split by a seeded hash of its normalised
text, so a row keeps its split when rows are added (feedback, re-annotation): a retrain never
tests on rows the champion trained on, and the champion comparison stays honest. A class left
without a val or test row takes its lowest-hash training row. `stratified` is scikit-learn's
exact stratified split, re-drawn whenever the data change.

The dataset version is a content hash of the canonicalised rows (text, label, in line order) and
of the settings that shape the splits, so the same data and settings always give the same
version and the same splits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split

from tasks.progress import Progress
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
    method: Literal["hash", "stratified"] = Field(
        default="hash",
        description="hash: a row's split follows from its text, stable when rows are added; "
        "stratified: exact class proportions, re-drawn when the data change.",
    )
    seed: int = Field(default=13, description="Seed of the split.")
    near_duplicate_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Word-trigram Jaccard (MinHash estimate) above which a val/test row is "
        "reported as a near-duplicate of a train row.",
    )


class SplitResult(BaseModel):
    dataset_version: str
    train_path: Path
    val_path: Path
    test_path: Path
    sizes: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    leakage_removed: int = 0  # train rows dropped: same normalised text as a val/test row
    near_duplicates: dict[str, int] = {}  # val/test rows with a near-duplicate in train
    near_duplicate_lines: dict[str, list[list[int]]] = {}  # a few (held-out line, train line)


def dataset_version(frames: list[pd.DataFrame], settings: BaseModel) -> str:
    """sha256 over canonical (text, label or target) rows and the split settings; 16 hex digits."""
    digest = hashlib.sha256()
    for frame in frames:
        for text, label in zip(frame["text"], frame[_y(frame)], strict=True):
            digest.update(json.dumps([text, label], ensure_ascii=False).encode())
            digest.update(b"\n")
        digest.update(b"--\n")
    digest.update(settings.model_dump_json().encode())
    return digest.hexdigest()[:16]


def _y(frame: pd.DataFrame) -> str:
    """`label` for classification; generation rows carry a `target` text instead."""
    return "label" if "label" in frame.columns else "target"


def _strata(frame: pd.DataFrame) -> pd.Series | None:
    """Stratify on the label; generation targets are free text, so their split is plain random."""
    return frame["label"] if "label" in frame.columns else None


def stable_unit(texts: pd.Series, seed: int) -> np.ndarray:
    """A number in [0, 1) per text from a seeded hash of its normalised form."""
    return np.array(
        [
            int.from_bytes(hashlib.sha256(f"{seed}:{normalise_text(t)}".encode()).digest()[:8])
            / 2**64
            for t in texts
        ]
    )


def hash_split(
    frame: pd.DataFrame, settings: SplitSettings, test_frame: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split by `stable_unit`: test below test_fraction, then val, the rest train."""
    u = stable_unit(frame["text"], settings.seed)
    test_cut = 0.0 if test_frame is not None else settings.test_fraction
    part = np.where(
        u < test_cut, "test", np.where(u < test_cut + settings.val_fraction, "val", "train")
    )
    if "label" in frame.columns:  # every class in every held-out split, if it has the rows
        for label in frame["label"].unique():
            for name in ("val",) if test_frame is not None else ("test", "val"):
                members = np.flatnonzero(frame["label"].to_numpy() == label)
                if (part[members] == name).any():
                    continue
                spare = members[part[members] == "train"]
                if len(spare) > 1:
                    part[spare[np.argmin(u[spare])]] = name
    test = test_frame if test_frame is not None else frame[part == "test"]
    return frame[part == "train"], frame[part == "val"], test


def split_frame(
    frame: pd.DataFrame, settings: SplitSettings, test_frame: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """(train, val, test, rows removed for leakage). An explicit test frame wins over a split."""
    leakage = 0
    if test_frame is not None:
        test_texts = set(test_frame["text"].map(normalise_text))
        keep = ~frame["text"].map(normalise_text).isin(test_texts)
        leakage = int((~keep).sum())
        frame = frame[keep]
    if settings.method == "hash":
        train, val, test = hash_split(frame, settings, test_frame)
        return (
            train.reset_index(drop=True),
            val.reset_index(drop=True),
            test.reset_index(drop=True),
            leakage,
        )
    if test_frame is None:
        rest, test = train_test_split(
            frame,
            test_size=settings.test_fraction,
            stratify=_strata(frame),
            random_state=settings.seed,
        )
    else:
        test, rest = test_frame, frame
    val_share = settings.val_fraction / (
        1 - (0 if test_frame is not None else settings.test_fraction)
    )
    train, val = train_test_split(
        rest, test_size=val_share, stratify=_strata(rest), random_state=settings.seed
    )
    return (
        train.reset_index(drop=True),
        val.reset_index(drop=True),
        test.reset_index(drop=True),
        leakage,
    )


def remove_exact_leakage(
    train: pd.DataFrame, held_out: list[pd.DataFrame]
) -> tuple[pd.DataFrame, int]:
    """Drop train rows whose normalised text also occurs in a held-out split."""
    seen: set[str] = set()
    for part in held_out:
        seen.update(part["text"].map(normalise_text))
    keep = ~train["text"].map(normalise_text).isin(seen)
    return train[keep].reset_index(drop=True), int((~keep).sum())


_PRIME = (1 << 61) - 1


def minhash_signatures(texts: list[str], num_perm: int = 64, seed: int = 1) -> np.ndarray:
    """MinHash of word-trigram shingles of each normalised text: (len(texts), num_perm)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    progress = Progress("split", total=len(texts))
    for i, text in enumerate(texts):
        progress.advance()
        words = normalise_text(text).split()
        grams = {" ".join(words[j : j + 3]) for j in range(max(1, len(words) - 2))}
        hashed = np.array(
            [
                int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest()) >> 4
                for g in grams
            ],
            dtype=np.uint64,
        )
        # (a*x + b) mod p on uint64 wraps; good enough as a family of hash permutations
        out[i] = ((hashed[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)
    progress.done()
    return out


class MinHashIndex:
    """The training rows' MinHash signatures, sorted by each LSH band's key, built once and
    queried by each held-out split (val, then test).

    Sorted arrays and `searchsorted`, not a dict of buckets: on templated data a bucket holds
    many rows, and the per-row Python loops over a 600k-key dict grew faster than the rows.
    """

    bucket_cap = 200  # candidates taken from one band's bucket (its lowest training indices)

    def __init__(self, texts: list[str], bands: int = 16) -> None:
        self.signatures = minhash_signatures(texts)
        self.bands = bands
        self.rows = self.signatures.shape[1] // bands
        self._order: list[np.ndarray] = []  # per band: training rows by key, stable
        self._keys: list[np.ndarray] = []  # per band: the keys in that order
        for band in range(bands):
            keys = self._band_keys(self.signatures, band)
            order = np.argsort(keys, kind="stable")  # a bucket's rows in ascending order
            self._order.append(order)
            self._keys.append(keys[order])

    def _band_keys(self, signatures: np.ndarray, band: int) -> np.ndarray:
        part = np.ascontiguousarray(signatures[:, band * self.rows : (band + 1) * self.rows])
        return part.view(np.dtype((np.void, part.dtype.itemsize * self.rows))).ravel()

    def best_matches(self, texts: list[str], threshold: float) -> list[tuple[int, int]]:
        """(index in `texts`, training index) of each text's best match with an estimated
        Jaccard >= threshold (ties: the lowest training index). The first `bucket_cap` rows of
        a bucket are its candidates, so a query costs at most bands x bucket_cap lookups
        however large (and however templated) the data.

        Only pairs that share enough bands are scored, which loses none: the estimate is the
        share of equal signature values, each unequal value breaks at most one band, so a pair
        at or above the threshold shares at least `bands - (num_perm - equal_needed)` bands
        (4 of 16 at 0.8). On templated data most candidates share one band; scoring them all
        grew faster than the rows (80 candidates a query at 50k rows, 27 at 10k)."""
        n_train = len(self.signatures)
        if not n_train or not texts:
            return []
        sig_held = minhash_signatures(texts)
        codes = []
        for band in range(self.bands):
            keys = self._band_keys(sig_held, band)
            lo = np.searchsorted(self._keys[band], keys, side="left")
            hi = np.minimum(
                np.searchsorted(self._keys[band], keys, side="right"), lo + self.bucket_cap
            )
            counts = hi - lo
            owner = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
            within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            member = self._order[band][np.repeat(lo, counts) + within]
            codes.append(owner * n_train + member)
        # (held, train) pairs, sorted by held row, and how many bands each shares
        code, shared = np.unique(np.concatenate(codes), return_counts=True)
        num_perm = self.signatures.shape[1]
        equal_needed = next(e for e in range(num_perm + 1) if e / num_perm >= threshold)
        code = code[shared >= self.bands - (num_perm - equal_needed)]
        if not len(code):
            return []
        held, train = code // n_train, code % n_train
        agreement = np.empty(len(code))
        for start in range(0, len(code), 50_000):
            part = slice(start, start + 50_000)
            agreement[part] = (self.signatures[train[part]] == sig_held[held[part]]).mean(axis=1)
        order = np.lexsort((train, -agreement, held))  # per held row: best first, then lowest
        first = order[np.r_[True, held[order][1:] != held[order][:-1]]]
        return [(int(held[k]), int(train[k])) for k in first if agreement[k] >= threshold]


def near_duplicates(
    train: pd.DataFrame,
    held_out: pd.DataFrame,
    threshold: float,
    bands: int = 16,
    index: MinHashIndex | None = None,
) -> list[tuple[int, int]]:
    """(held-out index, train index) pairs whose estimated trigram Jaccard >= threshold.

    Locality-sensitive hashing on MinHash bands finds candidates; the signature agreement
    estimates the Jaccard. One pair per held-out row (its best match) is returned. `index`:
    `train`'s `MinHashIndex`, when the caller queries it more than once.
    """
    if train.empty or held_out.empty:
        return []
    if index is None:
        index = MinHashIndex(list(train["text"]), bands)
    return index.best_matches(list(held_out["text"]), threshold)


def write_splits(
    accepted_path: Path, settings: SplitSettings, out_dir: Path, test_path: Path | None = None
) -> SplitResult:
    frame = pd.read_parquet(accepted_path)
    test_frame = pd.read_parquet(test_path) if test_path else None
    train, val, test, leakage = split_frame(frame, settings, test_frame)
    train, removed = remove_exact_leakage(train, [val, test])
    leakage += removed
    near: dict[str, int] = {}
    near_lines: dict[str, list[list[int]]] = {}
    index = MinHashIndex(list(train["text"])) if len(train) else None
    for name, part in (("val", val), ("test", test)):
        pairs = near_duplicates(train, part, settings.near_duplicate_threshold, index=index)
        near[name] = len(pairs)
        if "_line" in part and "_line" in train:
            near_lines[name] = [
                [int(part["_line"].iloc[i]), int(train["_line"].iloc[j])] for i, j in pairs[:20]
            ]
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
            if "label" in part.columns
        },
        leakage_removed=leakage,
        near_duplicates=near,
        near_duplicate_lines=near_lines,
    )


@task(name="split")
def split_task(
    accepted_path: Path, settings: SplitSettings, out_dir: Path, test_path: Path | None = None
) -> SplitResult:
    return write_splits(accepted_path, settings, out_dir, test_path)
