"""The data commands: `validate`, `scrub` and `augment` run one stage alone on a file;
`demo-data` writes a built-in synthetic set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tunegate.commands.common import CLIError, config_options, load, load_part, load_parts
from tunegate.demo_data import DEMO_SETS


class _Columns(BaseModel):
    """The two `data` keys `augment` reads; the rest of the section (data.path...) is not needed."""

    model_config = ConfigDict(extra="ignore")

    text_column: str = "text"
    label_column: str = "label"


def register(sub: argparse._SubParsersAction) -> None:
    validate = sub.add_parser(
        "validate",
        help="validate a data file and quarantine bad rows",
        parents=[config_options("YAML config file (data.path is DATA)")],
    )
    validate.add_argument("data", type=Path, help="JSONL, CSV or Parquet file")
    validate.add_argument("--summary-json", type=Path, help="write the summary here")
    validate.add_argument(
        "--out", type=Path, default=Path(".tunegate/validate"), help="report, quarantine, docs"
    )
    validate.set_defaults(func=cmd_validate)

    scrub = sub.add_parser(
        "scrub",
        help="scrub PII from a file and print the audit",
        parents=[config_options("YAML config file (its pii section)")],
    )
    scrub.add_argument("input", type=Path, help="JSONL, CSV or Parquet file")
    scrub.add_argument("out", type=Path, help="output file; its suffix picks the format")
    scrub.set_defaults(func=cmd_scrub)

    aug = sub.add_parser(
        "augment",
        help="augment a training file (the augment stage alone)",
        parents=[config_options("YAML config (its augment/model/data sections)")],
    )
    aug.add_argument("input", type=Path, metavar="IN", help="training rows: .parquet/.jsonl/.csv")
    aug.add_argument("output", type=Path, metavar="OUT", help="augmented rows, with `source`")
    aug.add_argument(
        "--held-out",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="val/test rows: augmented near-duplicates of these are dropped (repeatable)",
    )
    aug.set_defaults(func=cmd_augment)

    demo = sub.add_parser("demo-data", help="write a built-in synthetic data set")
    demo.add_argument(
        "--kind",
        choices=sorted(DEMO_SETS),
        default="loans",
        help="loans: loan applications -> risk label (classification, `make demo`); reviews: "
        "loan applications -> review with risk flags, rules and a next step (generation, "
        "`make demo-generate`); intents: 40 banking intents",
    )
    demo.add_argument("--out", default=None, help="file to write (default: data/<kind file>)")
    demo.add_argument("--rows", type=int, default=None, help="rows (default per kind)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo_data)


def demo_rows(kind: str, n: int, seed: int) -> list[dict]:
    """The rows of one built-in set, in the columns its shipped config reads."""
    if kind == "reviews":
        from tunegate.demo_data.reviews import generate_reviews

        return generate_reviews(n=n, seed=seed)
    if kind == "intents":
        from tunegate.demo_data.intents import generate_intents

        return generate_intents(n=n, seed=seed)
    from tunegate.demo_data.loans import generate

    return generate(n=n, seed=seed)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from tunegate.demo_data import DEMO_SETS, write_jsonl

    out, rows_default = DEMO_SETS[args.kind]
    rows = demo_rows(args.kind, args.rows or rows_default, args.seed)
    write_jsonl(rows, Path(args.out or out))
    print(f"wrote {len(rows)} rows to {args.out or out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate one file: exit 0 passed, 1 validation failed, 2 file or config refused."""
    from tasks.load import DataReadError, read_records
    from tasks.pii import write_quarantine
    from tasks.validate import ValidationFailed, validate_records, write_report

    config = load(args, [f"data.path={args.data}"])
    out_dir = Path(args.out)
    try:
        loaded = read_records(config.data.path)
        report = validate_records(
            loaded, config.data, config.validate_, out_dir if config.validate_.data_docs else None
        )
    except (DataReadError, ValidationFailed) as exc:
        raise CLIError(f"data error: {exc}", 2) from None
    write_report(report, out_dir / "validation_report.json")
    quarantine = write_quarantine(
        loaded,
        report.quarantined,
        config.pii,
        out_dir / f"{Path(args.data).stem}_quarantine",
        config.data.path,
    )
    summary = {**report.summary(), "quarantine_file": str(quarantine)}
    print(render_validation(summary))
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary, indent=1))
    return 0 if report.passed else 1


def render_validation(summary: dict) -> str:
    rows = summary["rows"]
    lines = [
        "tunegate validation summary",
        f"result           {'PASSED' if summary['passed'] else 'FAILED'}",
        f"rows             in={rows['in']} accepted={rows['accepted']} "
        f"quarantined={rows['quarantined']}",
    ]
    for reason, count in summary["quarantine_reasons"].items():
        lines.append(f"  {count:>6}  {reason}")
    for failed in summary["failed_expectations"]:
        where = f" on {failed['column']}" if failed.get("column") else ""
        lines.append(
            f"failed           {failed['expectation']}{where}: {failed['unexpected_count']}"
        )
    lines += [f"problem          {p}" for p in summary["problems"]]
    lines.append(f"quarantine file  {summary['quarantine_file']}")
    if summary.get("data_docs"):
        lines.append(f"data docs        {summary['data_docs']}")
    lines.append(f"took             {summary['seconds']:.2f} s")
    return "\n".join(lines)


def cmd_scrub(args: argparse.Namespace) -> int:
    """Scrub every text value of IN into OUT and print the audit (counts only)."""
    from tasks.load import DataReadError, detect_format
    from tasks.pii import PIISettings, scrub_file
    from tasks.pii.salt import MissingSalt

    settings = load_part(args, "pii", PIISettings)
    try:
        detect_format(Path(args.out))
        audit = scrub_file(Path(args.input), Path(args.out), settings)
    except DataReadError as exc:
        raise CLIError(f"data error: {exc}", 2) from None
    except MissingSalt as exc:
        raise CLIError(f"config error: {exc}", 2) from None
    data = audit.as_dict()
    print(
        f"scrubbed {data['records']} records into {args.out} "
        f"({data['records_with_pii']} with PII, {data['records_unreadable']} unreadable skipped)"
    )
    print(f"{'column':<24}{'entity':<24}{'count':>7}")
    for row in audit.table():
        print(f"{row['column']:<24}{row['entity']:<24}{row['count']:>7}")
    if data["residual_hits"]:
        print(f"residual hits (values blanked): {data['residual_hits']}")
    return 0


def _staged_input(path: Path, columns: _Columns, needed: set[str], dest: Path) -> Path:
    """`path` as parquet with the columns renamed to `text` (and `label`), as the stage reads."""
    from tasks.evaluate import read_table

    try:
        frame = read_table(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"data error: {str(exc).splitlines()[0]}", 2) from None
    frame = frame.rename(columns={columns.text_column: "text", columns.label_column: "label"})
    missing = needed - set(frame.columns)
    if missing:
        raise CLIError(
            f"data error: {path}: no column {sorted(missing)}; set data.text_column / "
            "data.label_column in --config",
            2,
        )
    frame = frame.dropna(subset=["text"]).assign(text=lambda f: f["text"].astype(str))
    frame.to_parquet(dest, index=False)
    return dest


def cmd_augment(args: argparse.Namespace) -> int:
    """Augment one training file alone, with the `augment` (and `model`) sections of a config."""
    import tempfile

    from tasks.augment import AugmentError, AugmentSettings, augment_file
    from tasks.models import ModelSettings

    parts = load_parts(args, {"augment": AugmentSettings, "model": ModelSettings, "data": _Columns})
    settings, model, columns = parts["augment"], parts["model"], parts["data"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [
            _staged_input(
                path, columns, {"text", "label"} if i == 0 else {"text"}, Path(tmp) / f"{i}.parquet"
            )
            for i, path in enumerate([args.input, *args.held_out])
        ]
        out = Path(args.output)
        target = out if out.suffix.lower() == ".parquet" else Path(tmp) / "out.parquet"
        try:
            result = augment_file(paths[0], settings, target, paths[1:], model.base_model)
        except AugmentError as exc:
            raise CLIError(f"config error: {exc}", 2) from None
        if target != out:
            import pandas as pd

            augmented = pd.read_parquet(target)
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix.lower() == ".csv":
                augmented.to_csv(out, index=False)
            else:
                augmented.to_json(out, orient="records", lines=True, force_ascii=False)
    print(
        f"wrote {result.rows_original + result.rows_added} rows to {out}: {result.rows_original} "
        f"original + {result.rows_added} augmented "
        + json.dumps(result.per_strategy)
        + f"; {result.near_duplicates_removed} near-duplicates of held-out texts dropped"
        + (f"; skipped {result.skipped_strategies}" if result.skipped_strategies else "")
    )
    return 0
