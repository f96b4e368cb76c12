"""Training-stage overhead against a bare transformers Trainer + peft script on a workload of a few
minutes, and peak memory of lora / qlora / full fine-tuning; tiny random Llama models built from a
config (nothing downloaded).

What each side does, on the same model, data, steps and seed, each in its own fresh process:

- tunegate: `tasks.train.run_training`, as the flow's training stage runs it. The parent writes
  the spec, takes the folder lock and starts the worker (`python -m tasks.train.worker`), then
  forwards its history; the worker ties itself to the parent, digests the spec and data,
  loads the model through tunegate's loader, trains with the Trainer, streams every log line
  to `history.jsonl`, evaluates and checkpoints once per epoch, keeps the best checkpoint by
  macro-F1, and writes `model/` (adapter, tokenizer, model card, labels), `history.json` and
  `result.json`.
- bare: the script a person writes by hand (`bare_main`, no tunegate import), started the same
  way as a child process: Trainer + peft with the same evaluation and checkpoint cadence (once per
  epoch, 2 checkpoints kept, the best by macro-F1 loaded at the end, the same early-stopping
  callback) and the adapter and tokenizer saved at the end.

So the two differ only in what tunegate adds around the Trainer. Before timing, one throwaway
process imports both stacks (page cache, bytecode), and repeats alternate which side goes
first: with one repeat the tunegate side always went first and alone met a cold start, the
likeliest reading of the earlier 1.22 (idle) and 2.03 (under load) ratios, since a cProfile of
both workers at 256 rows differs by about 1% of wall time (README "Training"). The default workload (a
4-layer, 256-wide Llama classifier, 1536 rows x 3 epochs = 288 steps) took 44-49 s a side on 2 idle
cores (2026-12-03, `--repeats 2`, 4.3 min in all; the two repeats of one side differed by up to
5 s, more than the sides differ). Timing figures are only meaningful on an otherwise idle machine.

    PYTHONPATH=. python benchmarks/train_overhead.py | tee benchmarks/train_overhead.txt
    PYTHONPATH=. python benchmarks/train_overhead.py --quick     # proves it runs; ~1 min
    PYTHONPATH=. python benchmarks/train_overhead.py --profile   # cProfile of both workers

`--profile` runs each side's worker once under cProfile and prints where its time went (process
start, imports, model load, data, Trainer set-up, steps, evaluation, checkpoint writes, loading
the best model, logging, saving): shares are valid on a loaded machine, seconds are not.
Last line: `train_overhead_ratio: <tunegate wall / bare wall>` (`--profile`:
`train_overhead_profile_outside_steps_share: <tunegate's share of wall outside train steps>`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# rows, epochs, model shape and max_length of each size
SIZES = {
    "full": {"rows": 1536, "epochs": 3, "hidden": 256, "layers": 4, "max_length": 128},
    "quick": {"rows": 96, "epochs": 2, "hidden": 64, "layers": 2, "max_length": 64},
}
VAL_ROWS = 128
BATCH = 16


def bare_main(spec_path: Path) -> None:
    """The reference: what a person writes by hand with Trainer + peft. No tunegate import."""
    started = time.perf_counter()
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from sklearn.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
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
    model.config.pad_token_id = tok.pad_token_id
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
        save_strategy="epoch",
        save_total_limit=tr["keep_checkpoints"],
        load_best_model_at_end=True,
        metric_for_best_model="f1_macro",
        greater_is_better=True,
        logging_steps=tr["logging_steps"],
        seed=tr["seed"],
        data_seed=tr["seed"],
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
        callbacks=[EarlyStoppingCallback(early_stopping_patience=tr["early_stopping_patience"])],
    )
    loop_started = time.perf_counter()
    output = trainer.train()
    loop = time.perf_counter() - loop_started
    trainer.model.save_pretrained(spec["out_dir"] + "/model")
    tok.save_pretrained(spec["out_dir"] + "/model")
    Path(spec["out_dir"], "bare.json").write_text(
        json.dumps(
            {
                "steps": output.global_step,
                "loop_s": loop,
                "in_process_s": time.perf_counter() - started,
            }
        )
    )


def prepare(root: Path, size: dict, memory: bool) -> dict:
    import pandas as pd

    from tests.helpers.tiny_models import build_tiny_llama
    from tunegate.demo_data.loans import LABELS, generate

    needed = size["rows"] + VAL_ROWS
    rows = [
        {"text": r["narrative"], "label": r["risk_label"]}
        for r in generate(n=needed + needed // 10, seed=11)
        if r["narrative"] and r["narrative"].strip() and r["risk_label"] in LABELS
    ][:needed]
    assert len(rows) == needed, len(rows)
    pd.DataFrame(rows[: size["rows"]]).to_parquet(root / "train.parquet")
    pd.DataFrame(rows[size["rows"] :]).to_parquet(root / "val.parquet")
    made = {"labels": list(LABELS)}
    made["classifier"] = build_tiny_llama(
        root / "llama-cls",
        [r["text"] for r in rows],
        hidden_size=size["hidden"],
        layers=size["layers"],
    )
    if memory:
        from tunegate.demo_data.notes import summarization_rows

        summaries = summarization_rows(160, seed=1)
        pd.DataFrame(summaries[:128]).to_parquet(root / "gen-train.parquet")
        pd.DataFrame(summaries[128:]).to_parquet(root / "gen-val.parquet")
        made["generator"] = build_tiny_llama(
            root / "llama-gen", [r["text"] for r in summaries], hidden_size=512, layers=4
        )
    return made


def overhead_job(root: Path, made: dict, size: dict, name: str):  # noqa: ANN201 - a TrainJob
    from tasks.models import ModelSettings
    from tasks.train import LoraSettings, TrainJob, TrainSettings

    return TrainJob(
        train_path=root / "train.parquet",
        val_path=root / "val.parquet",
        labels=made["labels"],
        model=ModelSettings(base_model=str(made["classifier"]), max_length=size["max_length"]),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        # patience above the epoch count: neither side stops early, both run every step
        train=TrainSettings(
            epochs=size["epochs"],
            learning_rate=5e-3,
            batch_size=BATCH,
            logging_steps=10,
            seed=0,
            resume=False,
            keep_checkpoints=2,
            early_stopping_patience=size["epochs"] + 1,
        ),  # fmt: skip
        out_dir=root / name,
    )


def run_bare(spec: Path, profile: Path | None = None) -> float:
    command = [sys.executable, __file__, "--bare", str(spec)]
    if profile is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def compare(args: argparse.Namespace, root: Path, made: dict, size: dict) -> float:
    from tasks.train import run_training, write_spec

    steps = size["epochs"] * (size["rows"] // BATCH)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"overhead run: tiny Llama classifier ({size['layers']} layers, {size['hidden']} wide), "
          f"{size['rows']} rows, {steps} steps of {BATCH} x up to {size['max_length']} tokens, "
          "LoRA r=8 q_proj/v_proj; both sides evaluate and checkpoint each epoch, keep 2, load "
          "the best")  # fmt: skip
    walls: dict[str, list[float]] = {"tunegate": [], "bare": []}
    print(f"warm-up (imports once in a throwaway process): {warm_up():.1f}s")

    def tunegate(i: int) -> None:
        started = time.perf_counter()
        result = run_training(overhead_job(root, made, size, f"tunegate-{i}"))
        walls["tunegate"].append(time.perf_counter() - started)
        assert result.steps == steps, result.steps
        outside = walls["tunegate"][-1] - result.seconds
        print(f"  tunegate {walls['tunegate'][-1]:.1f}s: Trainer loop {result.seconds:.1f}s, "
              f"outside it (child start, imports, load, data, save) {outside:.1f}s")  # fmt: skip

    def bare(i: int) -> None:
        spec = write_spec(overhead_job(root, made, size, f"bare-{i}"))
        walls["bare"].append(run_bare(spec))
        done = json.loads((spec.parent / "bare.json").read_text())
        assert done["steps"] == steps, done["steps"]
        print(f"  bare     {walls['bare'][-1]:.1f}s: Trainer loop {done['loop_s']:.1f}s, "
              f"outside it {walls['bare'][-1] - done['loop_s']:.1f}s")  # fmt: skip

    for i in range(args.repeats):
        # Alternate which side goes first, so neither always meets a colder page cache.
        for side in (tunegate, bare) if i % 2 == 0 else (bare, tunegate):
            side(i)
        print(f"repeat {i}: tunegate {walls['tunegate'][-1]:.1f}s, bare {walls['bare'][-1]:.1f}s")
    best = {k: min(v) for k, v in walls.items()}
    print(f"fastest wall: tunegate {best['tunegate']:.1f}s, bare Trainer+peft {best['bare']:.1f}s")
    return best["tunegate"] / best["bare"]


def warm_up() -> float:
    """Import both sides' stacks once in a throwaway process, so the first timed side does not
    alone pay for reading torch & co. from disk and compiling tunegate's bytecode (at a few
    hundred rows imports are most of a side's wall time)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import sklearn.metrics, datasets, peft, transformers; "
         "import tasks.train.worker, tasks.train.fit, tasks.train.metrics; "
         "from transformers import Trainer"],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def memory(root: Path, made: dict) -> None:
    from tasks.models import ModelSettings
    from tasks.train import LoraSettings, TrainJob, TrainSettings, run_training

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


# (label, file suffix, function): cumulative seconds of each in a worker's profile. Nested
# entries (indented) are parts of the entry above them.
PARTS = [
    ("worker body (main)", ("tasks/train/worker.py", "main")),
    ("bare body (bare_main)", ("benchmarks/train_overhead.py", "bare_main")),
    ("  fit()", ("tasks/train/fit.py", "fit")),
    ("  spec + data digest", ("tasks/train/guard.py", "check_resumable")),
    ("  model load (+ peft wrap)", ("tasks/train/model.py", "load_model")),
    ("  model load", ("transformers/models/auto/auto_factory.py", "from_pretrained")),
    ("  peft wrap", ("peft/mapping_func.py", "get_peft_model")),
    ("  datasets", ("tasks/train/data.py", "build_datasets")),
    ("  Trainer set-up", ("transformers/trainer.py", "__init__")),
    ("  Trainer.train", ("transformers/trainer.py", "train")),
    ("    training steps", ("transformers/trainer.py", "training_step")),
    ("    optimizer steps", ("torch/optim/adamw.py", "step")),
    ("    data loading", ("torch/utils/data/dataloader.py", "__next__")),
    ("    evaluation", ("transformers/trainer.py", "evaluate")),
    ("    checkpoint writes", ("transformers/trainer.py", "_save_checkpoint")),
    ("    load best model", ("transformers/trainer.py", "_load_best_model")),
    ("    history stream", ("tasks/train/fit.py", "on_log")),
    ("  save model/", ("tasks/train/model.py", "save_model")),
    ("  save model/", ("peft/peft_model.py", "save_pretrained")),
    ("imports (all, incl. lazy ones)", ("<frozen importlib._bootstrap>", "_find_and_load")),
]


def breakdown(profile: Path, wall: float) -> dict[str, float]:
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _, ct, _) in stats.values())
    found = {"process start before the profiler": wall - total}
    for label, (suffix, name) in PARTS:
        seconds = sum(
            ct
            for (path, _, func), (_, _, _, ct, _) in stats.items()
            if func == name and path.endswith(suffix)
        )
        if seconds:
            found[label] = found.get(label, 0.0) + seconds
    return found


def profile(root: Path, made: dict, size: dict) -> None:
    from tasks.train import write_spec

    walls, parts = {}, {}
    print(f"warm-up (imports once in a throwaway process): {warm_up():.1f}s")
    spec = write_spec(overhead_job(root, made, size, "profile-tunegate"))
    command = [sys.executable, "-m", "cProfile", "-o", str(root / "tunegate.prof"),
               "-m", "tasks.train.worker", str(spec)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    walls["tunegate"] = time.perf_counter() - started
    parts["tunegate"] = breakdown(root / "tunegate.prof", walls["tunegate"])
    spec = write_spec(overhead_job(root, made, size, "profile-bare"))
    walls["bare"] = run_bare(spec, root / "bare.prof")
    parts["bare"] = breakdown(root / "bare.prof", walls["bare"])
    print(f"cProfile of each worker ({size['rows']} rows, {size['epochs']} epochs); shares of the "
          "process's wall time (under load only the shares mean anything)")  # fmt: skip
    print(f"  {'':36s} {'tunegate':>16s} {'bare':>16s}")
    labels = list(dict.fromkeys([*parts["tunegate"], *parts["bare"]]))
    for label in ["wall", *labels]:
        cells = []
        for side in ("tunegate", "bare"):
            value = walls[side] if label == "wall" else parts[side].get(label)
            cells.append(
                f"{'-':>16s}"
                if value is None
                else f"{value:7.1f}s {100 * value / walls[side]:6.1f}%"
            )
        print(f"  {label:36s} {cells[0]} {cells[1]}")
    outside = 1 - parts["tunegate"].get("    training steps", 0.0) / walls["tunegate"]
    print(f"train_overhead_profile_outside_steps_share: {outside:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help="runs per side; fastest kept")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunegate-train-overhead"))
    parser.add_argument("--quick", action="store_true", help="proves it runs; figures mean nothing")
    parser.add_argument("--profile", action="store_true", help="cProfile each side's worker once")
    parser.add_argument("--rows", type=int, help="training rows (default: the size's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS section")
    args = parser.parse_args()
    if args.bare:
        bare_main(args.bare)
        return
    size = dict(SIZES["quick" if args.quick else "full"])
    if args.rows:
        size["rows"] = args.rows
    with_memory = not (args.quick or args.profile or args.no_memory)
    root = args.work
    root.mkdir(parents=True, exist_ok=True)
    made = prepare(root, size, with_memory)
    if args.profile:
        profile(root, made, size)
        return
    ratio = compare(args, root, made, size)
    if with_memory:
        memory(root, made)
    print(f"train_overhead_ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
