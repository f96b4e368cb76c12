"""The Optuna study behind a search: where it lives, its name, its trials, its result and plots.

The study is keyed by the dataset version and a digest of the config (minus the budget keys), so
a killed or retried retrain on the same data and config opens the same study and continues it:
COMPLETE and PRUNED trials count against `search.trials`, and a trial left RUNNING by a killed
run is marked FAIL and its parameters queued again (it is finished, not repeated). Plain
functions; the flow (`flows/search.py`) runs the trials.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from tasks.search.settings import ParamSpec, SearchSettings
from tasks.train.settings import LoraSettings, TrainingError, TrainSettings

# Budget and placement: changing them continues the same study rather than starting over.
NOT_IN_STUDY_KEY = (
    "search.trials",
    "search.timeout_minutes",
    "search.parallel",
    "search.preload_workers",
    "work_dir",
)
RESULT_ATTR = "result_path"
STORAGE_FILE = "optuna.db"


class SearchResult(BaseModel):
    """The summary's `search`: what this run's search did and what it chose."""

    study_name: str
    storage: str = Field(description="The storage URL with any password removed.")
    metric: str
    trials_run: int = Field(description="Trials this run finished (complete + pruned + failed).")
    pruned: int = Field(description="Trials this run pruned.")
    failed: int = 0
    trials_in_study: int = Field(description="Complete + pruned trials in the study, all runs.")
    resumed_from: int = Field(description="Complete + pruned trials before this run.")
    best_trial: int
    best_params: dict[str, Any]
    best_validation_metric: float
    wall_seconds: float
    plots: list[str] = []


def storage_url(settings: SearchSettings, tracking_uri: str, work_dir: Path) -> str:
    """`search.storage`, else a SQLite file beside the MLflow SQLite store, else in work_dir."""
    if settings.storage:
        return settings.storage
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    else:
        folder = Path(work_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / STORAGE_FILE}"


def check_pool_storage(storage: str, work_pool: str) -> None:
    """Refuse a storage a work pool's training worker cannot share with this process.

    A pool trial's worker reports to the study from another process (often another host): an
    in-memory or relative SQLite URL would open a different, empty database there. The URL
    travels in the deployment run's parameters, which Prefect stores and shows: a password in
    it is refused (the workers' environment supplies it, e.g. PGPASSWORD or ~/.pgpass).
    """
    if re.search(r"//[^/@]*:[^/@]*@", storage):
        raise TrainingError(
            f"search.storage: {redact(storage)} carries a password, which would be stored with "
            f"the parameters of every training run on train.work_pool '{work_pool}'; leave it "
            "out of the URL and give it to the workers' environment (PGPASSWORD or ~/.pgpass)"
        )
    if not storage.startswith("sqlite"):
        return
    path = storage.partition(":///")[2]
    if not path.startswith("/"):
        raise TrainingError(
            f"search.storage: {redact(storage)} is not an absolute SQLite path, so the "
            f"training worker on train.work_pool '{work_pool}' would open another database; "
            "use postgresql://... (or sqlite:////absolute/path/optuna.db when the pool runs on "
            "this host)"
        )


def redact(url: str) -> str:
    """A storage URL fit for logs and the summary: `user:password@` becomes `***@`."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def study_name(dataset_version: str, flat_config: dict[str, Any]) -> str:
    """`search-<dataset version>-<config digest>`: safe as a folder name whatever the input."""
    kept = {k: v for k, v in flat_config.items() if k not in NOT_IN_STUDY_KEY}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    version = re.sub(r"[^A-Za-z0-9]", "", dataset_version)[:16] or "data"
    return f"search-{version}-{digest[:12]}"


def open_study(settings: SearchSettings, storage: str, name: str) -> Any:  # noqa: ANN401
    """Create the study, or load it when a run on the same data and config made it."""
    import optuna

    from tasks.train.pruning import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = make_pruner(settings.pruner, settings.startup_trials, settings.warmup_evals)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True, pruner=pruner
    )
    # Reseed past the trials already there, so a resumed study does not replay its first draws.
    seed = settings.seed + len(study.get_trials(deepcopy=False))
    if settings.sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        study.sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(settings.trials // 3, 3)), multivariate=True,
            constant_liar=settings.parallel > 1,
        )  # fmt: skip
    return study


def finished(study: Any) -> int:  # noqa: ANN401
    """COMPLETE + PRUNED trials: what a resumed study counts against the budget."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def recover_interrupted(study: Any) -> list[int]:  # noqa: ANN401
    """Trials a killed run left RUNNING: marked FAIL, their parameters queued to run again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return [t.number for t in stale]


def suggest(trial: Any, space: dict[str, ParamSpec]) -> dict[str, Any]:  # noqa: ANN401
    """One value per searched key, from the trial."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return params


def apply_params(
    lora: LoraSettings, train: TrainSettings, params: dict[str, Any]
) -> tuple[LoraSettings, TrainSettings]:
    """The trial's settings: the config's, with the searched keys replaced (and re-validated)."""
    updates: dict[str, dict[str, Any]] = {"lora": {}, "train": {}}
    for key, value in params.items():
        section, _, field = key.partition(".")
        updates[section][field] = value
    try:
        return (
            LoraSettings.model_validate({**lora.model_dump(), **updates["lora"]}),
            TrainSettings.model_validate({**train.model_dump(), **updates["train"]}),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TrainingError(f"search.space: {err['loc'][0]}: {err['msg']}") from None


def best_trial(study: Any) -> Any | None:  # noqa: ANN401
    """The COMPLETE trial with the best validation metric whose adapter is still on disk."""
    from optuna.trial import TrialState

    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and Path(t.user_attrs.get(RESULT_ATTR, "/nonexistent")).is_file()
    ]
    return max(done, key=lambda t: (t.value, -t.number), default=None)


def plot_search(study: Any, out_dir: Path) -> list[Path]:  # noqa: ANN401
    """Optimisation history, and parameter importance once two trials completed (fANOVA needs
    at least two values to explain); PNGs in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("search_history.png", ovm.plot_optimization_history)]
    varied = {
        k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1
    }
    if len(complete) >= 2 and varied:
        plots.append(("search_importance.png", ovm.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = plot(study)
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        figure.set_size_inches(7, 4)
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=100)
        plt.close(figure)
        paths.append(out_dir / name)
    return paths
