"""What every subcommand shares: one error type and one way to read the config.

A command raises `CLIError` for any refused input; `tunegate.cli.main` prints it as one line on
stderr (no traceback) and exits with its code, so no command prints its own errors.

The pipeline modules (`flows.config` and below pull in MLflow and Prefect) are imported inside
the functions that need them, as in every command: `main` sets the offline environment first,
and `tunegate --help` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from flows.config import RetrainConfig

S = TypeVar("S", bound=BaseModel)


class CLIError(Exception):
    """A refused command: `message` goes to stderr as `tunegate: <message>`, `code` is the exit."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def config_options(
    config_help: str = "YAML config file", required: bool = False
) -> argparse.ArgumentParser:
    """The `--config` / `--set` options as a parent parser, so every command spells them alike."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", type=Path, required=required, help=config_help)
    parent.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    return parent


def load(args: argparse.Namespace, extra: list[str] | None = None) -> RetrainConfig:
    """The whole config of `--config` + `--set` (+ `extra` overrides), or `CLIError` (exit 2)."""
    from flows.config import ConfigError, load_config

    try:
        return load_config(args.config, [*args.set, *(extra or [])])
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}", 2) from None


def load_parts(args: argparse.Namespace, sections: dict[str, type[BaseModel]]) -> dict:
    """Only `sections` of `--config` + `--set`, for commands that need no data file."""
    from flows.config import ConfigError, load_sections

    try:
        return load_sections(args.config, args.set, sections)
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}", 2) from None


def load_part(args: argparse.Namespace, section: str, model: type[S]) -> S:
    """One section of `--config` + `--set` (see `load_parts`)."""
    return load_parts(args, {section: model})[section]
