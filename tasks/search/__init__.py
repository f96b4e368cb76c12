"""Hyperparameter search: the train stage as an Optuna study (optional, `search.enabled`).

- `settings`: `SearchSettings` (the `search` section), `ParamSpec`, the default space per
  `train.method`.
- `study`: where the study lives (`storage_url`), its resumable name (`study_name`), sampling a
  trial's settings (`suggest`, `apply_params`), whether a work pool reaches the storage
  (`check_pool_storage`), the best trial, `SearchResult`, the plots.

The trials themselves run in `flows/search.py` (a Prefect task and a nested MLflow run each);
inside a trial the worker reports to the study through `tasks.train.pruning`.
"""

from __future__ import annotations

from tasks.search.settings import DEFAULT_SPACES, ParamSpec, SearchSettings
from tasks.search.study import (
    RESULT_ATTR,
    SearchResult,
    apply_params,
    best_trial,
    check_pool_storage,
    finished,
    open_study,
    plot_search,
    recover_interrupted,
    redact,
    storage_url,
    study_name,
    suggest,
)

__all__ = [
    "DEFAULT_SPACES",
    "RESULT_ATTR",
    "ParamSpec",
    "SearchResult",
    "SearchSettings",
    "apply_params",
    "best_trial",
    "check_pool_storage",
    "finished",
    "open_study",
    "plot_search",
    "recover_interrupted",
    "redact",
    "storage_url",
    "study_name",
    "suggest",
]
