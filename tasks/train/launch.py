"""The parent side: start the worker, forward its logs while it trains, fail with one line.

The training runs in a child process (`python -m tasks.train.worker SPEC.json`, or `torchrun` /
`accelerate launch` for several processes), so an out-of-memory error or a crash fails the task
with one clear line and the memory goes back when the child exits. The spec file is the
`TrainJob`'s JSON. The parent takes the folder's lock before it touches the folder and hands it
to the worker, which dies with the parent (`tasks.train.guard`).

`preload=True` (the search's `search.preload_workers`) forks a single-process worker from
Python's multiprocessing forkserver instead, which has imported torch, transformers and peft once
(`tasks.train.preload`), so the second and later trials of a search skip the 5-7 s of imports.
The forked worker is otherwise the same: its own session, the parent's environment, the lock's
descriptor, `worker.log`, and the same exit codes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prefect import task

from tasks import stage_logger
from tasks.models import resolve_base_model
from tasks.train.guard import LOCK_FD_ENV, PARENT_PID_ENV, FolderLock, PassedFd
from tasks.train.history import HISTORY_STREAM, last_complete_checkpoint
from tasks.train.model import check_runtime
from tasks.train.pruning import TrialPruned, was_pruned
from tasks.train.settings import OOM_HINT, TrainingError, TrainJob, TrainResult, TrainSettings
from tasks.train.worker import forked_main

WORKER_MODULE = "tasks.train.worker"
PRELOAD_MODULE = "tasks.train.preload"
SPEC_FILE = "spec.json"

# `train.distributed` -> the accelerate config shipped in configs/accelerate/.
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
DISTRIBUTED_CONFIGS = {"ddp": "ddp.yaml", "fsdp": "fsdp.yaml", "deepspeed": "deepspeed-zero3.yaml"}

Sink = Callable[[int, dict[str, float]], None]


def _log() -> logging.Logger | logging.LoggerAdapter:
    return stage_logger("tasks.train")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(spec_path: Path, settings: TrainSettings) -> list[str]:
    """One process, `torchrun` for several, or `accelerate launch` with a shipped config."""
    worker = ["-m", WORKER_MODULE, str(spec_path)]
    accelerate_config = settings.accelerate_config
    if accelerate_config is None and settings.distributed is not None:
        accelerate_config = ACCELERATE_CONFIGS / DISTRIBUTED_CONFIGS[settings.distributed]
    if accelerate_config is not None:
        return [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config),
            "--num_processes", str(settings.num_processes),
            "--main_process_port", str(_free_port()),
            *worker,
        ]  # fmt: skip
    if settings.num_processes > 1:
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(settings.num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            *worker,
        ]  # fmt: skip
    return [sys.executable, *worker]


def write_spec(job: TrainJob) -> Path:
    """The worker's input, `out_dir/spec.json` (the job, paths made absolute); stale results of an
    earlier attempt removed, so the parent never reads them as this attempt's."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "error.json"):
        (out_dir / stale).unlink(missing_ok=True)
    spec = job.model_copy(
        update={
            "train_path": Path(job.train_path).resolve(),
            "val_path": Path(job.val_path).resolve(),
        }
    )
    spec_path = out_dir / SPEC_FILE
    spec_path.write_text(spec.model_dump_json(indent=1))
    return spec_path


class HistoryForwarder:
    """Reads the worker's `history.jsonl` as it grows: log lines to `sink`, events to `on_event`.

    Only complete lines are read, so a line the worker is still writing waits for the next call.
    """

    def __init__(
        self, stream: Path, sink: Sink | None, on_event: Callable[[dict], None] | None
    ) -> None:
        self.stream, self.sink, self.on_event = stream, sink, on_event
        self.offset = 0

    def __call__(self) -> None:
        if not self.stream.is_file():
            return
        with self.stream.open() as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            self._forward(json.loads(line))

    def _forward(self, entry: dict) -> None:
        if "event" in entry:
            _log().warning(entry.get("message", entry["event"]))
            if self.on_event is not None:
                self.on_event(entry)
            return
        step = int(entry.pop("step"))
        if "eval_loss" in entry or "loss" in entry:  # progress: every logged step
            _log().info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in entry.items()))
        if self.sink is not None:
            self.sink(step, entry)


def run_training(
    job: TrainJob,
    sink: Sink | None = None,
    on_event: Callable[[dict], None] | None = None,
    preload: bool = False,
) -> TrainResult:
    """Train in a child process; forward its logs to `sink` as they come; fail with one line.

    `preload`: fork a single-process worker from the preloaded forkserver (module docstring)."""
    check_runtime(job.train)
    resolve_base_model(job.model.base_model)
    out_dir = Path(job.out_dir).resolve()
    job = job.model_copy(update={"out_dir": out_dir})
    lock = FolderLock(out_dir).acquire()  # before anything in the folder changes
    try:
        spec_path = write_spec(job)
        stream = out_dir / HISTORY_STREAM
        if not job.train.resume:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        if not (job.train.resume and last_complete_checkpoint(out_dir / "checkpoints")):
            stream.unlink(missing_ok=True)
        log_path = out_dir / "worker.log"
        command = launch_command(spec_path, job.train)
        forward = HistoryForwarder(stream, sink, on_event)
        forked = preload and command == [sys.executable, "-m", WORKER_MODULE, str(spec_path)]
        returncode = _run_worker(command, log_path, forward, lock, forked)
    finally:
        lock.release()
    if returncode != 0:
        if was_pruned(out_dir):  # a search trial its pruner stopped: not a failure
            raise TrialPruned(json.loads((out_dir / "error.json").read_text())["message"])
        raise TrainingError(_failure_message(out_dir, returncode, log_path))
    return TrainResult.model_validate_json((out_dir / "result.json").read_text())


def _run_worker(
    command: list[str],
    log_path: Path,
    forward: Callable[[], None],
    lock: FolderLock,
    forked: bool = False,
) -> int:
    """Run the worker in its own session, forwarding as it goes; killed with its children when
    the parent is interrupted (a cancelled task must not leave training running). The worker
    inherits the folder lock and watches this process, so it also ends when the parent is
    killed outright."""
    assert lock.fd is not None, "the folder lock is held before the worker starts"
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        PARENT_PID_ENV: str(os.getpid()),
        LOCK_FD_ENV: str(lock.fd),
    }
    worker = (
        _ForkedWorker(command[-1], log_path, env, lock.fd)
        if forked
        else _SpawnedWorker(command, log_path, env, lock.fd)
    )
    lock.record_holder(worker.pid)
    try:
        while worker.poll() is None:
            time.sleep(0.25)
            forward()
    except BaseException:
        worker.kill()
        raise
    forward()
    return worker.returncode


class _SpawnedWorker:
    """A fresh interpreter (or torchrun / accelerate with its processes) in a new session."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str], fd: int) -> None:
        with log_path.open("ab") as worker_log:
            self.proc = subprocess.Popen(
                command,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                pass_fds=(fd,),
            )
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int:
        return self.proc.wait()

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()


class _ForkedWorker:
    """`tasks.train.worker.forked_main` in a process forked from the preloaded forkserver."""

    def __init__(self, spec_path: str, log_path: Path, env: dict[str, str], fd: int) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([PRELOAD_MODULE])  # read when the server first starts
        self.proc = context.Process(
            target=forked_main,
            args=(spec_path, str(log_path), env, PassedFd(fd)),
            name="tunegate-train-worker",
        )
        self.proc.start()
        assert self.proc.pid is not None, "a started process has a pid"
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    @property
    def returncode(self) -> int:
        self.proc.join()
        assert self.proc.exitcode is not None, "a joined process has an exit code"
        return self.proc.exitcode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # its session, once it made one
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.join()


def _failure_message(out_dir: Path, returncode: int, log_path: Path) -> str:
    error_path = out_dir / "error.json"
    if error_path.is_file():
        error = json.loads(error_path.read_text())
        if error.get("kind") == "oom":
            return f"training ran out of memory: {OOM_HINT}"
        return error["message"]
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL, 137):
        return (
            "the training process was killed (SIGKILL), usually by the out-of-memory killer: "
            f"{OOM_HINT}; rerun to resume from the last checkpoint"
        )
    tail = (
        log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    )
    return (
        f"the training process failed (exit {returncode}): {' '.join(tail)[:300]} (see {log_path})"
    )


@task(name="train")
def train_task(job: TrainJob, sink: Sink | None = None) -> TrainResult:
    """Runs in a child process; a retry resumes from the last checkpoint in `job.out_dir`."""
    result = run_training(job, sink)
    logger = _log()
    logger.info(
        "trained %s steps in %.0fs (%.1f examples/s), best val %s %.4f%s",
        result.steps,
        result.seconds,
        result.examples_per_second,
        result.metric,
        result.best_metric,
        f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else "",
    )
    for split, report in result.truncation.items():
        if report.dropped_target_too_long or report.prompt_truncated:
            logger.warning(
                "%s: %d of %d examples dropped (target longer than model.max_length allows), "
                "%d inputs cut to fit",
                split,
                report.dropped_target_too_long,
                report.examples,
                report.prompt_truncated,
            )
    return result
