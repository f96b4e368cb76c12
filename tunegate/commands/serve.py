"""`tunegate serve-model`: the HTTP server for the registered model behind an alias."""

from __future__ import annotations

import argparse
import os

from tunegate.commands.common import CLIError, config_options


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "serve-model",
        help="serve models:/<mlflow.registered_model>@<serving.alias> over HTTP "
        "(MLflow scoring protocol, /v1/predict, /v1/feedback, /metrics)",
        parents=[config_options("YAML config file (the same as for `tunegate run`)")],
    )
    cmd.add_argument("--host", help="interface (default: serving.host)")
    cmd.add_argument("--port", type=int, help="port (default: serving.port)")
    cmd.set_defaults(func=cmd_serve_model)


def cmd_serve_model(args: argparse.Namespace) -> int:
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning between batches,
    # so the request threads get the cores (a setting already in the environment wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from deployments.model_server import load_serve_config, serve_model
    from flows.config import ConfigError

    extra = []
    if args.host:
        extra.append(f"serving.host={args.host}")
    if args.port:
        extra.append(f"serving.port={args.port}")
    try:
        config = load_serve_config(args.config, [*args.set, *extra])
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}", 2) from None
    # The edge: the Prefect API address is read from the environment here only.
    api_url = config.serving.prefect_api_url
    if api_url is None:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value() or None
    serve_model(config, api_url)
    return 0
