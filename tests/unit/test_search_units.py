"""The search section and the study helpers: refused keys, resumable names, budget counting,
interrupted trials, the pruning callback and the plots, on small SQLite studies (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from pydantic import ValidationError

import flows.record as record
from flows.config import ConfigError, load_config
from flows.record import record_search
from tasks.search import (
    DEFAULT_SPACES,
    SearchResult,
    SearchSettings,
    apply_params,
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
from tasks.train import LoraSettings, TrainingError, TrainSettings
from tasks.train.pruning import TrialPruned, pruning_callback, was_pruned
from tasks.train.settings import TrialRef
from tests.unit.test_record import FakeTracker

pytestmark = pytest.mark.unit


def _space(**entries: dict) -> dict:
    return {"enabled": True, "space": entries}


@pytest.mark.parametrize(
    ("key", "spec", "named"),
    [
        ("lr", {"type": "float", "low": 1e-4, "high": 1e-3}, "lr: unknown setting"),
        ("model.max_length", {"type": "int", "low": 8, "high": 64}, "model.max_length: unknown"),
        ("train.method", {"type": "categorical", "choices": ["lora"]}, "cannot be searched"),
        ("lora.r", {"type": "int", "low": 0, "high": 8}, "0 is not a valid lora.r"),
        (
            "warmup_fraction",
            {"type": "float", "low": 0, "high": 1.5},
            "valid train.warmup_fraction",
        ),
        ("epochs", {"type": "int", "low": 1}, "needs low and high"),
        ("learning_rate", {"type": "float", "low": 0, "high": 1, "log": True}, "low > 0"),
        ("batch_size", {"type": "categorical"}, "needs choices"),
    ],
)
def test_bad_space_entries_are_refused_naming_the_key(key, spec, named):
    with pytest.raises(ValidationError, match=named):
        SearchSettings.model_validate(_space(**{key: spec}))


def test_bare_keys_mean_train_keys_and_defaults_follow_the_method():
    settings = SearchSettings.model_validate(
        _space(
            epochs={"type": "int", "low": 1, "high": 3},
            **{"lora.r": {"type": "int", "low": 2, "high": 8}},
        )
    )
    assert set(settings.space_for("lora")) == {"train.epochs", "lora.r"}
    assert "lora.r" in SearchSettings().space_for("lora")
    assert not any(k.startswith("lora.") for k in SearchSettings().space_for("full"))


@pytest.mark.parametrize("method", sorted(DEFAULT_SPACES))
def test_every_default_space_yields_valid_settings_at_its_extremes(method):
    for key, spec in DEFAULT_SPACES[method].items():
        for value in spec.extremes():
            lora, train = apply_params(LoraSettings(), TrainSettings(), {key: value})
            section, _, field = key.partition(".")
            assert getattr(lora if section == "lora" else train, field) == value


def test_apply_params_refuses_a_value_naming_the_key():
    with pytest.raises(TrainingError, match="search.space: r"):
        apply_params(LoraSettings(), TrainSettings(), {"lora.r": 0})


def test_study_name_is_stable_ignores_the_budget_and_is_safe_as_a_folder():
    config = {"train.epochs": 3, "search.trials": 4, "work_dir": "/a", "data.path": "x"}
    name = study_name("v1/../../etc", config)
    assert name == study_name("v1/../../etc", {**config, "search.trials": 20, "work_dir": "/b"})
    assert name == study_name("v1/../../etc", {**config, "search.preload_workers": False})
    assert name != study_name("v1/../../etc", {**config, "train.epochs": 4})
    assert name != study_name("v2", config)
    assert "/" not in name and ".." not in name


def test_storage_sits_beside_the_mlflow_sqlite_store_and_hides_passwords(tmp_path):
    settings = SearchSettings()
    url = storage_url(settings, f"sqlite:///{tmp_path}/ml/mlflow.db", tmp_path / "runs")
    assert url == f"sqlite:///{tmp_path}/ml/optuna.db"
    url = storage_url(settings, "http://mlflow:5000", tmp_path / "runs")
    assert url == f"sqlite:///{(tmp_path / 'runs').resolve()}/optuna.db"
    assert storage_url(SearchSettings(storage="postgresql://u:p@db/x"), "x", tmp_path) == (
        "postgresql://u:p@db/x"
    )
    assert redact("postgresql://user:secret@db:5432/optuna") == "postgresql://***@db:5432/optuna"


def test_a_work_pool_needs_a_storage_its_worker_shares(tmp_path):
    check_pool_storage("postgresql://optuna@db/optuna", "gpu")
    with pytest.raises(TrainingError, match="carries a password") as secret:
        check_pool_storage("postgresql://optuna:hunter2@db/optuna", "gpu")
    assert "hunter2" not in str(secret.value)
    check_pool_storage(f"sqlite:///{tmp_path}/optuna.db", "gpu")  # absolute: one host
    for url in ("sqlite:///optuna.db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(TrainingError, match="search.storage: .*train.work_pool 'gpu'"):
            check_pool_storage(url, "gpu")


def test_a_pool_run_named_pruned_is_a_pruned_trial_and_a_failed_one_names_the_run():
    from prefect.states import Completed, Failed

    from flows.train_remote import PRUNED_STATE, check_pool_run

    check_pool_run(Completed(), "gpu", "r1")
    with pytest.raises(TrialPruned, match="trial 3 pruned"):
        check_pool_run(Completed(name=PRUNED_STATE, message="trial 3 pruned"), "gpu", "r1")
    with pytest.raises(TrainingError, match="training run r1 ended Failed") as failed:
        check_pool_run(Failed(), "gpu", "r1")
    assert not isinstance(failed.value, TrialPruned)


def _study(tmp_path: Path, **settings: object) -> tuple[SearchSettings, str, optuna.Study]:
    search = SearchSettings(enabled=True, sampler="random", **settings)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    return search, storage, open_study(search, storage, "search-test")


def test_a_reopened_study_counts_complete_and_pruned_and_does_not_replay_draws(tmp_path):
    search, storage, study = _study(tmp_path)
    space = search.space_for("lora")
    first = []
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask()
        first.append(suggest(trial, space))
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert finished(study) == 2  # a failed trial does not spend the budget

    again = open_study(search, storage, "search-test")
    assert len(again.trials) == 3
    assert suggest(again.ask(), space) not in first


def test_an_interrupted_trial_is_failed_and_its_params_run_again(tmp_path):
    search, storage, study = _study(tmp_path)
    space = search.space_for("full")
    params = suggest(study.ask(), space)  # left RUNNING, as by a killed retrain
    again = open_study(search, storage, "search-test")
    assert recover_interrupted(again) == [0]
    assert again.trials[0].state == TrialState.FAIL
    assert suggest(again.ask(), space) == params
    assert finished(again) == 0


def _ref(study: optuna.Study, trial: optuna.Trial, storage: str) -> TrialRef:
    return TrialRef(
        storage=storage,
        study_name=study.study_name,
        trial_id=trial._trial_id,
        number=trial.number,
        startup_trials=1,
        warmup_evals=0,
    )


def test_the_pruning_callback_stops_a_trial_below_the_median(tmp_path):
    _, storage, study = _study(tmp_path, startup_trials=1, warmup_evals=0)
    done = study.ask()
    done.report(0.9, step=1)
    study.tell(done, 0.9)
    state = SimpleNamespace(is_world_process_zero=True, log_history=[{"eval_loss": 1.0}])

    good = study.ask()
    callback = pruning_callback(_ref(study, good, storage), "f1_macro")
    callback.on_evaluate(None, state, None, metrics={"eval_f1_macro": 0.95})
    assert study.trials[good.number].intermediate_values == {1: 0.95}

    bad = study.ask()
    callback = pruning_callback(_ref(study, bad, storage), "f1_macro")
    with pytest.raises(TrialPruned, match="trial 2 pruned after evaluation 1"):
        callback.on_evaluate(None, state, None, metrics={"eval_f1_macro": 0.2})


def test_was_pruned_reads_the_workers_error_file(tmp_path):
    assert not was_pruned(tmp_path)
    (tmp_path / "error.json").write_text(json.dumps({"kind": "pruned", "message": "m"}))
    assert was_pruned(tmp_path)
    (tmp_path / "error.json").write_text(json.dumps({"kind": "oom", "message": "m"}))
    assert not was_pruned(tmp_path)


def test_plots_skip_importance_until_two_trials_with_different_params_complete(tmp_path):
    search, _, study = _study(tmp_path)
    space = search.space_for("lora")
    trial = study.ask()
    suggest(trial, space)
    study.tell(trial, 0.4)
    assert [p.name for p in plot_search(study, tmp_path / "one")] == ["search_history.png"]
    for value in (0.6, 0.5):
        trial = study.ask()
        suggest(trial, space)
        study.tell(trial, value)
    names = [p.name for p in plot_search(study, tmp_path / "three")]
    assert names == ["search_history.png", "search_importance.png"]
    assert all((tmp_path / "three" / n).stat().st_size > 0 for n in names)


@pytest.fixture
def prefect_artifacts(monkeypatch) -> list[dict]:
    made: list[dict] = []
    monkeypatch.setattr(
        record, "create_table_artifact", lambda *a, **kw: made.append({"a": a, **kw})
    )
    return made


def test_record_search_writes_the_summary_file_metrics_and_best_params(tmp_path, prefect_artifacts):
    plot = tmp_path / "search_history.png"
    plot.write_bytes(b"png")
    result = SearchResult(
        study_name="search-v1-abc",
        storage="sqlite:///x/optuna.db",
        metric="f1_macro",
        trials_run=4,
        pruned=1,
        trials_in_study=4,
        resumed_from=0,
        best_trial=3,
        best_params={"train.learning_rate": 0.001},
        best_validation_metric=0.8,
        wall_seconds=12.0,
        plots=[str(plot)],
    )
    tracker = FakeTracker()
    trials = [
        {"number": 3, "state": "complete", "value": 0.8, "seconds": 3.0, "mlflow_run_id": "r"}
    ]
    record_search(tracker, result, trials, tmp_path)
    assert tracker.metrics["search/pruned"] == 1
    assert tracker.metrics["search/best_validation"] == 0.8
    assert tracker.tags["tunegate.search.best.train.learning_rate"] == "0.001"
    assert "search/search_history.png" in tracker.artifacts
    assert [a["key"] for a in prefect_artifacts] == ["search-trials"]
    assert prefect_artifacts[0]["a"][0] == trials
    saved = json.loads((tmp_path / "search" / "search.json").read_text())
    assert SearchResult.model_validate(saved) == result


def test_categorical_choices_from_set_take_the_type_of_the_searched_key(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    space = (
        '{"learning_rate": {"type": "categorical", "choices": [1e-07, 5e-4]},'
        ' "lora.r": {"type": "categorical", "choices": ["8", 16]}}'
    )
    config = load_config(
        None, [f"data.path={data}", "search.enabled=true", f"search.space={space}"]
    )
    assert config.search.space["learning_rate"].choices == [1e-07, 5e-4]  # YAML gave "1e-07"
    assert config.search.space["lora.r"].choices == [8, 16]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = suggest(study.ask(), config.search.space_for("lora"))
    assert isinstance(params["train.learning_rate"], float) and isinstance(params["lora.r"], int)
    with pytest.raises(ConfigError, match="learning_rate: 'fast' is not a valid"):
        load_config(
            None,
            [
                f"data.path={data}",
                'search.space={"learning_rate": {"type": "categorical", "choices": ["fast"]}}',
            ],
        )


def test_a_hyperband_study_prunes_a_trial_worse_than_its_rung_but_never_before_warmup(tmp_path):
    _, storage, study = _study(tmp_path, pruner="hyperband", warmup_evals=1)
    evaluations = 9
    first = study.ask()
    for step in range(1, evaluations + 1):
        first.report(0.9, step=step)
    study.tell(first, 0.9)  # Hyperband's max resource ("auto"): 9 evaluations

    pruned_at = []
    for k in range(8):  # each trial a little worse than the one before, at every evaluation
        trial = study.ask()
        ref = _ref(study, trial, storage).model_copy(
            update={"pruner": "hyperband", "warmup_evals": 1}
        )
        callback = pruning_callback(ref, "f1_macro")
        log: list[dict] = []
        try:
            for _ in range(evaluations):
                log.append({"eval_loss": 1.0})
                state = SimpleNamespace(is_world_process_zero=True, log_history=log)
                callback.on_evaluate(None, state, None, metrics={"eval_f1_macro": 0.5 - 0.05 * k})
        except TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            pruned_at.append(len(log))
        else:
            study.tell(trial, 0.5 - 0.05 * k)
    assert pruned_at, "Hyperband let every trial run although each was worse than the last"
    assert min(pruned_at) >= 2  # warmup_evals=1: every trial gets its first evaluation
    assert len(pruned_at) < 8  # the first trial at each rung of a bracket goes on
