"""The training stage as its own deployment, on a GPU work pool.

When `train.work_pool` is set, the retrain flow (on the CPU pool) pushes the training and
validation splits to the shared store (`storage.url`), starts the deployment
`train-remote/<train.work_pool>` with `run_deployment`, waits for it, and pulls the adapter folder
back. `train_remote` runs on a worker of that pool: it pulls the splits, runs the ordinary
training task, logs the curves to the parent's MLflow run, and pushes the adapter back.

A search trial (`TrainJob.trial`) travels as the `trial` parameter: the pool's training worker
reports each evaluation to the study's RDB storage (`search.storage`, which that worker must
reach) and stops when the pruner says so, exactly as on the local path. The run then ends
Completed with the state name `Pruned` (an expected end, not a failure) and pushes nothing; the
parent raises `TrialPruned`, which the search stage records as a pruned trial.

Register the deployment once per pool (code from a folder every worker has, e.g. the image):

    python -m flows.train_remote --pool gpu --source /app
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from tasks.models import ModelSettings
from tasks.registry import MLflowSettings, Tracker, open_tracking
from tasks.storage import StorageSettings, join, pull, push
from tasks.train import (
    LoraSettings,
    TrainingError,
    TrainJob,
    TrainResult,
    TrainSettings,
    train_task,
)
from tasks.train.pruning import TrialPruned
from tasks.train.settings import TrialRef

FLOW_NAME = "train-remote"
ENTRYPOINT = "flows/train_remote.py:train_remote"
RESULT_FILE = "result.json"
PRUNED_STATE = "Pruned"


class RemoteTrainResult(TrainResult):
    """What the GPU pool hands back: every training figure, and where the adapter is.

    `model_dir` is the folder on the pool's worker (gone when its run ends); the parent reads
    `model_url` and sets its own `model_dir` with `local_result`.
    """

    model_url: str


def remote_result(result: TrainResult, out_url: str) -> RemoteTrainResult:
    """The pool's side: the whole training result, plus the store URL the adapter is pushed to."""
    return RemoteTrainResult.model_validate(
        {**result.model_dump(), "model_url": join(out_url, "model")}
    )


def local_result(remote_json: str, out_dir: Path) -> TrainResult:
    """The parent's side: the pool's `result.json`, with the adapter pulled to `out_dir/model`."""
    remote = RemoteTrainResult.model_validate_json(remote_json)
    return TrainResult.model_validate(
        {**remote.model_dump(exclude={"model_url"}), "model_dir": out_dir / "model"}
    )


@flow(name=FLOW_NAME, log_prints=True)
def train_remote(
    train_url: str,
    val_url: str,
    out_url: str,
    labels: list[str],
    model: ModelSettings,
    lora: LoraSettings,
    train: TrainSettings,
    storage: StorageSettings,
    mlflow: MLflowSettings,
    mlflow_run_id: str,
    trial: TrialRef | None = None,
) -> RemoteTrainResult | State:
    """Pull the splits from the store, train, push the run's folder to `out_url`.

    `out_url` receives `model/` (the adapter), `history.json` and `result.json`: the parent reads
    everything from the store, so nothing depends on where this run's results are persisted.
    A search trial its pruner stopped ends Completed, named `Pruned`, with nothing pushed.
    """
    logger = get_run_logger()
    tracker = Tracker(open_tracking(mlflow), mlflow_run_id)
    with tempfile.TemporaryDirectory(prefix="tunegate-train-") as tmp:
        work = Path(tmp)
        train_path = pull(train_url, work / "train.parquet", storage.options)
        val_path = pull(val_url, work / "val.parquet", storage.options)
        job = TrainJob(
            train_path=train_path,
            val_path=val_path,
            labels=labels,
            model=model,
            lora=lora,
            train=train,
            out_dir=work / "out",
            trial=trial,
        )
        try:
            result = train_task(
                job,
                sink=lambda step, values: tracker.log_metrics(
                    {f"train/{k}": v for k, v in values.items()}, step
                ),
            )
        except TrialPruned as exc:
            logger.info("search trial pruned: %s", exc)
            return Completed(name=PRUNED_STATE, message=str(exc))
        remote = remote_result(result, out_url)
        (work / "out" / RESULT_FILE).write_text(remote.model_dump_json())
        shutil.rmtree(work / "out" / "checkpoints", ignore_errors=True)
        push(work / "out", out_url, storage.options)
    logger.info("adapter pushed to %s", remote.model_url)
    return remote


def deployment_name(work_pool: str) -> str:
    """The training deployment for a pool is named after the pool."""
    return f"{FLOW_NAME}/{work_pool}"


def train_on_pool(
    job: TrainJob,
    storage: StorageSettings,
    mlflow: MLflowSettings,
    tracker: Tracker,
    run_id: str,
    logger: logging.Logger,
) -> TrainResult:
    """Run training as the pool's deployment; data and adapter travel through `storage.url`."""
    from prefect.deployments import run_deployment

    train_path, val_path, labels = job.train_path, job.val_path, job.labels
    model, lora, train, out_dir = job.model, job.lora, job.train, job.out_dir

    if storage.url is None or train.work_pool is None:
        raise TrainingError("storage.url: required when train.work_pool is set")
    base = join(storage.url, "runs", run_id)
    train_url = push(train_path, join(base, "data", "train.parquet"), storage.options)
    val_url = push(val_path, join(base, "data", "val.parquet"), storage.options)
    name = deployment_name(train.work_pool)
    logger.info("training on work pool %s (deployment %s)", train.work_pool, name)
    # `trial` only when set, so a deployment registered before it existed still takes the rest.
    trial = {"trial": job.trial.model_dump(mode="json")} if job.trial else {}
    child = run_deployment(
        name,
        parameters={
            "train_url": train_url,
            "val_url": val_url,
            "out_url": join(base, "train"),
            "labels": labels,
            "model": model.model_dump(mode="json"),
            "lora": lora.model_dump(mode="json"),
            "train": train.model_dump(mode="json"),
            "storage": storage.model_dump(mode="json"),
            "mlflow": mlflow.model_dump(mode="json"),
            "mlflow_run_id": tracker.run_id,
            **trial,
        },
        timeout=None,
    )
    tracker.set_tags({"tunegate.train_flow_run_id": str(child.id)})
    check_pool_run(child.state, train.work_pool, str(child.id))
    pull(join(base, "train"), out_dir, storage.options)
    return local_result((out_dir / RESULT_FILE).read_text(), out_dir)


def check_pool_run(state: State | None, work_pool: str, flow_run_id: str) -> None:
    """The pool's run ended with an adapter to pull; else `TrialPruned` for a trial its pruner
    stopped (the run's `Pruned` state), or `TrainingError` naming the run."""
    if state is not None and state.is_completed() and state.name == PRUNED_STATE:
        raise TrialPruned(state.message or f"pruned on work pool {work_pool}")
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        raise TrainingError(
            f"train.work_pool '{work_pool}': training run {flow_run_id} ended {name}; "
            "check that a worker polls that pool and has the deployment's code"
        )


def deploy(pool: str, source: str, image: str | None = None) -> str:
    """Register `train-remote/<pool>`: code from `source` (a folder or git URL) or an image."""
    if image:
        deployment_id = train_remote.deploy(
            name=pool, work_pool_name=pool, image=image, build=False, push=False
        )
    else:
        deployment_id = train_remote.from_source(source=source, entrypoint=ENTRYPOINT).deploy(
            name=pool, work_pool_name=pool
        )
    return str(deployment_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.train_remote", description=__doc__)
    parser.add_argument("--pool", required=True, help="work pool the training runs on")
    parser.add_argument("--source", default=".", help="folder or git URL with this code")
    parser.add_argument("--image", default=None, help="for docker/kubernetes pools: the image")
    args = parser.parse_args(argv)
    source = args.source if "://" in args.source else str(Path(args.source).resolve())
    print(deploy(args.pool, source, args.image))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
