"""Do the training defaults hold on data other than the demo's?

A public-style intent set (`tunegate/demo_data/intents.py`: 40 banking intents, short messages, 2% label
noise) is loaded with only the paths and column names changed from the defaults, validated,
scrubbed and split exactly as the flow does. Then the training stage runs with its defaults, and
with a small manual-tuning grid (learning rate x epochs) whose winner is picked on the
validation split only. Test macro-F1 of both is reported; the test split chooses nothing.

    PYTHONPATH=. python benchmarks/defaults_check.py [--rows N] [--grid-points K] [--out DIR]

Augmentation and adversarial examples are off in every arm (the same data for all; they are
measured by `augmentation_ablation.py`). The last line is `defaults_gap_f1: <x>`, test macro-F1
of the tuned winner minus that of the defaults (<= 0.01 means the defaults are as good).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The manual-tuning grid: learning rates around the usual LoRA range for small encoders, and
# one shorter and one longer schedule. The defaults' own point is reused when it is in the grid.
GRID = [
    {"learning_rate": 1e-3, "epochs": 3},
    {"learning_rate": 3e-4, "epochs": 3},
    {"learning_rate": 3e-3, "epochs": 3},
    {"learning_rate": 1e-3, "epochs": 5},
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000, help="rows generated (40 classes)")
    parser.add_argument("--out", type=Path, default=REPO / ".tunegate" / "defaults_check")
    parser.add_argument(
        "--grid-points", type=int, default=len(GRID), help="use the first N points of GRID"
    )
    args = parser.parse_args()

    from flows.config import load_config
    from tasks.evaluate import evaluate_candidate
    from tasks.load import read_records
    from tasks.pii import scrub_dataset
    from tasks.split import write_splits
    from tasks.train import TrainJob, TrainSettings, run_training
    from tasks.validate import validate_records
    from tunegate.demo_data.intents import generate_intents

    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "intents.jsonl"
    rows = generate_intents(n=args.rows, seed=0)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # only paths and column names differ from the defaults
    config = load_config(
        None,
        [f"data.path={data}", "data.text_column=utterance", "data.label_column=intent"],
    )
    report = validate_records(read_records(config.data.path), config.data, config.validate_)
    scrubbed = scrub_dataset(config.data, report, config.pii, out, "data")
    splits = write_splits(scrubbed.accepted_path, config.split, out)
    labels = report.labels
    print(f"{len(rows)} rows, {len(labels)} classes, splits {splits.sizes}", flush=True)

    defaults = config.train
    print(f"defaults: {json.dumps(defaults.model_dump(mode='json'))}", flush=True)

    def train(name: str, settings: TrainSettings) -> dict:
        folder = out / name
        done = folder / "done.json"
        if done.is_file():  # a rerun after an interruption reuses finished arms
            return json.loads(done.read_text())
        t0 = time.perf_counter()
        result = run_training(
            TrainJob(
                train_path=splits.train_path,
                val_path=splits.val_path,
                labels=labels,
                model=config.model,
                lora=config.lora,
                train=settings,
                out_dir=folder,
            )
        )
        test = evaluate_candidate(result.model_dir, splits.test_path, config.evaluate)
        record = {
            "learning_rate": settings.learning_rate,
            "epochs": settings.epochs,
            "val_f1_macro": result.best_metric,
            "test_f1_macro": test.metrics["f1_macro"],
            "seconds": time.perf_counter() - t0,
        }
        done.write_text(json.dumps(record))
        print(
            f"[{name}] lr {settings.learning_rate:g}, {settings.epochs:g} epochs: val macro-F1 "
            f"{record['val_f1_macro']:.4f}, test macro-F1 {record['test_f1_macro']:.4f}, "
            f"{record['seconds']:.0f}s",
            flush=True,
        )
        return record

    results = {"defaults": train("defaults", defaults)}
    for point in GRID[: args.grid_points]:
        name = f"lr{point['learning_rate']:g}-ep{point['epochs']}"
        if all(getattr(defaults, k) == v for k, v in point.items()):
            results[name] = results["defaults"]
            continue
        results[name] = train(name, defaults.model_copy(update=point))

    tuned_name = max(
        (n for n in results if n != "defaults"), key=lambda n: results[n]["val_f1_macro"]
    )
    tuned = results[tuned_name]
    print()
    print(f"{'arm':<16}{'lr':>8}{'epochs':>8}{'val F1':>9}{'test F1':>9}{'seconds':>9}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['learning_rate']:>8g}{r['epochs']:>8g}{r['val_f1_macro']:>9.4f}"
            f"{r['test_f1_macro']:>9.4f}{r['seconds']:>9.0f}"
        )
    print()
    print(f"tuned winner on validation: {tuned_name}")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"defaults_gap_f1: {tuned['test_f1_macro'] - results['defaults']['test_f1_macro']:.4f}")


if __name__ == "__main__":
    main()
