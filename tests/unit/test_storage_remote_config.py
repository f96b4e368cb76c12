"""The shared store (`storage.url`) on a plain folder, and the config rule that ties it to
`train.work_pool`."""

from __future__ import annotations

import pytest

from flows.config import ConfigError, load_config
from flows.train_remote import deployment_name
from tasks.storage import StorageError, join, pull, push

pytestmark = pytest.mark.unit


def test_push_and_pull_a_folder_and_a_file(tmp_path):
    src = tmp_path / "out"
    (src / "model" / "sub").mkdir(parents=True)
    (src / "model" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    (src / "history.json").write_text("[1]")
    url = join(f"file://{tmp_path}/store/", "/runs/", "r1")
    assert url == f"file://{tmp_path}/store/runs/r1"
    push(src, url)
    back = pull(url, tmp_path / "back")
    assert (back / "model" / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    assert pull(join(url, "history.json"), tmp_path / "h.json").read_text() == "[1]"


def test_pull_of_nothing_names_the_setting(tmp_path):
    with pytest.raises(StorageError, match="storage.url"):
        pull(f"{tmp_path}/missing", tmp_path / "x")


def test_work_pool_needs_a_store(demo_subset):
    data_path, _ = demo_subset
    base = [f"data.path={data_path}", "train.work_pool=gpu"]
    with pytest.raises(ConfigError, match=r"^storage.url: required when train.work_pool is set"):
        load_config(None, base)
    config = load_config(None, [*base, "storage.url=s3://bucket/tunegate"])
    assert config.train.work_pool == "gpu" and config.storage.url == "s3://bucket/tunegate"
    assert deployment_name(config.train.work_pool) == "train-remote/gpu"
