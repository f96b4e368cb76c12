"""The long-running commands: `serve` and `deploy` the retrain deployments of prefect.yaml,
and the feedback `webhook`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tunegate.commands.common import CLIError, config_options, load

if TYPE_CHECKING:
    from deployments.deploy import DeploymentSpec


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("serve", cmd_serve, "serve the retrain deployments of prefect.yaml from this process"),
        ("deploy", cmd_deploy, "register the retrain deployments on their process work pool"),
    ):
        cmd = sub.add_parser(name, help=text, parents=[config_options(required=True)])
        cmd.add_argument(
            "--prefect-file", type=Path, help="deployments file (default: deployments/prefect.yaml)"
        )
        cmd.set_defaults(func=func)

    hook = sub.add_parser(
        "webhook",
        help="receive feedback batches signed with Standard Webhooks (POST /feedback)",
        parents=[config_options()],
    )
    hook.add_argument("--host", help="interface (default: webhook.host)")
    hook.add_argument("--port", type=int, help="port (default: webhook.port)")
    hook.set_defaults(func=cmd_webhook)


def _deployment_specs(args: argparse.Namespace) -> list[DeploymentSpec]:
    from deployments.deploy import PREFECT_YAML, load_specs

    path = args.prefect_file = args.prefect_file or PREFECT_YAML
    if not path.is_file():
        raise CLIError(f"--prefect-file: file not found: {path}", 2)
    try:
        return load_specs(path)
    except Exception as exc:  # noqa: BLE001 - any parse problem is a refused input
        raise CLIError(f"{path}: {str(exc).splitlines()[0]}", 2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.deploy import serve_deployments

    config = load(args)
    serve_deployments(config, _deployment_specs(args))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from deployments.deploy import apply_deployments

    config = load(args)
    specs = _deployment_specs(args)
    for name in apply_deployments(config, specs):
        print(f"deployed {name}")
    pools = sorted({s.work_pool.name for s in specs})
    print("start a worker: " + "; ".join(f"prefect worker start --pool {p}" for p in pools))
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    # The edge: the secret and the Prefect API address are read from the environment here only.
    from deployments.signature import SecretInvalid, check_secret

    secret = os.environ.get("TUNEGATE_WEBHOOK_SECRET", "")
    if not secret:
        raise CLIError(
            "TUNEGATE_WEBHOOK_SECRET is not set: export a Standard Webhooks secret (whsec_...) "
            "before starting the webhook",
            2,
        )
    try:
        check_secret(secret)
    except SecretInvalid as exc:
        raise CLIError(str(exc), 2) from None
    extra = []
    if args.host:
        extra.append(f"webhook.host={args.host}")
    if args.port:
        extra.append(f"webhook.port={args.port}")
    config = load(args, extra)
    api_url = config.webhook.prefect_api_url
    if api_url is None:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value() or None
    from deployments.webhook import serve_webhook

    # Label Studio's answers (POST /label-studio) need the shared token its webhook sends.
    review_token = os.environ.get(config.review.webhook_token_env) or None
    serve_webhook(config, secret, api_url, review_token)
    return 0
