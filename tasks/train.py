"""Fine-tune a base model for classification or generation: LoRA, QLoRA or all weights.

transformers' `Trainer` does the loop. This module chooses and loads the model (a sequence
classification head, or a causal LM for supervised fine-tuning), wraps it with peft, builds the
datasets (for generation: a prompt template or the tokenizer's chat template, the loss masked on
the prompt, and examples whose target would be cut dropped and counted, never cut silently),
evaluates on the validation split (macro-F1, or ROUGE-L on generated outputs) every epoch or every
`train.checkpoint_steps`, keeps the best evaluation, stops early, warns when the train/validation
gap keeps widening, and checkpoints so a killed run resumes where it stopped.

The training itself runs in a child process (`python -m tasks.train_worker SPEC.json`, or
`torchrun` / `accelerate launch` for several processes), so an out-of-memory error or a crash fails
the task with one clear line and the memory goes back when the child exits. The output folder:
`model/` (the adapter in peft layout or the full weights, the tokenizer, `tunegate.json`, for
classification `labels.json`, optionally `merged/`), `history.json`, `result.json`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks import stage_logger
from tasks.models import (
    ModelCard,
    ModelError,
    ModelSettings,
    encode_prompt,
    generate_from_ids,
    load_base_model,
    prompt_parts,
    resolve_base_model,
    write_labels,
)


def _log() -> logging.Logger | logging.LoggerAdapter:
    return stage_logger(__name__)


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
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
}

OOM_HINT = (
    "lower train.batch_size (raise train.gradient_accumulation_steps to keep the global batch), "
    "lower model.max_length, or set train.gradient_checkpointing=true or train.method=qlora"
)


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

    method: Literal["lora", "qlora", "full"] = Field(
        default="lora",
        description="lora: adapter on frozen weights; qlora: adapter on a 4-bit NF4 base "
        "(bitsandbytes); full: every weight.",
    )
    epochs: float = Field(default=3, gt=0, description="Passes over the training split.")
    learning_rate: float = Field(
        default=1e-3,
        gt=0,
        description="Peak learning rate. 1e-3 suits LoRA on a small encoder (2e-3 can stall at "
        "the majority class); 7-8B models: 1e-5.",
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per step per process.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Steps whose gradients add up before one optimizer update."
    )
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(
        default=0.06, ge=0, lt=1, description="Share of steps spent warming up."
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule after warm-up."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 on a GPU that supports it, else fp32. fp16 needs CUDA.",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward: less memory, ~30% slower."
    )
    early_stopping_patience: int = Field(
        default=2,
        ge=1,
        description="Evaluations without a better validation metric before stopping.",
    )
    checkpoint_steps: int | None = Field(
        default=None,
        ge=1,
        description="Evaluate and checkpoint every N optimizer steps; once per epoch when absent.",
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, description="Checkpoints kept on disk (the best one is always kept)."
    )
    resume: bool = Field(
        default=True,
        description="Continue from the last complete checkpoint in the output folder (a retried "
        "task or flow run), restoring optimizer, scheduler and RNG state.",
    )
    overfit_patience: int = Field(
        default=3,
        ge=1,
        description="Warn when the validation-minus-train loss gap widens this many evaluations "
        "in a row.",
    )
    generation_eval_samples: int = Field(
        default=64, ge=1, description="Generation: validation examples generated for ROUGE-L."
    )
    merge_adapter: bool = Field(
        default=False, description="Also save the adapter merged into the base weights (merged/)."
    )
    num_processes: int = Field(
        default=1, ge=1, description="Data-parallel processes (torchrun; gloo on CPU, nccl on GPU)."
    )
    accelerate_config: Path | None = Field(
        default=None,
        description="An `accelerate launch` config (configs/accelerate/: DDP, FSDP, DeepSpeed).",
    )
    distributed: Literal["ddp", "fsdp", "deepspeed"] | None = Field(
        default=None,
        description="Multi-GPU strategy: launches through `accelerate launch` with the shipped "
        "configs/accelerate/ config (ddp.yaml, fsdp.yaml, deepspeed-zero3.yaml).",
    )
    retries: int = Field(
        default=0,
        ge=0,
        description="Prefect retries of the training task; each resumes from the last checkpoint.",
    )
    logging_steps: int = Field(default=10, ge=1, description="Log the training loss every N steps.")
    seed: int = Field(default=13, description="Seed for initialisation and data order.")
    work_pool: str | None = Field(
        default=None,
        description="Run training as deployment 'train-remote/<pool>' on this Prefect work pool "
        "(e.g. a GPU pool); data and adapter travel through storage.url.",
    )
    work_pool: str | None = Field(
        default=None,
        description="Run training as deployment 'train-remote/<pool>' on this Prefect work pool "
        "(e.g. a GPU pool); data and adapter travel through storage.url.",
    )


class TrainJob(BaseModel):
    """One training run's inputs, carried whole from the flow to the worker (and to a pool)."""

    train_path: Path
    val_path: Path
    labels: list[str] | None = Field(
        default=None, description="Classification labels, in head order; None for generation."
    )
    model: ModelSettings
    lora: LoraSettings
    train: TrainSettings
    out_dir: Path


class TruncationReport(BaseModel):
    examples: int
    prompt_truncated: int = 0
    dropped_target_too_long: int = 0


class TrainResult(BaseModel):
    model_dir: Path
    task: str = "classification"
    metric: str = "f1_macro"
    best_metric: float = 0.0
    best_val_f1: float = 0.0
    final_eval_loss: float | None = None
    final_train_loss: float | None = None
    epochs_run: float
    steps: int
    seconds: float
    examples_per_second: float
    resumed_from_step: int | None = None
    truncation: dict[str, TruncationReport] = {}
    overfitting_warning: str | None = None
    peak_rss_mb: float = 0.0
    num_processes: int = 1


class TrainingError(ModelError):
    """Training could not start or failed; the message says which setting to change."""


# ---------------------------------------------------------------- checks before anything loads


def lora_targets(model_type: str, configured: list[str] | None) -> list[str]:
    if configured:
        return configured
    if model_type not in LORA_TARGETS:
        raise TrainingError(
            f"no default LoRA targets for architecture '{model_type}'; set lora.target_modules"
        )
    return LORA_TARGETS[model_type]


def bitsandbytes_problem() -> str | None:
    """Why 4-bit loading cannot run here, or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install 'bitsandbytes>=0.50')"
    try:
        import bitsandbytes as bnb
        import torch

        weight = torch.randn(8, 8)
        bnb.functional.quantize_4bit(weight, quant_type="nf4")
    except Exception as exc:  # noqa: BLE001 - any failure means the backend cannot run here
        return f"bitsandbytes cannot run on this machine ({str(exc).splitlines()[0][:160]})"
    return None


def check_runtime(settings: TrainSettings) -> None:
    """Refuse settings this machine cannot run, before loading anything."""
    import torch

    cuda = torch.cuda.is_available()
    if settings.precision == "fp16" and not cuda:
        raise TrainingError(
            "train.precision: fp16 needs a CUDA GPU; use fp32 or bf16 on this machine"
        )
    if settings.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise TrainingError("train.precision: this GPU does not support bf16; use fp16 or fp32")
    if settings.method == "qlora":
        problem = bitsandbytes_problem()
        if problem is not None:
            raise TrainingError(f"train.method: qlora needs 4-bit loading, but {problem}")
    if settings.accelerate_config is not None and not Path(settings.accelerate_config).is_file():
        raise TrainingError(
            f"train.accelerate_config: file not found: {settings.accelerate_config}"
        )


def precision_flags(settings: TrainSettings) -> dict[str, bool]:
    import torch

    if settings.precision == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": False}
    return {"bf16": settings.precision == "bf16", "fp16": settings.precision == "fp16"}


# ---------------------------------------------------------------- model loading


def _quantization(settings: TrainSettings) -> dict[str, Any]:
    if settings.method != "qlora":
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if precision_flags(settings)["bf16"] else torch.float32
    # Trainer does not move a quantized model: place it on this process's GPU when loading.
    placement = (
        {"device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}
        if torch.cuda.is_available()
        else {}
    )
    return {
        **placement,
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute,
        ),
    }


def load_model(
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    labels: list[str] | None = None,
) -> tuple[Any, Any]:
    """The base model for the task, 4-bit for qlora, wrapped in LoRA unless method is 'full'."""
    generation = model_settings.task == "generation"
    tokenizer, model = load_base_model(model_settings, labels, **_quantization(settings))
    if settings.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if settings.method in ("lora", "qlora"):
        from peft import LoraConfig, TaskType, get_peft_model

        peft_config = LoraConfig(
            task_type=TaskType.CAUSAL_LM if generation else TaskType.SEQ_CLS,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(model.config.model_type, lora.target_modules),
            modules_to_save=None
            if generation
            else (
                lora.modules_to_save
                if lora.modules_to_save is not None
                else FULLY_TRAINED.get(model.config.model_type, [])
            )
            or None,
        )
        model = get_peft_model(model, peft_config)
    return tokenizer, model


def load_classifier(base_model: str, labels: list[str], lora: LoraSettings, method: str):  # noqa: ANN201
    """(tokenizer, model): a classification head on `base_model`, in LoRA unless 'full'."""
    return load_model(
        ModelSettings(base_model=base_model), lora, TrainSettings(method=method), labels
    )


# ---------------------------------------------------------------- data


def _classification_dataset(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int):  # noqa: ANN001, ANN202
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


def generation_examples(
    frame: pd.DataFrame,
    tokenizer,  # noqa: ANN001
    parts: tuple[list[int], list[int]],
    max_length: int,
) -> tuple[list[dict], TruncationReport]:
    """Prompt + target ids with the loss masked (-100) on the prompt.

    The input text is cut to make room; an example whose target (plus one input token) does not
    fit in `max_length` is dropped and counted, so a target is never cut silently."""
    head, tail = parts
    fixed = len(head) + len(tail)
    out: list[dict] = []
    report = TruncationReport(examples=len(frame))
    for text, target in zip(frame["text"], frame["target"], strict=True):
        target_ids = tokenizer(str(target), add_special_tokens=False)["input_ids"]
        target_ids = target_ids + [tokenizer.eos_token_id]
        budget = max_length - fixed - len(target_ids)
        if budget < 1:
            report.dropped_target_too_long += 1
            continue
        prompt, cut = encode_prompt(tokenizer, parts, str(text), budget)
        report.prompt_truncated += int(cut)
        out.append(
            {
                "input_ids": prompt + target_ids,
                "attention_mask": [1] * (len(prompt) + len(target_ids)),
                "labels": [-100] * len(prompt) + target_ids,
            }
        )
    return out, report


def read_generation_frame(path: Path) -> pd.DataFrame:
    """`text` and `target` columns (`summary` or `label` accepted for the target)."""
    frame = pd.read_parquet(path)
    if "target" not in frame.columns:
        source = next((c for c in ("summary", "label") if c in frame.columns), None)
        if source is None:
            raise TrainingError(
                f"{path}: generation needs a 'target' (or 'summary' / 'label') column"
            )
        frame = frame.rename(columns={source: "target"})
    return frame


# ---------------------------------------------------------------- metrics


def macro_f1(eval_pred) -> dict[str, float]:  # noqa: ANN001 - transformers' EvalPrediction
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(-1)
    return {
        "f1_macro": float(f1_score(labels, preds, average="macro")),
        "accuracy": float(accuracy_score(labels, preds)),
    }


def compute_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure of the validation answers (the evaluate stage's scorer)."""
    from tasks.evaluate import compute_rouge as per_example

    scores = per_example(predictions, references)
    n = max(len(predictions), 1)
    return {
        name: sum(scores[key]) / n
        for name, key in (("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL"))
    }


# ---------------------------------------------------------------- the training process


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer state was written (the last file a save writes)."""
    if not checkpoint_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def overfitting_message(history: list[dict], patience: int) -> str | None:
    """A warning when eval_loss minus the latest train loss grew `patience` evaluations in a row."""
    gaps: list[float] = []
    last_train = None
    for entry in history:
        if "loss" in entry:
            last_train = entry["loss"]
        if "eval_loss" in entry and last_train is not None:
            gaps.append(entry["eval_loss"] - last_train)
    if len(gaps) <= patience:
        return None
    recent = gaps[-(patience + 1) :]
    if all(b > a for a, b in zip(recent, recent[1:], strict=False)) and recent[-1] > 0:
        return (
            f"possible overfitting: the validation-train loss gap widened {patience} evaluations "
            f"in a row (now {recent[-1]:.3f}); consider fewer train.epochs, a lower "
            "train.learning_rate or more data"
        )
    return None


def fit(
    train_path: Path,
    val_path: Path,
    labels: list[str] | None,
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
) -> TrainResult:
    """Train in this process (rank-aware under torchrun/accelerate); writes `out_dir`."""
    import resource

    import torch
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_runtime(settings)
    set_seed(settings.seed)
    generation = model_settings.task == "generation"
    tokenizer, model = load_model(model_settings, lora, settings, labels)
    truncation: dict[str, TruncationReport] = {}
    eval_prompts: list[list[int]] = []
    eval_targets: list[str] = []
    if generation:
        from datasets import Dataset

        parts = prompt_parts(tokenizer, model_settings)
        split_rows = {}
        for name, path in (("train", train_path), ("val", val_path)):
            frame = read_generation_frame(path)
            rows, report = generation_examples(frame, tokenizer, parts, model_settings.max_length)
            truncation[name] = report
            if not rows:
                raise TrainingError(
                    f"model.max_length: {model_settings.max_length} tokens leave no room for any "
                    f"{name} target; raise it"
                )
            split_rows[name] = rows
            if name == "val":
                sample = frame.head(settings.generation_eval_samples)
                for text, target in zip(sample["text"], sample["target"], strict=True):
                    budget = model_settings.max_length - len(parts[0]) - len(parts[1])
                    eval_prompts.append(encode_prompt(tokenizer, parts, str(text), budget)[0])
                    eval_targets.append(str(target))
        train_ds = Dataset.from_list(split_rows["train"])
        val_ds = Dataset.from_list(split_rows["val"])
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
        metric = "rouge_l"
    else:
        train_ds = _classification_dataset(
            pd.read_parquet(train_path), tokenizer, labels or [], model_settings.max_length
        )
        val_ds = _classification_dataset(
            pd.read_parquet(val_path), tokenizer, labels or [], model_settings.max_length
        )
        collator = DataCollatorWithPadding(tokenizer)
        metric = "f1_macro"

    stream = out_dir / "history.jsonl"
    warned: list[str] = []

    class Forward(TrainerCallback):
        """Appends every log to history.jsonl (the parent forwards it) and checks overfitting."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if not state.is_world_process_zero:
                return
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            lines = [{"step": state.global_step, **values}]
            if "eval_loss" in values and not warned:
                message = overfitting_message(state.log_history, settings.overfit_patience)
                if message:
                    warned.append(message)
                    lines.append(
                        {"step": state.global_step, "event": "overfitting", "message": message}
                    )
            with stream.open("a") as fh:
                fh.writelines(json.dumps(line) + "\n" for line in lines)

    trainer_ref: list[Trainer] = []

    def rouge_metrics(_eval_pred) -> dict[str, float]:  # noqa: ANN001
        current = trainer_ref[0].model
        outputs = generate_from_ids(current, tokenizer, eval_prompts, model_settings.max_new_tokens)
        return compute_rouge(outputs, eval_targets)

    strategy = "steps" if settings.checkpoint_steps else "epoch"
    resume = last_complete_checkpoint(out_dir / "checkpoints") if settings.resume else None
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=max(settings.batch_size, 16 if generation else 64),
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_fraction,
        lr_scheduler_type=settings.lr_scheduler,
        activation_checkpointing=settings.gradient_checkpointing and settings.method != "qlora",
        activation_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=settings.checkpoint_steps,
        save_steps=settings.checkpoint_steps,
        eval_on_start=generation and resume is None,  # the untrained model's ROUGE, once
        save_total_limit=settings.keep_checkpoints,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        logging_steps=settings.logging_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        # Token-weighted averaging across processes is right for the causal-LM loss, which
        # divides by the global token count; a classification loss is already a per-example
        # mean, and the Trainer would multiply it by the process count.
        average_tokens_across_devices=generation,
        **precision_flags(settings),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=rouge_metrics if generation else macro_f1,
        preprocess_logits_for_metrics=(lambda logits, labels: logits[..., :1])
        if generation
        else None,
        callbacks=[
            Forward(),
            EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience),
        ],
    )
    trainer_ref.append(trainer)
    if resume is None and stream.exists() and trainer.is_world_process_zero():
        stream.unlink()
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started

    history = [
        {k: v for k, v in entry.items() if isinstance(v, int | float)}
        for entry in trainer.state.log_history
    ]
    evals = [h for h in history if "eval_loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    best = trainer.state.best_metric
    epochs_run = float(trainer.state.epoch or 0)
    result = TrainResult(
        model_dir=out_dir / "model",
        task=model_settings.task,
        metric=metric,
        best_metric=float(best if best is not None else 0.0),
        best_val_f1=float(best if best is not None and not generation else 0.0),
        final_eval_loss=evals[-1]["eval_loss"] if evals else None,
        final_train_loss=losses[-1] if losses else None,
        epochs_run=epochs_run,
        steps=int(output.global_step),
        seconds=seconds,
        examples_per_second=len(train_ds) * epochs_run / max(seconds, 1e-9),
        resumed_from_step=int(resume.name.split("-")[-1]) if resume else None,
        truncation=truncation,
        overfitting_warning=overfitting_message(history, settings.overfit_patience),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        num_processes=int(trainer.args.world_size),
    )
    if trainer.is_world_process_zero():
        save_model(
            trainer.model, tokenizer, result.model_dir, labels, model_settings, lora, settings
        )
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        (out_dir / "result.json").write_text(result.model_dump_json(indent=1))
    return result


def save_model(
    model,  # noqa: ANN001
    tokenizer,  # noqa: ANN001
    model_dir: Path,
    labels: list[str] | None,
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
) -> None:
    """Adapter (peft layout) or full weights + tokenizer + metadata; optionally `merged/`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if labels is not None and model_settings.task == "classification":
        write_labels(model_dir, labels)
    card = ModelCard.for_training(model_settings, settings.method)
    if settings.merge_adapter and settings.method in ("lora", "qlora"):
        # Merge into full-precision base weights (a 4-bit base cannot hold the merged result).
        from peft import PeftModel

        full = load_model(
            model_settings, lora, settings.model_copy(update={"method": "full"}), labels
        )[1]
        merged = PeftModel.from_pretrained(full, model_dir).merge_and_unload()
        merged.save_pretrained(model_dir / "merged", safe_serialization=True)
        tokenizer.save_pretrained(model_dir / "merged")
        card.merged = True
    card.write(model_dir)


# ---------------------------------------------------------------- the parent side


# `train.distributed` -> the accelerate config shipped in configs/accelerate/.
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
DISTRIBUTED_CONFIGS = {"ddp": "ddp.yaml", "fsdp": "fsdp.yaml", "deepspeed": "deepspeed-zero3.yaml"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(spec_path: Path, settings: TrainSettings) -> list[str]:
    """One process, `torchrun` for several, or `accelerate launch` with a shipped config."""
    worker = ["-m", "tasks.train_worker", str(spec_path)]
    accelerate_config = settings.accelerate_config
    if accelerate_config is None and settings.distributed is not None:
        accelerate_config = ACCELERATE_CONFIGS / DISTRIBUTED_CONFIGS[settings.distributed]
    if accelerate_config is not None:
        return [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config),
            "--num_processes", str(settings.num_processes),
            "--main_process_port", str(_free_port()),
            *worker,
        ]  # fmt: skip
    if settings.num_processes > 1:
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(settings.num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            *worker,
        ]  # fmt: skip
    return [sys.executable, *worker]


def write_spec(
    train_path: Path,
    val_path: Path,
    labels: list[str] | None,
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
) -> Path:
    """The worker's input, `out_dir/spec.json`; stale results of an earlier attempt removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "error.json"):
        (out_dir / stale).unlink(missing_ok=True)
    spec = {
        "train_path": str(Path(train_path).resolve()),
        "val_path": str(Path(val_path).resolve()),
        "labels": labels,
        "model": model_settings.model_dump(mode="json"),
        "lora": lora.model_dump(mode="json"),
        "train": settings.model_dump(mode="json"),
        "out_dir": str(out_dir),
    }
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    return spec_path


def run_training(
    train_path: Path,
    val_path: Path,
    labels: list[str] | None,
    model_settings: ModelSettings,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
    sink: Callable[[int, dict[str, float]], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train in a child process; forward its logs to `sink` as they come; fail with one line."""
    check_runtime(settings)
    resolve_base_model(model_settings.base_model)
    out_dir = Path(out_dir).resolve()
    spec_path = write_spec(train_path, val_path, labels, model_settings, lora, settings, out_dir)
    stream = out_dir / "history.jsonl"
    if not settings.resume:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    if not (settings.resume and last_complete_checkpoint(out_dir / "checkpoints")):
        stream.unlink(missing_ok=True)
    offset = 0

    def forward() -> None:
        nonlocal offset
        if not stream.is_file():
            return
        with stream.open() as fh:
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode())
        for line in complete.splitlines():
            entry = json.loads(line)
            if "event" in entry:
                _log().warning(entry.get("message", entry["event"]))
                if on_event is not None:
                    on_event(entry)
                continue
            step = int(entry.pop("step"))
            if "eval_loss" in entry or "loss" in entry:  # progress: every logged step
                _log().info(
                    "step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in entry.items())
                )
            if sink is not None:
                sink(step, entry)

    log_path = out_dir / "worker.log"
    with log_path.open("ab") as worker_log:
        proc = subprocess.Popen(
            launch_command(spec_path, settings),
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                time.sleep(0.25)
                forward()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    forward()
    if proc.returncode != 0:
        raise TrainingError(_failure_message(out_dir, proc.returncode, log_path))
    return TrainResult.model_validate_json((out_dir / "result.json").read_text())


def _failure_message(out_dir: Path, returncode: int, log_path: Path) -> str:
    error_path = out_dir / "error.json"
    if error_path.is_file():
        error = json.loads(error_path.read_text())
        if error.get("kind") == "oom":
            return f"training ran out of memory: {OOM_HINT}"
        return error["message"]
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL, 137):
        return (
            "the training process was killed (SIGKILL), usually by the out-of-memory killer: "
            f"{OOM_HINT}; rerun to resume from the last checkpoint"
        )
    tail = (
        log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    )
    return (
        f"the training process failed (exit {returncode}): {' '.join(tail)[:300]} (see {log_path})"
    )


def plot_history(history_path: Path, out_path: Path) -> Path:
    """Training loss per step and validation loss / metric per evaluation, to a PNG."""
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
        metric = next((m for m in ("eval_f1_macro", "eval_rouge_l") if m in evals[-1]), None)
        if metric:
            ax2 = ax.twinx()
            points = [(h["step"], h[metric]) for h in evals if metric in h]
            ax2.plot(*zip(*points, strict=True), "s--", color="green")
            ax2.set_ylabel("val " + metric.removeprefix("eval_"), color="green")
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
    job: TrainJob, sink: Callable[[int, dict[str, float]], None] | None = None
) -> TrainResult:
    """Runs in a child process; a retry resumes from the last checkpoint in `job.out_dir`."""
    result = run_training(
        job.train_path,
        job.val_path,
        job.labels,
        job.model,
        job.lora,
        job.train,
        job.out_dir,
        sink,
    )
    logger = _log()
    logger.info(
        "trained %s steps in %.0fs (%.1f examples/s), best val %s %.4f%s",
        result.steps,
        result.seconds,
        result.examples_per_second,
        result.metric,
        result.best_metric,
        f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else "",
    )
    for split, report in result.truncation.items():
        if report.dropped_target_too_long or report.prompt_truncated:
            logger.warning(
                "%s: %d of %d examples dropped (target longer than model.max_length allows), "
                "%d inputs cut to fit",
                split,
                report.dropped_target_too_long,
                report.examples,
                report.prompt_truncated,
            )
    return result
