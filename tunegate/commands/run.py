"""`tunegate run`: the retrain flow end to end, and its summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tunegate.commands.common import CLIError, config_options, load

if TYPE_CHECKING:
    from flows.config import RetrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the retrain flow", parents=[config_options()])
    run.add_argument("--summary-json", type=Path, help="write a machine-readable summary here")
    run.set_defaults(func=cmd_run)


def _preflight(config: RetrainConfig) -> None:
    """Read the data files once before the flow starts: unreadable input is refused here."""
    from tasks.load import DataReadError, read_records
    from tasks.pii.salt import MissingSalt, require_salt
    from tasks.validate import ValidationFailed, check_columns

    try:
        require_salt(config.pii)
    except MissingSalt as exc:
        raise CLIError(f"config error: {exc}", 2) from None
    from prefect.settings import PREFECT_API_URL

    from flows.approval import ApprovalRefused, require_approver

    try:  # before any work: a run nobody can approve would train, then wait for nothing
        require_approver(config.gate, PREFECT_API_URL.value() or None)
    except ApprovalRefused as exc:
        raise CLIError(f"config error: {exc}", 2) from None

    for key, path in (("data.path", config.data.path), ("data.test_path", config.data.test_path)):
        if path is None:
            continue
        try:
            check_columns(read_records(path).frame, config.data)
        except (DataReadError, ValidationFailed) as exc:
            raise CLIError(f"data error: {key}: {exc}", 2) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    _preflight(config)

    from flows.retrain import retrain

    state = retrain(config, return_state=True)
    if not state.is_completed():
        raise CLIError(f"retrain failed: {state.message}", 1)
    summary = state.result()
    print(render_summary(summary))
    print(f"final state: {state.name}")
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary.model_dump(), indent=1))
    return 0


# (metric key, title) shown per system when present: classification, then generation.
SUMMARY_METRICS = (
    ("f1_macro", "macro-F1"),
    ("accuracy", "accuracy"),
    ("robust_f1_macro", "robust macro-F1"),
    ("rouge1", "ROUGE-1"),
    ("rougeL", "ROUGE-L"),
)


def render_summary(summary) -> str:  # noqa: ANN001 - RetrainSummary
    m = summary.metrics
    lines = ["", "tunegate retrain summary", "========================"]
    lines.append(f"dataset version  {summary.dataset_version}")
    lines.append("rows             " + ", ".join(f"{k}={v}" for k, v in summary.rows.items()))
    for name in ("candidate", "baseline", "champion"):
        values = m.get(name)
        if values is None:
            lines.append(f"{name:<16} (none)")
        else:
            shown = [
                f"{title} {values[key]:.4f}" for key, title in SUMMARY_METRICS if key in values
            ]
            if "latency_p95_s" in values:
                shown.append(f"p95 {values['latency_p95_s'] * 1000:.0f} ms")
            lines.append(f"{name:<16} " + "  ".join(shown))
    if summary.gate.get("champion_version"):
        lines.append(f"compared against  champion v{summary.gate['champion_version']}")
    else:
        lines.append("compared against  baseline only (no champion yet)")
    lines.append("gate             " + ("PASSED" if summary.gate["passed"] else "FAILED"))
    lines += [f"  - {r}" for r in summary.gate["reasons"]]
    model = summary.model
    lines.append(
        f"model            {model['name']} v{model['version']} aliases={model['aliases']} ({model['note']})"
    )
    timings = getattr(summary, "timings", None) or {}
    if timings:
        lines.append("timings (s)      " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    lines.append(f"mlflow run       {summary.mlflow_run_id}")
    lines.append(f"run files        {summary.run_dir}")
    lines.append("")
    uri = summary.tracking_uri
    if uri.startswith("sqlite:///"):
        lines.append(
            f"MLflow UI:  mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)"
        )
    else:
        lines.append(f"MLflow UI:  {uri}")
    lines.append(
        "Prefect UI: prefect server start   (then http://127.0.0.1:4200; same local database)"
    )
    return "\n".join(lines)
