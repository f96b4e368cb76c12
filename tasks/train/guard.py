"""One live training run per output folder, tied to the process that started it.

A retry of the training task resumes in the same folder as the attempt before it. Three things
keep the two from overlapping or mixing:

- `FolderLock`: `out_dir/train.lock`, an exclusive `flock` taken by the parent before it touches
  the folder and inherited by the worker (the lock belongs to the open file, so it lives as long
  as the worker does, even when the parent is killed). A second run on the folder refuses at once
  with the holder's pid; the kernel drops the lock when the holder dies, however it dies.
- `tie_to_parent`: the worker dies with its parent (Linux `PR_SET_PDEATHSIG`, plus a watchdog
  thread polling the parent's pid for launchers such as torchrun that sit between the two), so a
  killed flow does not leave a worker holding the GPU and writing checkpoints.
- `SpecDigest`: a digest of what decides the trajectory (model, adapter, optimisation settings,
  labels, and the bytes of the data files), written beside the checkpoints when a run starts
  fresh; a resume from checkpoints of a different spec is refused, naming the changed keys.

The parent passes its pid and the lock's descriptor to the worker in the environment
(`PARENT_PID_ENV`, `LOCK_FD_ENV`); a worker started by hand takes the lock itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tasks.train.settings import TrainingError, TrainJob

LOCK_FILE = "train.lock"
DIGEST_FILE = "spec-digest.json"
PARENT_PID_ENV = "TUNEGATE_TRAIN_PARENT_PID"
LOCK_FD_ENV = "TUNEGATE_TRAIN_LOCK_FD"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_INTERVAL_S = 0.5

# Settings that change how a run is driven, not what it computes: a resume may change them.
NOT_IN_DIGEST = {"retries", "work_pool", "resume", "keep_checkpoints", "logging_steps"}


class FolderLock:
    """An exclusive, non-blocking `flock` on `out_dir/train.lock`; the file names the holder."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(
                f"{self.path.parent}: another training run (pid {holder}) is using this output "
                "folder; wait for it to finish or stop it, or train into another folder"
            ) from None
        self.fd = fd
        self.record_holder(os.getpid())
        return self

    def record_holder(self, pid: int) -> None:
        """The pid a refused run names: the parent's until it has started the worker."""
        assert self.fd is not None, "acquire the lock first"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # a worker that inherited the descriptor keeps the lock
            self.fd = None


class PassedFd:
    """A descriptor sent with a forked worker's arguments (`multiprocessing.reduction.DupFd`:
    SCM_RIGHTS over the forkserver's socket). The worker receives the same open file, so the
    `flock` on it is shared, as it is with a descriptor a spawned worker inherits."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        from multiprocessing import reduction

        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup: Any) -> int:  # noqa: ANN401 - a multiprocessing DupFd
    return dup.detach()


def worker_lock(out_dir: Path) -> FolderLock | None:
    """In the worker: nothing when the lock came from the parent, else take it (rank 0 only, as
    the processes of one torchrun share the folder)."""
    if os.environ.get(LOCK_FD_ENV) or os.environ.get("RANK", "0") != "0":
        return None
    return FolderLock(out_dir).acquire()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), so a reused pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"  # no /proc (macOS): existence only
    return stat.rsplit(")", 1)[1].split()[19]


def _parent_gone(pid: int) -> None:
    print(
        f"tunegate training: the process that started this run (pid {pid}) is gone; stopping",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def tie_to_parent() -> threading.Thread | None:
    """Make this worker die with the parent that started it; None when started by hand."""
    value = os.environ.get(PARENT_PID_ENV)
    if not value:
        return None
    parent = int(value)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # for the direct parent
    started = _start_time(parent)
    if started is None or (os.getppid() == 1 and parent != 1):
        _parent_gone(parent)  # it died before the signal was armed

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if _start_time(parent) != started:
                _parent_gone(parent)

    thread = threading.Thread(target=watch, name="tunegate-parent-watchdog", daemon=True)
    thread.start()
    return thread


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, out)
    else:
        out[prefix] = value


class SpecDigest:
    """What decides a run's trajectory, flattened to `section.key` -> value, and its sha256."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @classmethod
    def of(cls, job: TrainJob) -> SpecDigest:
        train = job.train.model_dump(mode="json", exclude=NOT_IN_DIGEST)
        flat: dict[str, Any] = {}
        _flatten(
            "",
            {
                "model": job.model.model_dump(mode="json"),
                "lora": job.lora.model_dump(mode="json"),
                "train": train,
            },
            flat,
        )
        flat["labels"] = job.labels
        flat["data.train_sha256"] = _file_digest(job.train_path)
        flat["data.val_sha256"] = _file_digest(job.val_path)
        return cls(flat)

    @classmethod
    def read(cls, checkpoint_dir: Path) -> SpecDigest | None:
        path = Path(checkpoint_dir) / DIGEST_FILE
        if not path.is_file():
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return cls(json.loads(path.read_text())["spec"])
        return None

    def write(self, checkpoint_dir: Path) -> None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint_dir / (DIGEST_FILE + ".tmp")
        tmp.write_text(json.dumps({"digest": self.digest, "spec": self.spec}, indent=1))
        tmp.replace(checkpoint_dir / DIGEST_FILE)

    def changed(self, other: SpecDigest) -> list[str]:
        keys = self.spec.keys() | other.spec.keys()
        return sorted(k for k in keys if self.spec.get(k) != other.spec.get(k))


def check_resumable(job: TrainJob, checkpoint_dir: Path, resume: Path | None) -> None:
    """Refuse to resume checkpoints written for another spec; record the spec of a fresh start.

    Only rank 0 writes the digest (every rank checks it on a resume)."""
    current = SpecDigest.of(job)
    if resume is None:
        if os.environ.get("RANK", "0") == "0":
            current.write(checkpoint_dir)
        return
    stored = SpecDigest.read(checkpoint_dir)
    if stored is not None and stored.digest == current.digest:
        return
    what = (
        "no record of the training spec they were written for"
        if stored is None
        else "a different training spec (changed: " + ", ".join(current.changed(stored)) + ")"
    )
    raise TrainingError(
        f"train.resume: the checkpoints in {checkpoint_dir} have {what}; set train.resume=false "
        "to start over, or train into another folder"
    )
