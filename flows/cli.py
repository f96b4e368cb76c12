"""The `tunegate` command line.

    tunegate run --config FILE [--set key=value ...] [--summary-json PATH]
    tunegate augment IN OUT [--config FILE] [--set key=value ...] [--held-out FILE ...]
    tunegate demo-data [--kind loans|notes|intents] [--out PATH] [--rows N] [--seed S]
    tunegate validate DATA [--config FILE] [--set key=value ...] [--summary-json PATH] [--out DIR]
    tunegate scrub IN OUT [--config FILE]
    tunegate serve|deploy --config FILE [--set key=value ...] [--prefect-file YAML]
    tunegate webhook [--config FILE] [--set key=value ...] [--host H] [--port P]
    tunegate promote VERSION [--force] [--config FILE] [--set key=value ...]
    tunegate rollback [--config FILE] [--set key=value ...]
    tunegate models [--config FILE] [--set key=value ...]

Exit status: 0 when the flow completed (promoted or not), 1 when it failed, 2 when the config or
the data file is refused before any work starts (one line on stderr, no traceback). The registry
commands exit 2 when the request is refused (a version that did not pass its gate without
`--force`, nothing to roll back to, an unknown version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
}


def _fail(message: str, code: int) -> int:
    print(f"tunegate: {message}", file=sys.stderr)
    return code


def _preflight(config) -> str | None:  # noqa: ANN001 - RetrainConfig
    """Read the data files once before the flow starts: unreadable input is refused here."""
    from tasks.load import DataReadError, read_records
    from tasks.validate import ValidationFailed, check_columns

    for key, path in (("data.path", config.data.path), ("data.test_path", config.data.test_path)):
        if path is None:
            continue
        try:
            check_columns(read_records(path).frame, config.data)
        except (DataReadError, ValidationFailed) as exc:
            return f"{key}: {exc}"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from flows.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)
    problem = _preflight(config)
    if problem:
        return _fail(f"data error: {problem}", 2)

    from flows.retrain import retrain

    state = retrain(config, return_state=True)
    if not state.is_completed():
        return _fail(f"retrain failed: {state.message}", 1)
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


# demo-data --kind: (default file, default rows) of each built-in data set
DEMO_SETS = {
    "loans": ("data/loan_applications.jsonl", 3000),  # classification, `make demo`
    "notes": ("data/support_notes.jsonl", 2000),  # generation, configs/summarization-gpu.yaml
    "intents": ("data/intents.jsonl", 20000),  # 40-class intents, benchmarks/defaults_check.py
}


def demo_rows(kind: str, n: int, seed: int) -> list[dict]:
    if kind == "notes":
        from flows.tiny_models import summarization_rows

        return [
            {"ticket": f"T-{i:05d}", "note": r["text"], "summary": r["target"]}
            for i, r in enumerate(summarization_rows(n, seed=seed))
        ]
    if kind == "intents":
        from flows.intent_data import generate_intents

        return generate_intents(n=n, seed=seed)
    from flows.demo_data import generate

    return generate(n=n, seed=seed)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from flows.demo_data import write_jsonl

    out, rows_default = DEMO_SETS[args.kind]
    rows = demo_rows(args.kind, args.rows or rows_default, args.seed)
    write_jsonl(rows, Path(args.out or out))
    print(f"wrote {len(rows)} rows to {args.out or out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate one file: exit 0 passed, 1 validation failed, 2 file or config refused."""
    from flows.config import ConfigError, load_config
    from tasks.load import DataReadError, read_records
    from tasks.pii import write_quarantine
    from tasks.validate import ValidationFailed, validate_records, write_report

    try:
        config = load_config(args.config, [*args.set, f"data.path={args.data}"])
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)
    try:
        loaded = read_records(config.data.path)
    except DataReadError as exc:
        return _fail(f"data error: {exc}", 2)
    out_dir = Path(args.out)
    try:
        report = validate_records(
            loaded, config.data, config.validate_, out_dir if config.validate_.data_docs else None
        )
    except ValidationFailed as exc:
        return _fail(f"data error: {exc}", 2)
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
    import yaml
    from pydantic import ValidationError

    from tasks.load import DataReadError, detect_format
    from tasks.pii import PIISettings, scrub_file

    raw: dict = {}
    if args.config is not None:
        if not Path(args.config).is_file():
            return _fail(f"config error: --config: file not found: {args.config}", 2)
        try:
            raw = yaml.safe_load(Path(args.config).read_text()) or {}
        except yaml.YAMLError:
            return _fail(f"config error: {args.config}: not valid YAML", 2)
    try:
        settings = PIISettings.model_validate(raw.get("pii") or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return _fail(f"config error: pii.{where}: {err['msg'].removeprefix('Value error, ')}", 2)
    try:
        detect_format(Path(args.out))
        audit = scrub_file(Path(args.input), Path(args.out), settings)
    except DataReadError as exc:
        return _fail(f"data error: {exc}", 2)
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


def cmd_augment(args: argparse.Namespace) -> int:
    """Augment one training file alone, with the `augment` (and `model`) sections of a config."""
    import tempfile

    import yaml
    from pydantic import ValidationError

    from flows.config import ConfigError, apply_overrides
    from tasks.augment import AugmentError, AugmentSettings, augment_file
    from tasks.evaluate import read_table
    from tasks.models import ModelSettings

    raw: dict = {}
    try:
        if args.config is not None:
            if not args.config.is_file():
                return _fail(f"config error: --config: file not found: {args.config}", 2)
            raw = yaml.safe_load(args.config.read_text()) or {}
        raw = apply_overrides(raw, args.set)
        settings = AugmentSettings.model_validate(raw.get("augment") or {})
        model = ModelSettings.model_validate(raw.get("model") or {})
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()
        return _fail(f"config error: augment/model: {' '.join(first[:3])}", 2)
    data = raw.get("data") or {}
    text_col, label_col = data.get("text_column", "text"), data.get("label_column", "label")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, path in enumerate([args.input, *args.held_out]):
            try:
                frame = read_table(path)
            except (OSError, ValueError) as exc:
                return _fail(f"data error: {str(exc).splitlines()[0]}", 2)
            frame = frame.rename(columns={text_col: "text", label_col: "label"})
            missing = (
                {"text", "label"} - set(frame.columns) if i == 0 else {"text"} - set(frame.columns)
            )
            if missing:
                return _fail(
                    f"data error: {path}: no column {sorted(missing)}; set data.text_column / "
                    "data.label_column in --config",
                    2,
                )
            frame = frame.dropna(subset=["text"]).assign(text=lambda f: f["text"].astype(str))
            paths.append(Path(tmp) / f"{i}.parquet")
            frame.to_parquet(paths[-1], index=False)
        out = Path(args.output)
        target = out if out.suffix.lower() == ".parquet" else Path(tmp) / "out.parquet"
        try:
            result = augment_file(paths[0], settings, target, paths[1:], model.base_model)
        except AugmentError as exc:
            return _fail(f"config error: {exc}", 2)
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


def _load(args: argparse.Namespace):  # noqa: ANN202 - RetrainConfig or an exit code
    from flows.config import ConfigError, load_config

    try:
        return load_config(args.config, args.set)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)


def _deployment_specs(args: argparse.Namespace):  # noqa: ANN202 - specs or an exit code
    from deployments.deploy import PREFECT_YAML, load_specs

    args.prefect_file = args.prefect_file or PREFECT_YAML
    if not args.prefect_file.is_file():
        return _fail(f"--prefect-file: file not found: {args.prefect_file}", 2)
    try:
        return load_specs(args.prefect_file)
    except Exception as exc:  # noqa: BLE001 - any parse problem is a refused input
        return _fail(f"{args.prefect_file}: {str(exc).splitlines()[0]}", 2)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if isinstance(config, int):
        return config
    specs = _deployment_specs(args)
    if isinstance(specs, int):
        return specs
    from deployments.deploy import serve_deployments

    serve_deployments(config, specs)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    config = _load(args)
    if isinstance(config, int):
        return config
    specs = _deployment_specs(args)
    if isinstance(specs, int):
        return specs
    from deployments.deploy import apply_deployments

    for name in apply_deployments(config, specs):
        print(f"deployed {name}")
    pools = sorted({s.work_pool.get("name", "tunegate-process") for s in specs})
    print("start a worker: " + "; ".join(f"prefect worker start --pool {p}" for p in pools))
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    # The edge: the secret and the Prefect API address are read from the environment here only.
    secret = os.environ.get("TUNEGATE_WEBHOOK_SECRET", "")
    if not secret:
        return _fail(
            "TUNEGATE_WEBHOOK_SECRET is not set: export a shared secret before starting the webhook",
            2,
        )
    overrides = list(args.set)
    if args.host:
        overrides.append(f"webhook.host={args.host}")
    if args.port:
        overrides.append(f"webhook.port={args.port}")
    args.set = overrides
    config = _load(args)
    if isinstance(config, int):
        return config
    api_url = config.webhook.prefect_api_url
    if api_url is None:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value() or None
    from deployments.webhook import serve_webhook

    serve_webhook(config, secret, api_url)
    return 0


def _registry(args: argparse.Namespace):  # noqa: ANN202 - (settings, MlflowClient) or exit code
    from flows.config import ConfigError, load_mlflow_settings
    from tasks.registry import open_tracking

    try:
        settings = load_mlflow_settings(args.config, args.set)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", 2)
    return settings, open_tracking(settings)


def cmd_promote(args: argparse.Namespace) -> int:
    from tasks.registry import LockUnavailable, RegistryError, promote_version

    opened = _registry(args)
    if isinstance(opened, int):
        return opened
    settings, client = opened
    name = settings.registered_model
    try:
        outcome = promote_version(
            client, name, str(args.version), None, check_expected=False, force=args.force, by="cli"
        )
    except LockUnavailable as exc:
        return _fail(str(exc), 1)
    except RegistryError as exc:
        return _fail(str(exc), 2)
    print(f"{name}: {outcome.note}")
    if outcome.promoted or outcome.champion == outcome.version:
        return 0
    return 2


def cmd_rollback(args: argparse.Namespace) -> int:
    from tasks.registry import LockUnavailable, RegistryError, rollback_champion

    opened = _registry(args)
    if isinstance(opened, int):
        return opened
    settings, client = opened
    try:
        outcome = rollback_champion(client, settings.registered_model)
    except LockUnavailable as exc:
        return _fail(str(exc), 1)
    except RegistryError as exc:
        return _fail(str(exc), 2)
    after = f"; previous-champion is now v{outcome.previous_champion}"
    print(
        f"{settings.registered_model}: {outcome.note}"
        + (after if outcome.previous_champion else "")
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tasks.registry import list_versions, render_table

    opened = _registry(args)
    if isinstance(opened, int):
        return opened
    settings, client = opened
    rows = list_versions(client, settings.registered_model)
    if not rows:
        print(f"no versions of {settings.registered_model} in {settings.tracking_uri}")
        return 0
    print(f"{settings.registered_model} ({settings.tracking_uri})")
    print(render_table(rows))
    return 0


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (its mlflow section)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the retrain flow")
    run.add_argument("--config", type=Path, help="YAML config file")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    run.add_argument("--summary-json", type=Path, help="write a machine-readable summary here")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="validate a data file and quarantine bad rows")
    validate.add_argument("data", type=Path, help="JSONL, CSV or Parquet file")
    validate.add_argument("--config", type=Path, help="YAML config file (data.path is DATA)")
    validate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    validate.add_argument("--summary-json", type=Path, help="write the summary here")
    validate.add_argument(
        "--out", type=Path, default=Path(".tunegate/validate"), help="report, quarantine, docs"
    )
    validate.set_defaults(func=cmd_validate)

    scrub = sub.add_parser("scrub", help="scrub PII from a file and print the audit")
    scrub.add_argument("input", type=Path, help="JSONL, CSV or Parquet file")
    scrub.add_argument("out", type=Path, help="output file; its suffix picks the format")
    scrub.add_argument("--config", type=Path, help="YAML config file (its pii section)")
    scrub.set_defaults(func=cmd_scrub)

    aug = sub.add_parser("augment", help="augment a training file (the augment stage alone)")
    aug.add_argument("input", type=Path, metavar="IN", help="training rows: .parquet/.jsonl/.csv")
    aug.add_argument("output", type=Path, metavar="OUT", help="augmented rows, with `source`")
    aug.add_argument("--config", type=Path, help="YAML config (its augment/model/data sections)")
    aug.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
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
        help="loans: loan reviews (classification, the demo); notes: support notes -> "
        "summaries (generation); intents: 40 banking intents",
    )
    demo.add_argument("--out", default=None, help="file to write (default: data/<kind file>)")
    demo.add_argument("--rows", type=int, default=None, help="rows (default per kind)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo_data)

    for name, func, text in (
        ("serve", cmd_serve, "serve the retrain deployments of prefect.yaml from this process"),
        ("deploy", cmd_deploy, "register the retrain deployments on their process work pool"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, required=True, help="YAML config file")
        cmd.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
        )
        cmd.add_argument(
            "--prefect-file", type=Path, help="deployments file (default: deployments/prefect.yaml)"
        )
        cmd.set_defaults(func=func)

    hook = sub.add_parser("webhook", help="receive signed feedback batches (POST /feedback)")
    hook.add_argument("--config", type=Path, help="YAML config file")
    hook.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    hook.add_argument("--host", help="interface (default: webhook.host)")
    hook.add_argument("--port", type=int, help="port (default: webhook.port)")
    hook.set_defaults(func=cmd_webhook)

    promote = sub.add_parser("promote", help="move the champion alias to a registered version")
    promote.add_argument("version", help="registered model version, e.g. 3")
    promote.add_argument(
        "--force", action="store_true", help="promote even if the version failed its gate"
    )
    _config_options(promote)
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="champion back to the previous champion")
    _config_options(rollback)
    rollback.set_defaults(func=cmd_rollback)

    models = sub.add_parser("models", help="registered versions, aliases and headline metrics")
    _config_options(models)
    models.set_defaults(func=cmd_models)
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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
