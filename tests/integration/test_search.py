"""The search stage inside the whole retrain flow, on a tiny random BERT and a keyword task.

Pruning is forced deterministically: the tiny model's weights are seeded and the space is two
learning rates, one (1e-7) that keeps the random model's score and one (0.5) that collapses the
model onto one class, drawn by a seeded random sampler in the order keep, keep, collapse, keep
(seed 6); the median pruner, free to prune from the second evaluation once a trial completed,
must stop the collapsing one. A second run on the same data and
config resumes the study: its budget is spent, so it runs no trial and registers the same
adapter.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from flows.config import load_config
from flows.retrain import retrain
from tests.helpers.tiny_models import build_tiny_bert

pytestmark = pytest.mark.integration

CUES = {
    "refund": ["refund", "money back", "reimburse"],
    "delivery": ["parcel", "courier", "shipping"],
    "login": ["password", "locked out", "sign in"],
}
FILLER = "please could you help me with my order today thanks a lot".split()
# KEEP barely moves the seeded random weights (their score holds); DIVERGE collapses the model
# onto one class, whose macro-F1 is the lowest a 3-class model can score near balanced data.
GOOD_LR, BAD_LR = 1.0e-7, 0.5


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(CUES)[i % len(CUES)]
        words = rng.sample(FILLER, 5) + rng.choice(CUES[label]).split()
        rng.shuffle(words)
        rows.append({"id": f"r{i}", "text": " ".join(words), "label": label})
    return rows


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _registered_weights(uri: str, name: str, version: str, dst: Path) -> str:
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=dst))
    return _sha(next(local.rglob("model.safetensors")))


def test_search_prunes_tracks_registers_best_and_resumes(prefect_backend, tmp_path):
    rows = _rows(300, seed=1)
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)  # the random weights, so the learning curves are the same every run
    model = build_tiny_bert(tmp_path / "bert", [r["text"] for r in rows])
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    overrides = [
        f"data.path={data}",
        "data.id_column=id",
        f"model.base_model={model}",
        "model.max_length=24",
        "augment.enabled=false",
        "adversarial.enabled=false",
        "evaluate.latency_samples=3",
        "evaluate.bootstrap_resamples=0",
        "gate.min_f1=0",
        "gate.min_margin_over_baseline=-1",
        "gate.max_latency_s=600",
        "train.method=full",
        "train.epochs=3",
        "train.batch_size=8",
        "train.warmup_fraction=0",
        "search.enabled=true",
        "search.trials=4",
        "search.sampler=random",
        "search.seed=6",
        "search.startup_trials=1",
        "search.warmup_evals=1",
        # YAML reads 1e-07 as a string: spell the floats out
        "search.space={learning_rate: {type: categorical, choices: [1.0e-7, 0.5]}}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={tmp_path}/mlflow/artifacts",
        "mlflow.registered_model=tiny-search",
        f"work_dir={tmp_path}/runs",
        f"feedback.store={tmp_path}/feedback",
    ]
    config = load_config(None, overrides)

    first = retrain(config, return_state=True).result()
    search = first.search
    assert search is not None
    assert search["trials_run"] == 4 and search["pruned"] == 1 and search["failed"] == 0
    assert search["resumed_from"] == 0 and search["trials_in_study"] == 4
    assert search["best_params"] == {"train.learning_rate": GOOD_LR}
    assert search["wall_seconds"] > 0
    run_dir = Path(first.run_dir)
    assert (run_dir / "search" / "search_history.png").is_file()
    assert "search_history.png" in (run_dir / "evaluation.md").read_text()

    client = MlflowClient(uri)
    parent = client.get_run(first.mlflow_run_id)
    assert parent.data.tags["tunegate.search.best_trial"] == str(search["best_trial"])
    assert parent.data.metrics["search/pruned"] == 1
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{first.mlflow_run_id}'",
    )
    by_number = {int(r.data.tags["tunegate.search.trial"]): r for r in trials}
    assert sorted(by_number) == [0, 1, 2, 3]
    states = {n: r.data.tags["tunegate.search.state"] for n, r in by_number.items()}
    assert states == {0: "complete", 1: "complete", 2: "pruned", 3: "complete"}
    assert float(by_number[2].data.params["train.learning_rate"]) == BAD_LR
    # curves by step in every trial; the pruned one stopped after its second evaluation (the
    # first may not prune: warmup_evals=1, and the good rate is still behind after one epoch)
    evals = {
        n: client.get_metric_history(r.info.run_id, "train/eval_f1_macro")
        for n, r in by_number.items()
    }
    assert [len(evals[n]) for n in range(4)] == [3, 3, 2, 3]
    assert search["best_validation_metric"] > max(
        m.value for m in evals[2]
    )  # the pruned one was behind

    study_dir = Path(config.work_dir).resolve() / "search" / search["study_name"]
    best_weights = study_dir / f"trial-{search['best_trial']:03d}" / "model" / "model.safetensors"
    assert first.model["version"] == "1"
    registered = _registered_weights(uri, "tiny-search", "1", tmp_path / "dl1")
    assert registered == _sha(best_weights)  # the best trial's weights, not retrained

    # The same data and config again: the study resumes, its 4 trials count, none is repeated.
    second = retrain(config, return_state=True).result()
    assert second.search["study_name"] == search["study_name"]
    assert second.search["resumed_from"] == 4 and second.search["trials_run"] == 0
    assert second.search["best_trial"] == search["best_trial"]
    again = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`tunegate.search.study` = '{search['study_name']}'",
    )
    trial_runs = [r for r in again if "tunegate.search.trial" in r.data.tags]
    assert sorted(int(r.data.tags["tunegate.search.trial"]) for r in trial_runs) == [0, 1, 2, 3]
    assert second.model["version"] == "2"
    assert _registered_weights(uri, "tiny-search", "2", tmp_path / "dl2") == _sha(best_weights)
