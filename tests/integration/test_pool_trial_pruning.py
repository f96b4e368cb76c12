"""A search trial on a work pool is pruned like a local one (issue 16).

The pool's side, `train_remote`, runs here as a real flow (the session's Prefect backend) with a
real training worker on a tiny Llama; the splits come from a shared folder (`storage.url`) and
the trial reports to a real SQLite Optuna study whose median pruner must stop it after its first
evaluation (a completed trial sits at 2.0, above any macro-F1). The dispatch through
`run_deployment` to a pool's worker is covered by `tests/service/test_train_on_pool.py`.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from flows.train_remote import PRUNED_STATE, check_pool_run, train_remote
from tasks.models import ModelSettings
from tasks.registry import MLflowSettings, open_tracking
from tasks.search import SearchSettings, open_study
from tasks.storage import StorageSettings
from tasks.train import LoraSettings, TrainSettings
from tasks.train.pruning import TrialPruned
from tasks.train.settings import TrialRef
from tests.helpers.tiny_models import build_tiny_llama

pytestmark = pytest.mark.integration


def test_a_pool_trial_reports_to_the_study_and_ends_pruned(prefect_backend, tmp_path):
    rows = [{"text": f"note {i} about loan {i % 5}", "label": "ab"[i % 2]} for i in range(32)]
    shared = tmp_path / "shared"
    shared.mkdir()
    pd.DataFrame(rows).to_parquet(shared / "train.parquet")
    pd.DataFrame(rows[:8]).to_parquet(shared / "val.parquet")
    model = build_tiny_llama(tmp_path / "llama", [r["text"] for r in rows], hidden_size=16)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = SearchSettings(enabled=True, pruner="median", startup_trials=0, warmup_evals=0)
    study = open_study(settings, storage, "pool-study")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 1e-3},
            distributions={"lr": FloatDistribution(1e-4, 1e-2)},
            value=2.0,
            intermediate_values={1: 2.0, 2: 2.0, 3: 2.0},
        )
    )
    trial = study.ask()
    ref = TrialRef(
        storage=storage,
        study_name="pool-study",
        trial_id=trial._trial_id,
        number=trial.number,
        pruner="median",
        startup_trials=0,
        warmup_evals=0,
    )
    mlflow = MLflowSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
    )
    client = open_tracking(mlflow)
    run_id = client.create_run(client.get_experiment_by_name(mlflow.experiment).experiment_id)
    run_id = run_id.info.run_id

    state = train_remote(
        train_url=f"file://{shared}/train.parquet",
        val_url=f"file://{shared}/val.parquet",
        out_url=f"file://{shared}/out",
        labels=["a", "b"],
        model=ModelSettings(base_model=str(model), max_length=16),
        lora=LoraSettings(r=2),
        train=TrainSettings(batch_size=8, epochs=3, early_stopping_patience=5),
        storage=StorageSettings(url=f"file://{shared}"),
        mlflow=mlflow,
        mlflow_run_id=run_id,
        trial=ref,
        return_state=True,
    )

    # Completed (an expected end), named Pruned, and the parent turns it into TrialPruned.
    assert state.is_completed() and state.name == PRUNED_STATE, state.message
    with pytest.raises(TrialPruned, match=f"trial {trial.number} pruned after evaluation 1"):
        check_pool_run(state, "gpu", "run-1")
    # The pool's worker reported to the same study, and stopped at its first of 3 evaluations.
    reported = optuna.load_study(study_name="pool-study", storage=storage).trials[trial.number]
    assert list(reported.intermediate_values) == [1]
    evals = MlflowClient(mlflow.tracking_uri).get_metric_history(run_id, "train/eval_loss")
    assert len(evals) == 1
    assert not Path(shared / "out").exists()  # nothing pushed for a pruned trial
