"""Which examples people should check: plain functions over the prediction log, the feedback
stores and a retrain's test-split predictions, each item carrying why it was chosen.

Production: predictions scored below `review.min_confidence` (classification), the ones flagged
or corrected through `/v1/feedback`, and a seeded random sample of the rest. Test split (at the
end of a retrain): where candidate and champion disagree, and the candidate's worst errors.
Every text here is already scrubbed (the prediction log and the test split hold no raw PII).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

from pydantic import BaseModel, Field

from tasks.predictions import PredictionRecord
from tasks.review.settings import ReviewSettings

# Reasons, in the order the `review.max_tasks` cap keeps them.
CORRECTED = "corrected"
FLAGGED = "flagged"
LOW_CONFIDENCE = "low_confidence"
DISAGREEMENT = "disagreement"
WORST_ERROR = "worst_error"
RANDOM = "random_sample"
PRIORITY = (CORRECTED, FLAGGED, LOW_CONFIDENCE, DISAGREEMENT, WORST_ERROR, RANDOM)


class ReviewItem(BaseModel):
    """One example for the queue: a Label Studio task with the model's answer pre-filled."""

    item_id: str = Field(description="Stable id: `pred:<prediction id>` or `test:<hash>`.")
    text: str = Field(description="The scrubbed input.")
    output: str = Field(description="The model's answer (label or generated text).")
    score: float | None = None
    model_version: str
    reasons: list[str]
    prediction_id: str | None = None

    def rank(self) -> int:
        return min(PRIORITY.index(r) for r in self.reasons)


def _prediction_item(record: PredictionRecord, reason: str) -> ReviewItem | None:
    output = record.label if record.output is None else record.output
    if output is None or not record.text.strip():
        return None
    return ReviewItem(
        item_id=f"pred:{record.prediction_id}",
        text=record.text,
        output=output,
        score=record.score,
        model_version=record.model_version,
        reasons=[reason],
        prediction_id=record.prediction_id,
    )


def select_production(
    records: Iterable[PredictionRecord],
    corrections: list[dict],
    flags: list[dict],
    text_column: str,
    settings: ReviewSettings,
    model_name: str,
    seed_key: str = "",
) -> list[ReviewItem]:
    """Low-confidence answers, corrected and flagged predictions, and a random sample.

    `corrections` / `flags` are feedback rows (the stores' batches); only rows about a served
    prediction (with `prediction_id` and `predicted`) count, and never rows that came back from
    the review queue itself (`review_task`).
    """
    items: list[ReviewItem] = []
    ordinary: list[PredictionRecord] = []
    for record in records:
        if record.model_name != model_name or record.status >= 400:
            continue
        low = record.score is not None and record.score < settings.min_confidence
        if low:
            item = _prediction_item(record, LOW_CONFIDENCE)
            if item is not None:
                items.append(item)
        elif record.sampled:
            ordinary.append(record)
    for reason, rows in ((CORRECTED, corrections), (FLAGGED, flags)):
        for row in rows:
            pid, predicted, text = (
                row.get("prediction_id"),
                row.get("predicted"),
                row.get(text_column),
            )
            if "review_task" in row or not pid or not isinstance(predicted, str):
                continue
            if not isinstance(text, str) or not text.strip():
                continue
            items.append(
                ReviewItem(
                    item_id=f"pred:{pid}",
                    text=text,
                    output=predicted,
                    model_version=str(row.get("model_version") or "?"),
                    reasons=[reason],
                    prediction_id=str(pid),
                )
            )
    chosen = {i.item_id for i in items}
    pool = [r for r in ordinary if f"pred:{r.prediction_id}" not in chosen]
    rng = random.Random(f"{settings.seed}:{seed_key}")
    for record in rng.sample(pool, min(settings.random_sample, len(pool))):
        item = _prediction_item(record, RANDOM)
        if item is not None:
            items.append(item)
    return items


def select_test(
    texts: list[str],
    references: list[str],
    candidate: list[str],
    champion: list[str] | None,
    candidate_scores: list[float] | None,
    settings: ReviewSettings,
    candidate_version: str,
) -> list[ReviewItem]:
    """Disagreements with the champion and the candidate's worst errors on the test split.

    `candidate_scores` (per example, higher is better: ROUGE-L for generation) order the errors
    when given; for classification an error is an exact mismatch, those where the champion was
    right first.
    """
    n = len(texts)
    if not (len(references) == len(candidate) == n) or (champion and len(champion) != n):
        raise ValueError("texts, references and predictions must be of one length")
    items: list[ReviewItem] = []

    def item(i: int, reason: str) -> ReviewItem:
        digest = hashlib.sha256(texts[i].encode()).hexdigest()[:24]
        return ReviewItem(
            item_id=f"test:{digest}",
            text=texts[i],
            output=candidate[i],
            model_version=candidate_version,
            reasons=[reason],
        )

    if settings.disagreement and champion:
        items += [item(i, DISAGREEMENT) for i in range(n) if candidate[i] != champion[i]]
    if settings.worst_errors:
        if candidate_scores is not None:
            order = sorted(range(n), key=lambda i: candidate_scores[i])
            wrong = [i for i in order if candidate[i] != references[i]]
        else:
            wrong = [i for i in range(n) if candidate[i] != references[i]]
            if champion:  # regressions first: the champion got these right
                wrong.sort(key=lambda i: champion[i] != references[i])
        items += [item(i, WORST_ERROR) for i in wrong[: settings.worst_errors]]
    return items


def merge_items(items: Iterable[ReviewItem], max_tasks: int, skip: set[str]) -> list[ReviewItem]:
    """One item per id (its reasons joined), those in `skip` (already queued) left out, then the
    `max_tasks` of highest priority (corrected, flagged, low confidence, ..., random last),
    lowest score first within a reason."""
    merged: dict[str, ReviewItem] = {}
    for item in items:
        if item.item_id in skip:
            continue
        if item.item_id in merged:
            known = merged[item.item_id]
            known.reasons = sorted(set(known.reasons) | set(item.reasons), key=PRIORITY.index)
        else:
            merged[item.item_id] = item.model_copy(deep=True)
    ordered = sorted(
        merged.values(),
        key=lambda i: (i.rank(), 1.0 if i.score is None else i.score, i.item_id),
    )
    return ordered[:max_tasks]
