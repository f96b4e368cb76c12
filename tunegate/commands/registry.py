"""The registry commands: `promote`, `rollback` and `models` on the MLflow registry."""

from __future__ import annotations

import argparse

from tunegate.commands.common import CLIError, config_options, load_part


def register(sub: argparse._SubParsersAction) -> None:
    config = config_options("YAML config file (its mlflow section)")
    promote = sub.add_parser(
        "promote", help="move the champion alias to a registered version", parents=[config]
    )
    promote.add_argument("version", help="registered model version number, e.g. 3")
    promote.add_argument(
        "--force", action="store_true", help="promote even if the version failed its gate"
    )
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser(
        "rollback", help="champion back to the previous champion", parents=[config]
    )
    rollback.set_defaults(func=cmd_rollback)

    models = sub.add_parser(
        "models", help="registered versions, aliases and headline metrics", parents=[config]
    )
    models.set_defaults(func=cmd_models)


def _registry(args: argparse.Namespace) -> tuple:
    """(MLflowSettings, MlflowClient) of `--config` / `--set`'s mlflow section."""
    from tasks.registry import MLflowSettings, open_tracking

    settings = load_part(args, "mlflow", MLflowSettings)
    return settings, open_tracking(settings)


def cmd_promote(args: argparse.Namespace) -> int:
    from tasks.registry import LockUnavailable, RegistryError, canonical_version, promote_version

    try:  # before any store is opened: " 3", "03" and "+3" are v3; "v3" or "3.0" are refused
        version = canonical_version(args.version)
    except RegistryError as exc:
        raise CLIError(str(exc), 2) from None
    settings, client = _registry(args)
    name = settings.registered_model
    try:
        outcome = promote_version(
            client, name, version, None, check_expected=False, force=args.force, by="cli"
        )
    except LockUnavailable as exc:
        raise CLIError(str(exc), 1) from None
    except RegistryError as exc:
        raise CLIError(str(exc), 2) from None
    print(f"{name}: {outcome.note}")
    if outcome.promoted or outcome.champion == outcome.version:
        return 0
    return 2


def cmd_rollback(args: argparse.Namespace) -> int:
    from tasks.registry import LockUnavailable, RegistryError, rollback_champion

    settings, client = _registry(args)
    try:
        outcome = rollback_champion(client, settings.registered_model)
    except LockUnavailable as exc:
        raise CLIError(str(exc), 1) from None
    except RegistryError as exc:
        raise CLIError(str(exc), 2) from None
    after = f"; previous-champion is now v{outcome.previous_champion}"
    print(
        f"{settings.registered_model}: {outcome.note}"
        + (after if outcome.previous_champion else "")
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tasks.registry import list_versions, render_table

    settings, client = _registry(args)
    rows = list_versions(client, settings.registered_model)
    if not rows:
        print(f"no versions of {settings.registered_model} in {settings.tracking_uri}")
        return 0
    print(f"{settings.registered_model} ({settings.tracking_uri})")
    print(render_table(rows))
    return 0
