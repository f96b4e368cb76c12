"""The training worker's life is tied to its parent's: killed with it, holding the folder's lock
while it lives, and refusing checkpoints written for another spec (each started as the flow
starts it, in a child process)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.models import ModelSettings
from tasks.train import LoraSettings, TrainingError, TrainJob, TrainSettings, run_training
from tasks.train.guard import DIGEST_FILE, FolderLock
from tests.helpers.tiny_models import build_tiny_llama

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    rows = [{"text": f"note {i} about loan {i % 5}", "label": "ab"[i % 2]} for i in range(32)]
    pd.DataFrame(rows).to_parquet(root / "train.parquet")
    pd.DataFrame(rows[:8]).to_parquet(root / "val.parquet")
    return root, build_tiny_llama(root / "llama", [r["text"] for r in rows], hidden_size=16)


def _job(data, out_dir: Path, **train) -> TrainJob:
    root, model = data
    return TrainJob(
        train_path=root / "train.parquet",
        val_path=root / "val.parquet",
        labels=["a", "b"],
        model=ModelSettings(base_model=str(model), max_length=16),
        lora=LoraSettings(r=2),
        train=TrainSettings(batch_size=4, **train),
        out_dir=out_dir,
    )


def _alive(pid: int) -> bool:
    """Any thread of the process still running: a leader thread that exited shows as a zombie
    while other threads (and the process's open files) live on."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _holder(out: Path) -> int | None:
    """The worker's pid, as the folder lock names it once the worker started."""
    try:
        return int((out / "train.lock").read_text().strip())
    except (OSError, ValueError):
        return None


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _note_parent(out: Path, name: str, parents: dict, stop: threading.Event) -> None:
    """Record the parent of the worker the folder lock names, as soon as it is named."""
    while not stop.is_set():
        pid = _holder(out)
        if pid is not None and pid != os.getpid():
            with contextlib.suppress(OSError):  # between start and exit: try again
                parents[name] = _parent_of(pid)
                return
        time.sleep(0.01)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    return not _alive(pid)


@pytest.mark.parametrize("preload", [False, True], ids=["fresh", "forked"])
def test_the_worker_dies_with_a_killed_parent_and_frees_the_folder(data, tmp_path, preload):
    out = tmp_path / "train"
    spec = tmp_path / "job.json"
    spec.write_text(_job(data, out, epochs=500, resume=False).model_dump_json())
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from tasks.train import TrainJob, run_training; "
         "run_training(TrainJob.model_validate_json(open(sys.argv[1]).read()), "
         f"preload={preload})", str(spec)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    worker = None
    while time.monotonic() < deadline and parent.poll() is None:
        worker = _holder(out)
        if worker not in (None, parent.pid) and (out / "history.jsonl").is_file():
            break  # the worker is training
        time.sleep(0.2)
    assert parent.poll() is None and worker not in (None, parent.pid), "the worker never trained"
    with pytest.raises(TrainingError, match=f"pid {worker}"):  # a retry cannot start beside it
        FolderLock(out).acquire()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone = _wait_gone(worker, 20)
    if not gone:
        os.kill(worker, signal.SIGKILL)
    assert gone, "the training worker outlived its killed parent"
    deadline = time.monotonic() + 10  # the kernel closes a dying process's files as it exits
    while True:
        try:
            FolderLock(out).acquire().release()  # the lock went with it
            break
        except TrainingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_forked_worker_trains_exactly_as_a_fresh_one(data, tmp_path):
    """`search.preload_workers`: the same job in a fresh interpreter (a child of this process)
    and forked from the preloaded forkserver (not a child of this process): the same steps,
    losses and adapter bytes, the log in worker.log."""
    results, parents = {}, {}
    for preload in (False, True, True):  # the second fork comes from the warm server
        name = f"{'forked' if preload else 'fresh'}-{len(results)}"
        out = tmp_path / name
        stop = threading.Event()
        watcher = threading.Thread(target=_note_parent, args=(out, name, parents, stop))
        watcher.start()
        try:  # long enough (20 epochs, no early stop) for the watcher to see the worker live
            job = _job(data, out, epochs=20, early_stopping_patience=100)
            results[name] = (run_training(job, preload=preload), out)
        finally:
            stop.set()
            watcher.join()
    (fresh, fresh_out), *forked = results.values()
    assert parents["fresh-0"] == os.getpid()
    assert parents["forked-1"] != os.getpid() and parents["forked-2"] == parents["forked-1"]
    weights = (fresh_out / "model" / "adapter_model.safetensors").read_bytes()
    for result, out in forked:
        assert result.steps == fresh.steps and result.final_train_loss == fresh.final_train_loss
        assert result.best_metric == fresh.best_metric
        assert (out / "model" / "adapter_model.safetensors").read_bytes() == weights
        assert "train_runtime" in (out / "worker.log").read_text()


@pytest.mark.parametrize("preload", [False, True], ids=["fresh", "forked"])
def test_an_interrupted_parent_kills_its_worker_and_frees_the_folder(data, tmp_path, preload):
    out = tmp_path / "train"
    seen: list[int] = []

    def interrupt(step, values):  # noqa: ANN001 - the first logged step: a cancelled task
        seen.append(_holder(out) or 0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(_job(data, out, epochs=500, resume=False), sink=interrupt, preload=preload)
    assert seen and seen[0] != os.getpid()
    assert _wait_gone(seen[0], 10), "the worker outlived the interrupted parent"
    FolderLock(out).acquire().release()  # free at once: the worker was killed and reaped


def test_a_resume_from_another_specs_checkpoints_is_refused(data, tmp_path):
    out = tmp_path / "train"
    checkpoint = out / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    written_for = {"digest": "0" * 64, "spec": {"train.learning_rate": 0.1}}
    (out / "checkpoints" / DIGEST_FILE).write_text(json.dumps(written_for))
    with pytest.raises(TrainingError, match=r"train.resume: .* different training spec"):
        run_training(_job(data, out))
    assert checkpoint.is_dir()  # refused, not deleted
