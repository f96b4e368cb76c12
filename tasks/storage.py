"""The shared artifact store: where data and adapters travel between work pools.

When training runs on another machine (`train.work_pool`), nothing can move through the local disk:
the CPU pool pushes the training and validation splits to `storage.url`, the GPU pool pulls them,
trains, and pushes the adapter folder back. Any fsspec URL works: `s3://bucket/tunegate` (MinIO,
S3; needs `s3fs`, credentials and endpoint from the usual AWS environment variables), `gs://...`,
or a folder every worker mounts (`/mnt/shared/tunegate`, `file:///...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StorageSettings(BaseModel):
    """A store every worker can reach."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="fsspec URL shared by all workers (s3://bucket/tunegate or a mounted folder); "
        "required when train.work_pool is set.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options, e.g. {client_kwargs: {endpoint_url: ...}}; "
        "keep credentials in the environment, not here.",
    )


class StorageError(Exception):
    """The store cannot be reached or a path is missing; the message names `storage.url`."""


def _fs(url: str, options: dict[str, Any]):  # noqa: ANN202 - fsspec filesystem
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"storage.url '{url}': {exc}") from None


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def push(local: Path, url: str, options: dict[str, Any] | None = None) -> str:
    """Copy a file, or a folder's files (recursively), to `url`; return `url`."""
    fs, root = _fs(url, options or {})
    local = Path(local)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    if not files:
        raise StorageError(f"nothing to push at {local}")
    for path in files:
        target = root if local.is_file() else join(root, path.relative_to(local).as_posix())
        parent = target.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(path), target)
    return url


def pull(url: str, local: Path, options: dict[str, Any] | None = None) -> Path:
    """Copy a file or a folder from `url` to `local`; return `local`."""
    fs, root = _fs(url, options or {})
    local = Path(local)
    if fs.isfile(root):
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(root, str(local))
        return local
    found = fs.find(root)
    if not found:
        raise StorageError(f"storage.url: nothing at {url}")
    prefix = root.rstrip("/") + "/"
    for remote in found:
        target = local / remote.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    return local
