"""The review queue: `review-server` starts Label Studio, `review` runs the review flow once.

    tunegate review-server [--host H] [--port P] [--data-dir DIR]
    tunegate review [--config FILE] [--set key=value ...]

Label Studio lives in its own virtual environment (`make labelstudio` -> `.venv-labelstudio`;
it pins too much to share tunegate's), found at `$TUNEGATE_LABEL_STUDIO` or `.venv-labelstudio`.
The admin user and its API token come from the environment (`LABEL_STUDIO_USERNAME`,
`LABEL_STUDIO_PASSWORD`, `LABEL_STUDIO_USER_TOKEN`), never from the command line, where `ps`
would show them. SQLite under `--data-dir` by default; the compose stack runs it on Postgres.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tunegate.commands.common import CLIError, config_options

LS_ENV = ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN")
DEFAULT_VENV = Path(".venv-labelstudio")
DB_FILE = "label_studio.sqlite3"


def register(sub: argparse._SubParsersAction) -> None:
    server = sub.add_parser(
        "review-server", help="start Label Studio (the review queue) with a known admin and token"
    )
    server.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    server.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    server.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".tunegate/label-studio"),
        help="Label Studio's SQLite database and media (default: .tunegate/label-studio)",
    )
    server.add_argument(
        "--ssrf-protection",
        action="store_true",
        help="keep Label Studio's block on webhooks to private addresses (then the tunegate "
        "webhook must be on a public address)",
    )
    server.set_defaults(func=cmd_review_server)

    review = sub.add_parser(
        "review",
        help="select examples for people to check and import them into Label Studio",
        parents=[config_options(required=True)],
    )
    review.set_defaults(func=cmd_review)


def label_studio_bin() -> Path:
    """The `label-studio` executable of its own environment."""
    root = Path(os.environ.get("TUNEGATE_LABEL_STUDIO") or DEFAULT_VENV)
    exe = root / "bin" / "label-studio"
    if not exe.is_file():
        raise CLIError(
            f"Label Studio not found at {exe}: run `make labelstudio` (or set "
            "TUNEGATE_LABEL_STUDIO to a virtual environment with label-studio 1.23.2)",
            2,
        )
    return exe


def server_env(data_dir: Path, ssrf_protection: bool, base: dict[str, str]) -> dict[str, str]:
    """Label Studio's environment: the admin from `base`, the legacy token scheme on (the token
    set by LABEL_STUDIO_USER_TOKEN is a legacy token), no telemetry, and webhooks allowed to
    reach the tunegate webhook on a private address unless `ssrf_protection`."""
    missing = [name for name in LS_ENV if not base.get(name)]
    if missing:
        raise CLIError(
            f"{', '.join(missing)} not set: export the admin's email, password and API token "
            "(at least 6 characters) before starting the review server",
            2,
        )
    if len(base["LABEL_STUDIO_USER_TOKEN"]) < 6:
        raise CLIError("LABEL_STUDIO_USER_TOKEN: at least 6 characters", 2)
    return {
        **base,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SSRF_PROTECTION_ENABLED": "true" if ssrf_protection else "false",
        "WEBHOOK_TIMEOUT": base.get("WEBHOOK_TIMEOUT", "10"),
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
    }


def seed_database(exe: Path, data_dir: Path) -> bool:
    """Copy the migrated empty database `make labelstudio` leaves in the environment into a
    new data dir (a first start then skips minutes of migrations); False when none was copied."""
    import shutil

    template = exe.parent.parent / "template" / DB_FILE
    target = data_dir / DB_FILE
    if target.exists() or not template.is_file():
        return False
    shutil.copyfile(template, target)
    os.chmod(target, 0o600)
    return True


def cmd_review_server(args: argparse.Namespace) -> int:
    exe = label_studio_bin()
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed_database(exe, data_dir)
    env = server_env(data_dir, args.ssrf_protection, dict(os.environ))
    argv = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        args.host,
        "--port",
        str(args.port),
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    print(
        f"Label Studio on http://{args.host}:{args.port} (data {data_dir}); "
        f"admin {env['LABEL_STUDIO_USERNAME']}; API token from LABEL_STUDIO_USER_TOKEN",
        flush=True,
    )
    sys.stdout.flush()
    os.execve(str(exe), argv, env)  # replaces this process: signals reach Label Studio itself
    return 0  # pragma: no cover


def cmd_review(args: argparse.Namespace) -> int:
    import json

    from flows.config import ConfigError
    from flows.review import load_review_config, review

    try:
        config = load_review_config(args.config, args.set)
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}", 2) from None
    if config.review.url is None:
        raise CLIError(
            "review.url: not set; the Label Studio address, e.g. http://127.0.0.1:8080", 2
        )
    summary = review(config)
    print(json.dumps(summary.model_dump(mode="json"), indent=2))
    return 0
