"""`tunegate monitor`: one run of the monitor flow (the `monitor` deployment runs it hourly)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunegate.commands.common import CLIError, config_options


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "monitor",
        help="measure the champion's live traffic once; alarm (and roll back) on a breach",
        parents=[config_options("YAML config file (its mlflow, feedback, monitor sections)")],
    )
    cmd.add_argument("--summary-json", type=Path, help="write a machine-readable summary here")
    cmd.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Exit 0 when the run completed, alarm or not (the alarm is the event, not the exit code)."""
    from flows.config import ConfigError
    from flows.monitor import load_monitor_config, monitor

    try:
        config = load_monitor_config(args.config, args.set)
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}", 2) from None
    state = monitor(config, return_state=True)
    if not state.is_completed():
        raise CLIError(f"monitor failed: {state.message}", 1)
    summary = state.result()
    print(render_summary(summary))
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(summary.model_dump_json(indent=1))
    return 0


def render_summary(summary) -> str:  # noqa: ANN001 - MonitorSummary
    lines = ["", "tunegate monitor", "================"]
    champion = f"v{summary.champion}" if summary.champion else "(no champion)"
    lines.append(f"model            {summary.model} {champion}")
    if summary.since is not None:
        lines.append(
            f"window           {summary.since:%Y-%m-%d %H:%M:%S} .. {summary.until:%H:%M:%S} UTC"
        )
    lines += [f"  {k:<18} {v:.4g}" for k, v in summary.numbers.items()]
    lines += [f"  - {r}" for r in summary.reasons]
    lines.append(summary.note)
    if summary.rolled_back_to:
        lines.append(f"champion         rolled back to v{summary.rolled_back_to}")
    if summary.mlflow_run_id:
        lines.append(f"mlflow run       {summary.mlflow_run_id}")
    return "\n".join(lines)
