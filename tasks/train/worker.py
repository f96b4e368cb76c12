"""The training child process: `python -m tasks.train.worker SPEC.json`.

Started by `tasks.train.run_training` (directly, or under `torchrun` / `accelerate launch` for
several processes). It reads the job the parent wrote (the spec is a `TrainJob`'s JSON), trains,
and writes `result.json`; on a failure it writes `error.json` (kind and one-line message) and
exits non-zero, so the parent can fail the task with a clear message while its own memory stays
untouched.

It dies with the parent that started it and holds the output folder's lock while it lives
(`tasks.train.guard`), so a retry never trains beside a worker its killed predecessor left.

`forked_main` is the same body in a process forked from the preloaded forkserver
(`search.preload_workers`, `tasks.train.preload`): it first makes itself what a fresh worker
process would be (its own session, the parent's environment, output to `worker.log`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tasks.models import ModelError
from tasks.train.guard import LOCK_FD_ENV, tie_to_parent, worker_lock
from tasks.train.pruning import PRUNED_EXIT, PRUNED_KIND, TrialPruned
from tasks.train.settings import OOM_HINT, TrainJob


def main(argv: list[str] | None = None) -> int:
    tie_to_parent()  # first: the imports below take seconds
    spec_path = Path((argv or sys.argv[1:])[0])
    job = TrainJob.model_validate_json(spec_path.read_text())
    out_dir = Path(job.out_dir)
    try:
        lock = worker_lock(out_dir)  # noqa: F841 - held until this process exits
    except ModelError as exc:  # the folder is another run's: leave its files alone
        print(f"tunegate training refused: {exc}", file=sys.stderr)
        return 2
    try:
        from tasks.train.fit import fit

        fit(job)
    except TrialPruned as exc:  # the search's pruner stopped it: an expected end
        _error(out_dir, PRUNED_KIND, str(exc))
        return PRUNED_EXIT
    except ModelError as exc:  # TrainingError and every model-loading error: one line
        _error(out_dir, "config", str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent, then re-raised below
        if _is_oom(exc):
            _error(out_dir, "oom", f"out of memory: {OOM_HINT}")
            return 3
        _error(out_dir, "crash", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        raise
    return 0


def forked_main(spec_path: str, log_path: str, env: dict[str, str], lock_fd: int) -> None:
    """`main` in a process forked from the forkserver; exits with `main`'s code.

    `env` is the parent's environment at this trial's start (the forkserver's is from when it
    started), `lock_fd` the folder lock's descriptor, passed over the forkserver's socket.
    """
    os.setsid()  # the parent kills the session, as it does a fresh worker's
    os.environ.clear()
    os.environ.update({**env, LOCK_FD_ENV: str(lock_fd)})
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.exit(main([spec_path]))


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(exc)


def _error(out_dir: Path, kind: str, message: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "error.json").write_text(json.dumps({"kind": kind, "message": message}))
    print(f"tunegate training failed ({kind}): {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
