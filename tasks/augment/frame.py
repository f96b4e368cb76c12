"""The stage: plan new rows per class, apply strategies, drop near-duplicates of val/test."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import task

from tasks.augment.paraphrase import Paraphraser
from tasks.augment.settings import AugmentResult, AugmentSettings
from tasks.augment.strategies import char_noise, entity_swap, split_token, word_edit
from tasks.augment.synonyms import embedding_synonyms, synonym_swap
from tasks.progress import Progress

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)


def class_targets(labels: pd.Series, settings: AugmentSettings) -> dict[str, int]:
    """New rows to make per label: `class_ratios` or `ratio`, raised to balance classes when
    asked, capped at `max_per_example` per source row."""
    counts = labels.value_counts()
    largest = int(counts.max()) if len(counts) else 0
    targets = {}
    for label, count in counts.items():
        n = round(count * settings.class_ratios.get(str(label), settings.ratio))
        if settings.balance_classes:
            n = max(n, round(largest * (1 + settings.ratio)) - int(count))
        targets[str(label)] = min(n, int(count) * settings.max_per_example)
    return targets


def _prefix(held: sparse.csr_matrix, ceiling: np.ndarray, threshold: float) -> sparse.csr_matrix:
    """Each held-out row cut to its rarest features, as many as it takes for the rest to be
    unable to reach `threshold`: a pair sharing none of them cannot be a near-duplicate.

    With features in ascending document frequency, the features from position k on add at
    most min(sum(w_f * ceiling_f), norm of the rest) to any dot product (`ceiling_f`: the
    largest weight of f in any candidate); a feature stays while that bound from it on is
    still >= threshold. This is the prefix filter of all-pairs similarity search (Bayardo et
    al., 2007): exact, and rare features have short posting lists.
    """
    held = held.tocsr()
    rows = np.repeat(np.arange(held.shape[0]), np.diff(held.indptr))
    df = np.bincount(held.indices, minlength=held.shape[1])
    order = np.lexsort((held.indices, df[held.indices], rows))
    weight = held.data[order]
    bound = weight * ceiling[held.indices[order]]
    first = held.indptr[rows]  # where each entry's row begins

    def suffix(values: np.ndarray) -> np.ndarray:  # sum of values from each position to row end
        total = np.bincount(rows, weights=values, minlength=held.shape[0])
        before = np.cumsum(values) - values
        return total[rows] - (before - before[first])

    reach = np.minimum(suffix(bound), np.sqrt(np.maximum(suffix(weight**2), 0.0)))
    keep = np.zeros(held.nnz, dtype=bool)
    keep[order] = reach >= threshold - 1e-6  # generous: float error keeps a feature, never drops
    prefix = held.copy()
    prefix.data = np.where(keep, prefix.data, 0.0)
    prefix.eliminate_zeros()
    return prefix


def near_duplicate_mask(
    candidates: list[str], held_out: list[str], threshold: float, stats: dict | None = None
) -> np.ndarray:
    """True where a candidate's TF-IDF cosine (words 1-2 grams) to any held-out text >= threshold.

    Exact, without the full candidates x held-out product (quadratic: 5.5M products for 3k x 4k
    rows of the intent generator): only pairs that share a prefix feature (`_prefix`) are
    scored, 38k of them there. `stats["pairs_compared"]` receives that count. A MinHash/LSH
    prefilter (split's) was measured and rejected: pairs above 0.9 cosine go down to a word
    Jaccard of 0.33 (a typo in a short text), far below what banded MinHash finds reliably.
    """
    if stats is not None:
        stats["pairs_compared"] = 0
    if not candidates or not held_out:
        return np.zeros(len(candidates), dtype=bool)
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tasks.validate import normalise_text

    held_texts = sorted({normalise_text(t) for t in held_out})
    cand_texts = [normalise_text(t) for t in candidates]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit(held_texts + cand_texts)
    a = vectorizer.transform(cand_texts).tocsr()
    b = vectorizer.transform(held_texts).tocsr()
    ceiling = a.max(axis=0).toarray().ravel()
    pairs = (a @ _prefix(b, ceiling, threshold).T).tocoo()
    if stats is not None:
        stats["pairs_compared"] = int(pairs.nnz)
    mask = np.zeros(len(candidates), dtype=bool)
    for start in range(0, pairs.nnz, 200_000):
        r, c = pairs.row[start : start + 200_000], pairs.col[start : start + 200_000]
        cosine = np.asarray(a[r].multiply(b[c]).sum(axis=1)).ravel()
        mask[r[cosine >= threshold - 1e-9]] = True
    return mask


def augment_frame(
    frame: pd.DataFrame,
    settings: AugmentSettings,
    held_out: list[str] | None = None,
    base_model: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`frame` (source='original') plus augmented rows, deterministic for a seed; and stats.

    `held_out`: val/test texts; new rows that are near-duplicates of one are dropped.
    `base_model`: whose embeddings give synonyms (the `synonym` strategy is skipped without one).
    """
    rng = random.Random(settings.seed)
    original = frame.assign(source="original")
    stats: dict = {"near_duplicates_removed": 0, "skipped_strategies": [], "unchanged": 0}
    if not settings.enabled or not settings.strategies:
        return original, stats
    strategies = list(dict.fromkeys(settings.strategies))
    if "paraphrase" in strategies and settings.paraphrase.model is None:
        log.info("augment: paraphrase skipped: no augment.paraphrase.model configured")
        strategies.remove("paraphrase")
        stats["skipped_strategies"].append("paraphrase")
    table: dict[str, list[str]] = {}
    if "synonym" in strategies:
        if base_model is None:
            log.info("augment: synonym skipped: no base model given for embedding neighbours")
            strategies.remove("synonym")
            stats["skipped_strategies"].append("synonym")
        else:
            words = {
                p[1].lower()
                for t in frame["text"]
                for tok in t.split(" ")
                if (p := split_token(tok))
            }
            table = embedding_synonyms(base_model, words, settings.synonym)
    if not strategies:
        return original, stats

    paraphraser = (
        Paraphraser(settings.paraphrase, settings.seed) if "paraphrase" in strategies else None
    )
    plans: list[tuple[int, str]] = []
    targets = class_targets(frame["label"], settings)
    for label, n_new in sorted(targets.items()):
        positions = [i for i, lbl in enumerate(frame["label"]) if str(lbl) == label]
        order: list[int] = []
        while positions and len(order) < n_new:
            batch = positions[:]
            rng.shuffle(batch)
            order += batch
        plans += [(i, rng.choice(strategies)) for i in order[:n_new]]

    rewrites: dict[int, str | None] = {}
    if paraphraser is not None:
        wanted = sorted({i for i, s in plans if s == "paraphrase"})
        texts = paraphraser([str(frame["text"].iloc[i]) for i in wanted])
        rewrites = dict(zip(wanted, texts, strict=True))

    def apply(strategy: str, text: str, i: int) -> str:
        if strategy == "char_noise":
            return char_noise(text, rng, settings.char_noise)
        if strategy == "word_edit":
            return word_edit(text, rng, settings.word_edit)
        if strategy == "synonym":
            return synonym_swap(text, rng, table, settings.synonym)
        if strategy == "entity_swap":
            return entity_swap(text, rng, settings.entity_swap)
        return rewrites.pop(i, None) or text

    rows = []
    seen = set(frame["text"])
    progress = Progress("augment", total=len(plans))
    for i, strategy in plans:
        progress.advance()
        row = frame.iloc[i]
        text = apply(strategy, row["text"], i)
        if text == row["text"] or text in seen:
            # strategies that find nothing to change (no amounts, no synonyms) hand over
            fallback = [s for s in strategies if s not in (strategy, "paraphrase")]
            rng.shuffle(fallback)
            for other in fallback:
                text = apply(other, row["text"], i)
                if text != row["text"] and text not in seen:
                    strategy = other
                    break
        if text == row["text"] or text in seen:
            stats["unchanged"] += 1
            continue
        seen.add(text)
        rows.append({**row.to_dict(), "text": text, "source": strategy, "source_row": int(i)})
    progress.done()
    added = pd.DataFrame(rows)
    if len(added) and held_out:
        dup = near_duplicate_mask(
            added["text"].tolist(), list(held_out), settings.near_duplicate_threshold
        )
        stats["near_duplicates_removed"] = int(dup.sum())
        added = added[~dup]
    if not len(added):
        return original, stats
    return pd.concat([original, added], ignore_index=True), stats


def sample_table(augmented: pd.DataFrame, per_strategy: int = 3) -> list[dict[str, str]]:
    """A few (strategy, original -> augmented) pairs per strategy, for people to read."""
    originals = augmented[augmented["source"] == "original"]
    added = augmented[augmented["source"] != "original"]
    rows = []
    for strategy, group in added.groupby("source", sort=True):
        for _, row in group.head(per_strategy).iterrows():
            rows.append(
                {
                    "strategy": str(strategy),
                    "label": str(row["label"]),
                    "original": str(originals["text"].iloc[int(row["source_row"])]),
                    "augmented": str(row["text"]),
                }
            )
    return rows


def augment_file(
    train_path: Path,
    settings: AugmentSettings,
    out_path: Path,
    held_out_paths: list[Path] | None = None,
    base_model: str | None = None,
) -> AugmentResult:
    """Read a training parquet, augment it, write `out_path` and a sample table beside it."""
    frame = pd.read_parquet(train_path)
    held_out = [t for p in held_out_paths or [] for t in pd.read_parquet(p)["text"].astype(str)]
    augmented, stats = augment_frame(frame, settings, held_out, base_model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    augmented.to_parquet(out_path, index=False)
    added = augmented[augmented["source"] != "original"]
    sample_path = out_path.with_name(out_path.stem + "_samples.json")
    pd.DataFrame(sample_table(augmented)).to_json(sample_path, orient="records", indent=1)
    return AugmentResult(
        train_path=out_path,
        rows_original=len(frame),
        rows_added=len(added),
        per_strategy={str(k): int(v) for k, v in added["source"].value_counts().items()}
        if len(added)
        else {},
        per_class={str(k): int(v) for k, v in added["label"].value_counts().items()}
        if len(added)
        else {},
        near_duplicates_removed=stats["near_duplicates_removed"],
        skipped_strategies=stats["skipped_strategies"],
        sample_path=sample_path,
    )


@task(name="augment")
def augment_task(
    train_path: Path,
    settings: AugmentSettings,
    out_dir: Path,
    held_out_paths: list[Path] | None = None,
    base_model: str | None = None,
) -> AugmentResult:
    result = augment_file(
        train_path, settings, out_dir / "train_augmented.parquet", held_out_paths, base_model
    )
    log.info(
        "augmented %d rows with %d new (%s); %d near-duplicates of val/test dropped",
        result.rows_original,
        result.rows_added,
        ", ".join(f"{k}={v}" for k, v in sorted(result.per_strategy.items())) or "none",
        result.near_duplicates_removed,
    )
    return result
