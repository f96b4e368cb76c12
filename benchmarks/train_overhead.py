"""Training-stage overhead against a bare transformers Trainer + peft script, and peak memory of
lora / qlora / full fine-tuning, on tiny random Llama models built from a config (no download).

Both sides train the same model on the same data for the same steps, each in its own fresh
process (tunegate's stage always trains in a child; the bare script is run the same way), runs
interleaved, fastest of `--repeats` kept. tunegate also checkpoints, keeps the best evaluation,
streams its logs and writes its history; the bare script only trains, evaluates and saves the
adapter. Memory is the worker process's peak RSS on a larger tiny Llama (generation, 4 layers,
512 wide). Last line: `train_overhead_ratio: <tunegate wall / bare wall>`.

    PYTHONPATH=. python benchmarks/train_overhead.py | tee benchmarks/train_overhead.txt
    PYTHONPATH=. python benchmarks/train_overhead.py --quick   # 1 repeat, few steps, no memory

Each tunegate repeat also reports where its wall time went: the Trainer loop (`result.seconds`:
steps, evaluations, checkpoint writes, logging) and everything outside it (child start and
imports, model load, data, saving the folder). The worker imports neither Prefect nor MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bare_main(spec_path: Path) -> None:
    """The reference: what a person writes by hand with Trainer + peft. No tunegate import."""
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from sklearn.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    spec = json.loads(spec_path.read_text())
    m, lo, tr, labels = spec["model"], spec["lora"], spec["train"], spec["labels"]
    set_seed(tr["seed"])
    tok = AutoTokenizer.from_pretrained(m["base_model"])
    model = AutoModelForSequenceClassification.from_pretrained(
        m["base_model"], num_labels=len(labels)
    )
    model = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lo["r"],
            lora_alpha=lo["alpha"],
            lora_dropout=lo["dropout"],
            target_modules=lo["target_modules"],
        ),
    )
    ids = {label: i for i, label in enumerate(labels)}

    def data(path: str) -> Dataset:
        frame = pd.read_parquet(path)
        ds = Dataset.from_dict({"text": frame["text"].tolist(), "label": frame["label"].map(ids)})
        return ds.map(
            lambda b: tok(b["text"], truncation=True, max_length=m["max_length"]),
            batched=True,
            remove_columns=["text"],
        )

    args = TrainingArguments(
        output_dir=spec["out_dir"] + "/checkpoints",
        num_train_epochs=tr["epochs"],
        learning_rate=tr["learning_rate"],
        per_device_train_batch_size=tr["batch_size"],
        per_device_eval_batch_size=64,
        weight_decay=tr["weight_decay"],
        warmup_steps=tr["warmup_fraction"],
        lr_scheduler_type=tr["lr_scheduler"],
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=tr["logging_steps"],
        seed=tr["seed"],
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data(spec["train_path"]),
        eval_dataset=data(spec["val_path"]),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=lambda p: {
            "f1_macro": f1_score(p[1], np.asarray(p[0]).argmax(-1), average="macro")
        },
    )
    trainer.train()
    trainer.model.save_pretrained(spec["out_dir"] + "/model")
    tok.save_pretrained(spec["out_dir"] + "/model")


def prepare(root: Path, train_rows: int) -> dict:
    import pandas as pd

    from tests.helpers.tiny_models import build_tiny_llama
    from tunegate.demo_data.loans import generate
    from tunegate.demo_data.notes import summarization_rows

    labels = ["low_risk", "medium_risk", "high_risk", "decline"]
    rows = [
        {"text": r["narrative"], "label": r["risk_label"]}
        for r in generate(n=560, seed=11)
        if r["narrative"] and r["risk_label"] in labels
    ]
    pd.DataFrame(rows[:train_rows]).to_parquet(root / "train.parquet")
    pd.DataFrame(rows[448:512]).to_parquet(root / "val.parquet")
    texts = [r["text"] for r in rows]
    classifier = build_tiny_llama(root / "llama-cls", texts, hidden_size=128, layers=4)
    summaries = summarization_rows(160, seed=1)
    pd.DataFrame(summaries[:128]).to_parquet(root / "gen-train.parquet")
    pd.DataFrame(summaries[128:]).to_parquet(root / "gen-val.parquet")
    generator = build_tiny_llama(
        root / "llama-gen", [r["text"] for r in summaries], hidden_size=512, layers=4
    )
    return {"labels": labels, "classifier": classifier, "generator": generator}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunegate-train-overhead"))
    parser.add_argument("--quick", action="store_true", help="proves it runs; figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    if args.bare:
        bare_main(args.bare)
        return

    from tasks.models import ModelSettings
    from tasks.train import LoraSettings, TrainJob, TrainSettings, run_training, write_spec

    root = args.work
    root.mkdir(parents=True, exist_ok=True)
    train_rows = 96 if args.quick else 448
    made = prepare(root, train_rows)
    model = ModelSettings(base_model=str(made["classifier"]), max_length=96)
    lora = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    train = TrainSettings(
        epochs=2, learning_rate=5e-3, batch_size=16, logging_steps=7, seed=0, resume=False
    )
    steps = 2 * (train_rows // 16)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"overhead run: tiny Llama classifier (4 layers, 128 wide), {train_rows} rows, "
          f"{steps} steps, LoRA r=8 q_proj/v_proj, eval each epoch")  # fmt: skip

    walls: dict[str, list[float]] = {"tunegate": [], "bare": []}
    for i in range(args.repeats):
        started = time.perf_counter()
        result = run_training(
            TrainJob(train_path=root / "train.parquet", val_path=root / "val.parquet",
                     labels=made["labels"], model=model, lora=lora, train=train,
                     out_dir=root / f"tunegate-{i}")
        )  # fmt: skip
        walls["tunegate"].append(time.perf_counter() - started)
        assert result.steps == steps, result.steps
        outside = walls["tunegate"][-1] - result.seconds
        print(f"  tunegate {walls['tunegate'][-1]:.1f}s: Trainer loop {result.seconds:.1f}s, "
              f"outside it (child start, imports, load, save) {outside:.1f}s")  # fmt: skip
        spec = write_spec(
            TrainJob(train_path=root / "train.parquet", val_path=root / "val.parquet",
                     labels=made["labels"], model=model, lora=lora, train=train,
                     out_dir=root / f"bare-{i}")
        )  # fmt: skip
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--bare", str(spec)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        walls["bare"].append(time.perf_counter() - started)
        print(f"repeat {i}: tunegate {walls['tunegate'][-1]:.1f}s, bare {walls['bare'][-1]:.1f}s")
    best = {k: min(v) for k, v in walls.items()}
    ratio = best["tunegate"] / best["bare"]
    print(f"fastest wall: tunegate {best['tunegate']:.1f}s, bare Trainer+peft {best['bare']:.1f}s")

    if args.quick:
        print(f"train_overhead_ratio: {ratio:.3f}")
        return
    print(
        "peak RSS of the training process, tiny Llama 4 layers x 512 wide (generation, 16 steps):"
    )
    gen_model = ModelSettings(
        base_model=str(made["generator"]), task="generation", max_length=48, max_new_tokens=4
    )
    for method in ("lora", "qlora", "full"):
        result = run_training(
            TrainJob(train_path=root / "gen-train.parquet", val_path=root / "gen-val.parquet",
                     model=gen_model, lora=LoraSettings(r=8, alpha=16),
                     train=TrainSettings(method=method, epochs=2, batch_size=16,
                                         learning_rate=1e-3, generation_eval_samples=4,
                                         resume=False),
                     out_dir=root / f"mem-{method}")
        )  # fmt: skip
        print(
            f"  {method:5s}: peak RSS {result.peak_rss_mb:.0f} MB, {result.seconds:.1f}s training"
        )
    print(f"train_overhead_ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
