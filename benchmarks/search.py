"""Does pruning pay? The same 12 TPE trials with and without pruning, then the defaults.

The 40-intent set (`tunegate demo-data --kind intents`, `tunegate/demo_data/intents.py`) is
validated, scrubbed and split as the flow does, then SUBSAMPLED (a random sample of each split,
sizes printed) so the whole script fits ~6 minutes on 2 idle cores. Three arms on the same splits;
the two studies go through the search stage itself (`flows.search.run_search`: Prefect tasks,
nested MLflow runs, worker-side pruning, the shipped `search.*` defaults), each in a process of
its own with its own temporary Prefect backend, as each retrain is one flow run, so each pays its
own start-up (the forkserver its trial workers fork from, `search.preload_workers`); they share
one MLflow store and Optuna storage:

1. unpruned: `search.pruner=none`, TPE, `--trials` trials over SPACE (below);
2. pruned: `search.pruner=median` at its shipped defaults (`search.startup_trials` 2,
   `search.warmup_evals` 1), the unpruned study's very parameter sets queued in the same order,
   so the only difference is that hopeless trials stop early;
3. defaults: one ordinary training run with the shipped `train.*` / `lora.*` defaults.

For each: wall time, best validation macro-F1, and the test macro-F1 of the selected adapter.
Then a replay of the median pruner over the unpruned study's validation curves for other
`search.startup_trials` / `search.warmup_evals`: which trials each would stop, the evaluations it
would run, and whether it keeps the best validation trial (validation data only).
Last line: `search_wall_ratio: <pruned wall / unpruned wall>` (goal <= 0.6, with the pruned study's
best test macro-F1 not more than 0.005 below the unpruned one's; printed as a check line).

Sizes and space. These were chosen for wall time alone (nothing here was picked by looking at
a test figure; the studies select on the validation split only, and the test split is only
reported). A trial's fixed cost (worker start, model load, adapter save: ~1.5 s with a preloaded
worker, ~8 s without) is paid pruned or not, so the training part must be large enough for
pruning to pay, yet 24 trials must fit the time box:

- 200 training rows (5 per class), 120 validation rows, 400 test rows, `model.max_length` 24 (the
  utterances are short: the longest of 2,000 is 24 tokens, so none is cut);
- SPACE is the shipped LoRA space (`tasks/search/settings.py`) with two changes: `train.epochs`
  2-4 instead of 2-6 (time), and `train.batch_size` fixed at its default 16, because the pruner
  compares trials at the same evaluation index and with `train.checkpoint_steps` set that index
  means the same number of examples seen only at one batch size;
- `train.checkpoint_steps` 5: an evaluation every 80 examples (13 steps an epoch), so the pruner
  sees the validation metric 5-11 times a trial; `train.early_stopping_patience` 6 (about two
  epochs of evaluations, as the default 2 means with one evaluation an epoch).

    PYTHONPATH=. python benchmarks/search.py               # the full run (~6 min on 2 idle cores)
    PYTHONPATH=. python benchmarks/search.py --rows 1200 --trials 4 --train-rows 120 \
        --val-rows 60 --test-rows 120                        # a proof that it runs (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(key, value)

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# The shipped LoRA space, epochs 2-4 and batch size fixed at 16 (see the docstring for why).
SPACE = {
    "train.learning_rate": {"type": "float", "low": 2e-4, "high": 4e-3, "log": True},
    "train.epochs": {"type": "int", "low": 2, "high": 4},
    "lora.r": {"type": "categorical", "choices": [4, 8, 16, 32]},
    "lora.alpha": {"type": "categorical", "choices": [8, 16, 32, 64]},
    "train.warmup_fraction": {"type": "float", "low": 0.0, "high": 0.2},
}


def _subsample(path: Path, n: int, out: Path, seed: int) -> Path:
    import pandas as pd

    frame = pd.read_parquet(path)
    frame.sample(n=min(n, len(frame)), random_state=seed).to_parquet(out)
    return out


def prepare(args: argparse.Namespace, out: Path) -> dict:
    """The data the three arms share: validated, scrubbed, split and subsampled; `prepared.json`."""
    from flows.config import load_config
    from tasks.load import read_records
    from tasks.pii import scrub_dataset
    from tasks.split import write_splits
    from tasks.validate import validate_records
    from tunegate.demo_data.intents import generate_intents

    data = out / "intents.jsonl"
    rows = generate_intents(n=args.rows, seed=0)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [
        f"data.path={data}",
        "data.text_column=utterance",
        "data.label_column=intent",
        f"model.max_length={args.max_length}",
        f"train.checkpoint_steps={args.eval_steps}",
        "train.early_stopping_patience=6",
        f"mlflow.tracking_uri=sqlite:///{out}/mlflow/mlflow.db",
        f"mlflow.artifact_location={out}/mlflow/artifacts",
        f"work_dir={out}/runs",
        "search.enabled=true",
        f"search.trials={args.trials}",
        f"search.space={json.dumps(SPACE)}",
    ]
    config = load_config(None, base)
    report = validate_records(read_records(config.data.path), config.data, config.validate_)
    scrubbed = scrub_dataset(config.data, report, config.pii, out, "data")
    splits = write_splits(scrubbed.accepted_path, config.split, out)
    prepared = {
        "base": base,
        "labels": report.labels,
        "dataset_version": splits.dataset_version,
        "train": str(_subsample(splits.train_path, args.train_rows, out / "train_sub.parquet", 1)),
        "val": str(_subsample(splits.val_path, args.val_rows, out / "val_sub.parquet", 2)),
        "test": str(_subsample(splits.test_path, args.test_rows, out / "test_sub.parquet", 3)),
    }
    (out / "prepared.json").write_text(json.dumps(prepared, indent=1))
    print(
        f"{len(rows)} intent rows, {len(report.labels)} classes, splits {splits.sizes}; SUBSAMPLED "
        f"to train {args.train_rows}, val {args.val_rows}, test {args.test_rows} "
        f"(model.max_length {args.max_length}, evaluation every {args.eval_steps} steps) so "
        f"{2 * args.trials} trials fit the time box",
        flush=True,
    )
    return prepared


def job_for(prepared: dict, cfg, out_dir: Path):  # noqa: ANN001, ANN201
    from tasks.train import TrainJob

    return TrainJob(
        train_path=prepared["train"],
        val_path=prepared["val"],
        labels=prepared["labels"],
        model=cfg.model,
        lora=cfg.lora,
        train=cfg.train,
        out_dir=out_dir,
    )


def run_arm(out: Path, name: str) -> None:
    """One study in this process and its own Prefect backend: `arm-<name>.json`."""
    from prefect import flow, get_run_logger
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.config import load_config
    from flows.search import run_search
    from tasks.registry import open_tracking, start_run
    from tasks.search import open_study, storage_url, study_name

    prepared = json.loads((out / "prepared.json").read_text())
    pruner = "none" if name == "unpruned" else "median"
    cfg = load_config(None, [*prepared["base"], f"search.pruner={pruner}"])
    if name == "pruned":  # the unpruned study's parameter sets, in the same order
        unpruned = json.loads((out / "arm-unpruned.json").read_text())
        url = storage_url(cfg.search, cfg.mlflow.tracking_uri, cfg.work_dir)
        source = open_study(cfg.search, url, unpruned["study_name"])
        target = open_study(cfg.search, url, study_name(prepared["dataset_version"], cfg.flat()))
        for trial in sorted(source.trials, key=lambda t: t.number):
            target.enqueue_trial(trial.params)

    @flow(name="search-benchmark")
    def search_arm() -> dict:
        tracker = start_run(open_tracking(cfg.mlflow), cfg.mlflow, {"benchmark": name})
        run_dir = out / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        trained = run_search(
            cfg,
            job_for(prepared, cfg, out / name),
            tracker,
            prepared["dataset_version"],
            run_dir,
            get_run_logger(),
        )
        seconds = time.perf_counter() - t0
        summary = json.loads((run_dir / "search" / "search.json").read_text())
        return {"model_dir": str(trained.model_dir), "seconds": seconds, **summary}

    with (
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: out / f"prefect-storage-{name}"}),
        prefect_test_harness(server_startup_timeout=600),
    ):
        result = search_arm()
    (out / f"arm-{name}.json").write_text(json.dumps(result, indent=1))


def replay_pruner(out: Path, study: str) -> list[str]:
    """The median pruner replayed over the unpruned study's validation curves (no training):
    which trials each (startup_trials, warmup_evals) would stop and what it would keep."""
    import optuna

    from flows.config import load_config
    from tasks.search import storage_url
    from tasks.train.pruning import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prepared = json.loads((out / "prepared.json").read_text())
    cfg = load_config(None, prepared["base"])
    url = storage_url(cfg.search, cfg.mlflow.tracking_uri, cfg.work_dir)
    trials = sorted(optuna.load_study(study_name=study, storage=url).trials, key=lambda t: t.number)
    best = max(trials, key=lambda t: (t.value, -t.number)).number
    total = sum(len(t.intermediate_values) for t in trials)
    lines = [
        f"median pruner replayed on the unpruned study's validation curves "
        f"(best validation trial {best}; {total} evaluations unpruned):",
        f"{'startup':>9}{'warmup':>8}{'evals run':>11}  {'keeps best':<11}pruned trials",
    ]
    for startup in (1, 2, 3):
        for warmup in (0, 1, 2, 3):
            replay = optuna.create_study(
                direction="maximize", pruner=make_pruner("median", startup, warmup)
            )
            evaluations = 0
            for source in trials:
                trial = replay.ask()
                for step, value in sorted(source.intermediate_values.items()):
                    evaluations += 1
                    trial.report(value, step)
                    if trial.should_prune():
                        replay.tell(trial, state=optuna.trial.TrialState.PRUNED)
                        break
                else:
                    replay.tell(trial, source.value)
            pruned = [t.number for t in replay.trials if t.state.name == "PRUNED"]
            shipped = " (shipped)" if (startup, warmup) == (2, 1) else ""
            lines.append(
                f"{startup:>9}{warmup:>8}{evaluations:>11}  "
                f"{'yes' if replay.best_trial.number == best else 'NO':<11}{pruned}{shipped}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4000, help="intent rows generated")
    parser.add_argument("--train-rows", type=int, default=200, help="training subsample")
    parser.add_argument("--val-rows", type=int, default=120, help="validation subsample")
    parser.add_argument("--test-rows", type=int, default=400, help="test subsample")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-length", type=int, default=24, help="model.max_length")
    parser.add_argument(
        "--eval-steps", type=int, default=5, help="train.checkpoint_steps (evaluation interval)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the files here")
    parser.add_argument("--arm", choices=["unpruned", "pruned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tunegate-search-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.arm:  # a child of the run below
        run_arm(out, args.arm)
        return

    prepared = prepare(args, out)
    results: dict[str, dict] = {}
    for name in ("unpruned", "pruned"):
        subprocess.run(
            [sys.executable, __file__, "--arm", name, "--out", str(out)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        results[name] = json.loads((out / f"arm-{name}.json").read_text())

    from flows.config import load_config
    from tasks.evaluate import evaluate_candidate
    from tasks.train import run_training

    t0 = time.perf_counter()
    defaults_cfg = load_config(None, prepared["base"][:4])  # data + model only
    defaults = run_training(job_for(prepared, defaults_cfg, out / "defaults"))
    results["defaults"] = {
        "model_dir": str(defaults.model_dir),
        "seconds": time.perf_counter() - t0,
        "best_validation_metric": defaults.best_metric,
        "trials_run": 1,
        "pruned": 0,
    }
    for r in results.values():
        r["test_f1_macro"] = evaluate_candidate(
            Path(r["model_dir"]), Path(prepared["test"]), defaults_cfg.evaluate
        ).metrics["f1_macro"]

    print()
    print(f"{'arm':<10}{'trials':>7}{'pruned':>7}{'wall s':>9}{'best val F1':>13}{'test F1':>9}")
    for name, r in results.items():
        print(
            f"{name:<10}{r['trials_run']:>7}{r['pruned']:>7}{r['seconds']:>9.0f}"
            f"{r['best_validation_metric']:>13.4f}{r['test_f1_macro']:>9.4f}"
        )
    for name in ("unpruned", "pruned"):
        print(f"{name} best params: {json.dumps(results[name]['best_params'])}")
    print()
    print("\n".join(replay_pruner(out, results["unpruned"]["study_name"])))
    print()
    gap = results["pruned"]["test_f1_macro"] - results["unpruned"]["test_f1_macro"]
    ratio = results["pruned"]["seconds"] / results["unpruned"]["seconds"]
    print(
        f"pruned minus unpruned best test macro-F1: {gap:+.4f} "
        f"({'PASS' if gap >= -0.005 else 'FAIL'}: goal not more than 0.005 below)"
    )
    print(f"wall-time ratio {ratio:.3f} ({'PASS' if ratio <= 0.6 else 'FAIL'}: goal <= 0.6)")
    print(f"total wall time of this script: {time.perf_counter() - T0:.0f} s")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"search_wall_ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
