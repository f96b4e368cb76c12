"""The feedback store's commands: `feedback list` shows every batch with its state,
`feedback exclude BATCH` takes one out of every later run.

    tunegate feedback list [--json] [--config FILE] [--set key=value ...]
    tunegate feedback exclude BATCH [--reason TEXT] [--config FILE] [--set key=value ...]

States: pending (no finished run included it yet), included (in run X), quarantined (most of
its rows were quarantined: the reason says why), excluded (by an operator). Only pending and
included batches are read by a retrain. The listing shows ids, counts, runs and reasons, never
a row.
"""

from __future__ import annotations

import argparse
import json
import time

from tunegate.commands.common import CLIError, config_options, load_part


def register(sub: argparse._SubParsersAction) -> None:
    feedback = sub.add_parser("feedback", help="list feedback batches, exclude one")
    actions = feedback.add_subparsers(dest="feedback_command", required=True)
    config = config_options("YAML config file (its feedback section)")
    listing = actions.add_parser("list", help="every batch with its state", parents=[config])
    listing.add_argument("--json", action="store_true", help="one JSON object per batch")
    listing.set_defaults(func=cmd_feedback_list)
    exclude = actions.add_parser(
        "exclude", help="take a batch out of every later retrain", parents=[config]
    )
    exclude.add_argument("batch", help="batch id, or a unique prefix of 8+ characters")
    exclude.add_argument(
        "--reason", default="excluded by an operator", help="recorded with the decision"
    )
    exclude.set_defaults(func=cmd_feedback_exclude)


def _store(args: argparse.Namespace):  # noqa: ANN202 - a tasks.feedback.FeedbackStore
    from tasks.feedback import FeedbackSettings, FeedbackStore

    settings = load_part(args, "feedback", FeedbackSettings)
    try:
        return FeedbackStore(settings.store)
    except OSError as exc:
        raise CLIError(f"feedback.store: cannot open {settings.store} ({exc})", 2) from None


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def _state(batch) -> str:  # noqa: ANN001 - a tasks.feedback.BatchState
    if batch.state == "included":
        return f"included in run {batch.flow_run} (MLflow {batch.mlflow_run})"
    if batch.state in ("quarantined", "excluded"):
        return f"{batch.state}: {batch.reason}"
    return "pending"


def cmd_feedback_list(args: argparse.Namespace) -> int:
    states = _store(args).states()
    if args.json:
        for batch in states:
            print(json.dumps(batch.model_dump(mode="json")))
        return 0
    if not states:
        print("no feedback batches")
        return 0
    print(f"{'batch':<34}{'rows':>6}  {'received (UTC)':<18}state")
    for batch in states:
        rows = "-" if batch.rows is None else str(batch.rows)
        deleted = " [raw deleted after feedback.retention_days]" if batch.raw_deleted else ""
        print(f"{batch.batch_id:<34}{rows:>6}  {_when(batch.received):<18}{_state(batch)}{deleted}")
    return 0


def cmd_feedback_exclude(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        batch_id = store.exclude_batch(args.batch, args.reason)
    except KeyError as exc:
        raise CLIError(f"feedback exclude: {exc.args[0]}", 2) from None
    print(f"excluded {batch_id}: later retrains do not read it")
    return 0
