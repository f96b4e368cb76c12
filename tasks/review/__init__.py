"""The review queue in Label Studio: what people should check, and their answers coming back.

- `settings`: `ReviewSettings` (the `review` section).
- `selection`: `ReviewItem`; production (low confidence, flagged, corrected, a random sample)
  and test-split (disagreements, worst errors) selection; `merge_items` (dedupe, priority, cap).
- `labelling`: the labelling interface built from the config (XML-escaped labels), the
  pre-annotation of a model answer, the project title.
- `client`: `ReviewQueue`, the Label Studio client wrapper (project, webhook, task import).
- `corrections`: Label Studio's webhook payload -> an `Answer` -> a feedback row.

The flow around them is `flows/review.py`; the webhook route is `deployments/webhook.py`.
"""

from __future__ import annotations

from tasks.review.corrections import Answer, PayloadRefused, parse_annotation
from tasks.review.labelling import labelling_config, pre_annotation, project_title
from tasks.review.selection import ReviewItem, merge_items, select_production, select_test
from tasks.review.settings import ReviewSettings

__all__ = [
    "Answer",
    "PayloadRefused",
    "ReviewItem",
    "ReviewSettings",
    "labelling_config",
    "merge_items",
    "parse_annotation",
    "pre_annotation",
    "project_title",
    "select_production",
    "select_test",
]
