"""One live training run per output folder: the lock refuses a second run, and a resume from
checkpoints of a different spec is refused, naming what changed."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.models import ModelSettings
from tasks.train import LoraSettings, TrainingError, TrainJob, TrainSettings, run_training
from tasks.train.guard import DIGEST_FILE, FolderLock, SpecDigest, check_resumable
from tests.helpers.tiny_models import build_tiny_llama

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    rows = [{"text": f"note {i} about a loan", "label": "a" if i % 2 else "b"} for i in range(8)]
    pd.DataFrame(rows).to_parquet(root / "train.parquet")
    pd.DataFrame(rows[:4]).to_parquet(root / "val.parquet")
    return root, build_tiny_llama(root / "llama", [r["text"] for r in rows], hidden_size=16)


def _job(data, out_dir, **train) -> TrainJob:
    root, model = data
    return TrainJob(
        train_path=root / "train.parquet",
        val_path=root / "val.parquet",
        labels=["a", "b"],
        model=ModelSettings(base_model=str(model), max_length=16),
        lora=LoraSettings(r=2),
        train=TrainSettings(**train),
        out_dir=out_dir,
    )


def test_a_second_run_on_a_folder_in_use_refuses_and_leaves_it_alone(data, tmp_path):
    out = tmp_path / "train"
    holder = FolderLock(out).acquire()  # the live worker of an earlier attempt
    (out / "result.json").write_text("{}")
    (out / "checkpoints").mkdir()
    try:
        with pytest.raises(TrainingError, match=r"another training run \(pid \d+\) is using"):
            run_training(_job(data, out, resume=False))
    finally:
        holder.release()
    assert (out / "result.json").read_text() == "{}"  # nothing of the live run was touched
    assert (out / "checkpoints").is_dir()
    FolderLock(out).acquire().release()  # free again once the holder is gone


def test_the_spec_digest_covers_what_changes_training_and_the_data_bytes(data, tmp_path):
    base = SpecDigest.of(_job(data, tmp_path / "a"))
    assert SpecDigest.of(_job(data, tmp_path / "b")).digest == base.digest  # folder: not in it
    same = SpecDigest.of(_job(data, tmp_path / "a", retries=3, logging_steps=1, resume=False))
    assert same.digest == base.digest
    changed = SpecDigest.of(_job(data, tmp_path / "a", learning_rate=5e-3, batch_size=4))
    assert changed.changed(base) == ["train.batch_size", "train.learning_rate"]
    root, _ = data
    copy = tmp_path / "train.parquet"
    frame = pd.read_parquet(root / "train.parquet")
    frame.loc[0, "text"] = "another note"
    frame.to_parquet(copy)
    other_data = _job(data, tmp_path / "a").model_copy(update={"train_path": copy})
    assert SpecDigest.of(other_data).changed(base) == ["data.train_sha256"]


def test_resume_refuses_checkpoints_of_another_spec(data, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    job = _job(data, tmp_path)
    check_resumable(job, checkpoints, resume=None)  # a fresh start records the spec
    assert (checkpoints / DIGEST_FILE).is_file()
    check_resumable(job, checkpoints, resume=checkpoints / "checkpoint-4")  # same spec: resumes
    changed = _job(data, tmp_path, learning_rate=5e-3)
    with pytest.raises(TrainingError, match=r"different training spec \(changed: train.learn"):
        check_resumable(changed, checkpoints, resume=checkpoints / "checkpoint-4")
    (checkpoints / DIGEST_FILE).unlink()
    with pytest.raises(TrainingError, match="no record of the training spec"):
        check_resumable(job, checkpoints, resume=checkpoints / "checkpoint-4")
