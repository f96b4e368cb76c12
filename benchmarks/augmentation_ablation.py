"""Ablation: the demo configuration trained with augmentation off, on, and on + adversarial.

One run, same data, same splits, same training settings (read from `configs/demo.yaml` and the
settings models' defaults). Reports validation and clean test macro-F1 and robust macro-F1 on a
robustness slice: every test example's hardest label-preserving perturbation, found by greedy
search against the `off` model (standing in for the current champion, as in the flow). The
adversarial training rows are found the same way on the training split.

    PYTHONPATH=. python benchmarks/augmentation_ablation.py [--rows N] [--out DIR]

Writes `benchmarks/augmentation_ablation.png`; the last line is `robust_f1_gain: <x>`, robust
macro-F1 of on+adversarial minus that of augmentation on.
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
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--rows", type=int, default=None, help="use the first N data lines only")
    parser.add_argument("--out", type=Path, default=REPO / ".tunegate" / "ablation")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()

    import pandas as pd

    from flows.config import load_config
    from tasks.adversarial import AdversarialResult, build_adversarial, robust_metrics
    from tasks.augment import augment_file
    from tasks.evaluate import evaluate_predictions
    from tasks.load import read_records
    from tasks.models import TextClassifier
    from tasks.pii import scrub_dataset
    from tasks.split import write_splits
    from tasks.train import TrainJob, run_training
    from tasks.validate import validate_records

    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, args.set)
    if args.rows:
        lines = Path(config.data.path).read_text().splitlines()[: args.rows]
        subset = out / "data.jsonl"
        subset.write_text("\n".join(lines) + "\n")
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": subset})})
    print(f"config {args.config.name}; train settings {config.train.model_dump()}", flush=True)

    report = validate_records(read_records(config.data.path), config.data, config.validate_)
    scrubbed = scrub_dataset(config.data, report, config.pii, out, "data")
    splits = write_splits(scrubbed.accepted_path, config.split, out)
    labels = report.labels
    print(f"splits {splits.sizes}", flush=True)

    augmented = augment_file(
        splits.train_path,
        config.augment,
        out / "on" / "train.parquet",
        [splits.val_path, splits.test_path],
        config.model.base_model,
    )
    print(
        f"augmentation: +{augmented.rows_added} rows {augmented.per_strategy}, "
        f"{augmented.near_duplicates_removed} near-duplicates of val/test dropped",
        flush=True,
    )

    def train(name: str, train_path: Path) -> tuple[Path, float, float]:
        t0 = time.perf_counter()
        rows = len(pd.read_parquet(train_path))
        done = out / name / "done.json"
        if done.is_file():  # a rerun after an interruption reuses finished arms
            best = json.loads(done.read_text())["best_val_f1"]
            print(f"[{name}] reused the model trained earlier in {out}", flush=True)
            return out / name / "model", best, float(rows)
        result = run_training(
            TrainJob(
                train_path=train_path,
                val_path=splits.val_path,
                labels=labels,
                model=config.model,
                lora=config.lora,
                train=config.train,
                out_dir=out / name,
            )
        )
        done.write_text(json.dumps({"best_val_f1": result.best_metric}))
        print(
            f"[{name}] trained on {rows} rows, {result.epochs_run:.1f} epochs, "
            f"best val macro-F1 {result.best_metric:.4f}, {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        return result.model_dir, result.best_metric, float(rows)

    results: dict[str, dict[str, float]] = {}
    off_dir, off_val, off_rows = train("off", splits.train_path)
    reference = TextClassifier(off_dir)
    t0 = time.perf_counter()
    saved = out / "adversarial" / "result.json"
    if saved.is_file():
        adversarial = AdversarialResult.model_validate_json(saved.read_text())
    else:
        adversarial = build_adversarial(
            augmented.train_path,
            splits.test_path,
            reference,
            "off model (as champion)",
            config.adversarial,
            out / "adversarial",
            config.model.base_model,
        )
        saved.write_text(adversarial.model_dump_json())
    print(
        f"adversarial search against the off model: {adversarial.train_flipped}/"
        f"{adversarial.train_attacked} training rows flipped (added), "
        f"{adversarial.test_flipped}/{adversarial.test_attacked} test rows flipped, "
        f"operations {adversarial.per_operation}, {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    on_dir, on_val, on_rows = train("on", augmented.train_path)
    adv_dir, adv_val, adv_rows = train("on+adversarial", adversarial.train_path)

    for name, model_dir, val_f1, rows in (
        ("off", off_dir, off_val, off_rows),
        ("on", on_dir, on_val, on_rows),
        ("on+adversarial", adv_dir, adv_val, adv_rows),
    ):
        classifier = reference if name == "off" else TextClassifier(model_dir)
        clean = evaluate_predictions(classifier.predict, splits.test_path, labels)
        robust = robust_metrics(classifier.predict, adversarial.robust_test_path, labels)
        results[name] = {
            "train_rows": rows,
            "val_f1_macro": val_f1,
            "test_f1_macro": clean.metrics["f1_macro"],
            "test_accuracy": clean.metrics["accuracy"],
            "robust_f1_macro": robust["robust_f1_macro"],
            "robust_accuracy": robust["robust_accuracy"],
        }

    print()
    print(f"test rows {splits.sizes['test']}, robustness slice {adversarial.test_attacked} rows")
    header = f"{'arm':<16}{'rows':>7}{'val F1':>9}{'clean F1':>10}{'clean acc':>11}"
    print(header + f"{'robust F1':>11}{'robust acc':>12}")
    for name, m in results.items():
        print(
            f"{name:<16}{int(m['train_rows']):>7}{m['val_f1_macro']:>9.4f}"
            f"{m['test_f1_macro']:>10.4f}{m['test_accuracy']:>11.4f}"
            f"{m['robust_f1_macro']:>11.4f}{m['robust_accuracy']:>12.4f}"
        )
    clean_delta = results["on"]["test_f1_macro"] - results["off"]["test_f1_macro"]
    gain = results["on+adversarial"]["robust_f1_macro"] - results["on"]["robust_f1_macro"]
    print()
    print(f"clean F1 change from augmentation (on - off): {clean_delta:+.4f} (limit -0.01)")
    print(
        "clean F1 change from adversarial training (on+adv - on): "
        f"{results['on+adversarial']['test_f1_macro'] - results['on']['test_f1_macro']:+.4f}"
    )
    print(
        f"robust F1 change vs off (on+adv - off): "
        f"{results['on+adversarial']['robust_f1_macro'] - results['off']['robust_f1_macro']:+.4f}"
    )
    print(f"wall time {time.perf_counter() - started:.0f}s")
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    _plot(results, REPO / "benchmarks" / "augmentation_ablation.png")
    print(f"robust_f1_gain: {gain:.4f}")


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for offset, key, label in (
        (-0.2, "test_f1_macro", "clean test macro-F1"),
        (0.2, "robust_f1_macro", "robust macro-F1"),
    ):
        values = [results[n][key] for n in names]
        bars = ax.bar(x + offset, values, 0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("macro-F1")
    ax.set_title("Augmentation ablation (demo configuration)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
