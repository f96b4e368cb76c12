"""The `tunegate` command line.

    tunegate run --config FILE [--set key=value ...] [--summary-json PATH]
    tunegate augment IN OUT [--config FILE] [--set key=value ...] [--held-out FILE ...]
    tunegate demo-data [--kind loans|notes|intents] [--out PATH] [--rows N] [--seed S]
    tunegate validate DATA [--config FILE] [--set key=value ...] [--summary-json PATH] [--out DIR]
    tunegate scrub IN OUT [--config FILE] [--set key=value ...]
    tunegate serve|deploy --config FILE [--set key=value ...] [--prefect-file YAML]
    tunegate webhook [--config FILE] [--set key=value ...] [--host H] [--port P]
    tunegate promote VERSION [--force] [--config FILE] [--set key=value ...]
    tunegate rollback [--config FILE] [--set key=value ...]
    tunegate models [--config FILE] [--set key=value ...]
    tunegate monitor [--config FILE] [--set key=value ...] [--summary-json PATH]
    tunegate feedback list|exclude BATCH [--config FILE] [--set key=value ...]
    tunegate review-server [--host H] [--port P] [--data-dir DIR]
    tunegate review --config FILE [--set key=value ...]

Exit status: 0 when the flow completed (promoted or not), 1 when it failed, 2 when the config or
the data file is refused before any work starts (one line on stderr, no traceback). The registry
commands exit 2 when the request is refused (a version that did not pass its gate without
`--force`, nothing to roll back to, an unknown version).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tunegate.commands import data, feedback, monitor, registry, review, run, serve, service
from tunegate.commands.common import CLIError

# Offline and quiet by default: no hub downloads, no telemetry. Set before the libraries load.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    # The first local run migrates a new Prefect database (~/.prefect): over Prefect's 20 s
    # default on 2 loaded cores, so the ephemeral server gets longer to come up.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run.register(sub)
    data.register(sub)  # validate, scrub, augment, demo-data
    service.register(sub)  # serve, deploy, webhook
    registry.register(sub)  # promote, rollback, models
    monitor.register(sub)
    serve.register(sub)  # serve-model
    feedback.register(sub)  # feedback list, feedback exclude
    review.register(sub)  # review-server, review
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # Prefect's cached task results (the data stage is cached) point at files under .tunegate/:
    # keep the records there too, so deleting .tunegate never leaves a record to a missing file.
    os.environ.setdefault(
        "PREFECT_LOCAL_STORAGE_PATH", str(Path(".tunegate/prefect-results").resolve())
    )
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"tunegate: {exc.message}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
