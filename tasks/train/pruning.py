"""Optuna pruning from inside the training worker: report each evaluation, stop a hopeless trial.

The search stage (`tasks.search`, `flows.search`) runs each trial as an ordinary training job
with `TrainJob.trial` set. The worker is a child process, so it reaches the study through the
Optuna RDB storage: after every evaluation the callback reports the validation metric the Trainer
already computed (`eval_f1_macro`, `eval_rouge_l`) at step = the evaluation's index (1, 2, ...),
so trials with different batch sizes compare at the same point of their schedule. When the
pruner says stop, it raises `TrialPruned`; the worker writes `error.json` with kind "pruned" and
exits with `PRUNED_EXIT`, and `run_training` raises `TrialPruned` (not a failure) in the parent.

The pruner is not kept in the storage, so parent and worker both build it with `make_pruner`
from the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.train.settings import TrainingError, TrialRef

PRUNED_EXIT = 4
PRUNED_KIND = "pruned"


class TrialPruned(TrainingError):
    """The search's pruner stopped this trial: an expected end, not a failure."""


def make_pruner(kind: str, startup_trials: int, warmup_evals: int) -> Any:  # noqa: ANN401
    """The Optuna pruner for `search.pruner` (median | hyperband | none).

    Steps count evaluations from 1, so a trial that must get `warmup_evals` evaluations first
    becomes prunable at step `warmup_evals + 1`.
    """
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_evals + 1
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup_evals + 1)
    return optuna.pruners.NopPruner()


def was_pruned(out_dir: Path) -> bool:
    """Whether the worker in `out_dir` ended because its trial was pruned."""
    error_path = Path(out_dir) / "error.json"
    if not error_path.is_file():
        return False
    return json.loads(error_path.read_text()).get("kind") == PRUNED_KIND


def pruning_callback(ref: TrialRef, metric: str) -> Any:  # noqa: ANN401 - a TrainerCallback
    """A `TrainerCallback` reporting `eval_<metric>` to trial `ref` and raising when pruned."""
    import optuna
    from transformers import TrainerCallback

    class OptunaPruning(TrainerCallback):
        def __init__(self) -> None:
            study = optuna.load_study(
                study_name=ref.study_name,
                storage=ref.storage,
                pruner=make_pruner(ref.pruner, ref.startup_trials, ref.warmup_evals),
            )
            self.trial = optuna.trial.Trial(study, ref.trial_id)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:  # noqa: ANN001
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None or not state.is_world_process_zero:
                return
            evaluations = sum(1 for entry in state.log_history if "eval_loss" in entry)
            self.trial.report(float(value), step=evaluations)
            if self.trial.should_prune():
                raise TrialPruned(
                    f"trial {ref.number} pruned after evaluation {evaluations} "
                    f"(validation {metric} {value:.4f})"
                )

    return OptunaPruning()
