"""The training worker's life is tied to its parent's: killed with it, holding the folder's lock
while it lives, and refusing checkpoints written for another spec (each started as the flow
starts it, in a child process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def _child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def test_the_worker_dies_with_a_killed_parent_and_frees_the_folder(data, tmp_path):
    out = tmp_path / "train"
    spec = tmp_path / "job.json"
    spec.write_text(_job(data, out, epochs=500, resume=False).model_dump_json())
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from tasks.train import TrainJob, run_training; "
         "run_training(TrainJob.model_validate_json(open(sys.argv[1]).read()))", str(spec)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    worker = None
    while time.monotonic() < deadline and parent.poll() is None:
        worker = _child(parent.pid)
        if worker is not None and (out / "history.jsonl").is_file():
            break  # the worker is training
        time.sleep(0.2)
    assert parent.poll() is None and worker is not None, "the worker never trained"
    with pytest.raises(TrainingError, match=f"pid {worker}"):  # a retry cannot start beside it
        FolderLock(out).acquire()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.1)
    gone = not _alive(worker)
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
