"""The training loop in this process: transformers' `Trainer` on the job's model and data.

The worker's body (rank-aware under torchrun / accelerate). It evaluates every epoch or every
`train.checkpoint_steps`, keeps the best evaluation, stops early, warns once when the
train/validation gap keeps widening, checkpoints so a killed run resumes where it stopped, and on
rank 0 writes `model/`, `history.json` and `result.json`. Imported only by the worker: it loads
torch and transformers.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from tasks.models import generate_from_ids
from tasks.train.data import TrainData, build_datasets
from tasks.train.guard import check_resumable
from tasks.train.history import HISTORY_STREAM, last_complete_checkpoint, overfitting_message
from tasks.train.metrics import macro_f1, mean_rouge
from tasks.train.model import (
    check_runtime,
    load_model,
    precision_flags,
    runtime_choices,
    save_model,
    tf32_supported,
    use_packing,
)
from tasks.train.pruning import pruning_callback
from tasks.train.settings import TrainJob, TrainResult


def fit(job: TrainJob) -> TrainResult:
    """Train in this process; a complete checkpoint in `job.out_dir` is resumed from."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_runtime(job.train)
    resume = last_complete_checkpoint(out_dir / "checkpoints") if job.train.resume else None
    check_resumable(job, out_dir / "checkpoints", resume)
    set_seed(job.train.seed)
    tokenizer, model = load_model(job.model, job.lora, job.train, job.labels)
    packed = use_packing(job.train, job.model.task, model)
    data = build_datasets(job, tokenizer, packed)
    trainer = build_trainer(job, model, tokenizer, data, resume)
    stream = out_dir / HISTORY_STREAM
    if resume is None and stream.exists() and trainer.is_world_process_zero():
        stream.unlink()
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    history = [
        {k: v for k, v in entry.items() if isinstance(v, int | float)}
        for entry in trainer.state.log_history
    ]
    result = assemble_result(job, trainer, data, history, int(output.global_step), seconds, resume)
    result.runtime = runtime_choices(job.train, model, packed)
    if trainer.is_world_process_zero():
        save_model(trainer.model, tokenizer, job)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        (out_dir / "result.json").write_text(result.model_dump_json(indent=1))
    return result


class HistoryStream(TrainerCallback):
    """Appends every log to `history.jsonl` (the parent forwards it) and warns of overfitting once.

    Only rank 0 writes, so several processes do not interleave lines.
    """

    def __init__(self, stream: Path, overfit_patience: int) -> None:
        self.stream = stream
        self.overfit_patience = overfit_patience
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if not state.is_world_process_zero:
            return
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        lines: list[dict[str, Any]] = [{"step": state.global_step, **values}]
        if "eval_loss" in values and not self.warned:
            message = overfitting_message(state.log_history, self.overfit_patience)
            if message:
                self.warned = True
                lines.append(
                    {"step": state.global_step, "event": "overfitting", "message": message}
                )
        with self.stream.open("a") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in lines)


class GeneratedRouge:
    """Generation's `compute_metrics`: ROUGE of answers the current model writes.

    The Trainer's own predictions are teacher-forced logits, which say nothing about the answers
    the model would write; so it generates from the validation prompts with the model as it is.
    """

    def __init__(self, tokenizer, data: TrainData, max_new_tokens: int) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.data = data
        self.max_new_tokens = max_new_tokens
        self.trainer: Trainer | None = None

    def __call__(self, _eval_pred) -> dict[str, float]:  # noqa: ANN001
        assert self.trainer is not None, "set .trainer before evaluating"
        outputs = generate_from_ids(
            self.trainer.model, self.tokenizer, self.data.eval_prompts, self.max_new_tokens
        )
        return mean_rouge(outputs, self.data.eval_targets)


def _first_logit(logits, labels):  # noqa: ANN001, ANN202
    # Generation's metric generates instead: keep one logit per token, not the vocabulary's.
    return logits[..., :1]


def build_trainer(
    job: TrainJob,
    model,  # noqa: ANN001
    tokenizer,  # noqa: ANN001
    data: TrainData,
    resume: Path | None,
) -> Trainer:
    generation = job.model.task == "generation"
    rouge = GeneratedRouge(tokenizer, data, job.model.max_new_tokens) if generation else None
    trainer = Trainer(
        model=model,
        args=training_arguments(job, data.metric, resume),
        train_dataset=data.train,
        eval_dataset=data.val,
        processing_class=tokenizer,
        data_collator=data.collator,
        compute_metrics=rouge if rouge is not None else macro_f1,
        preprocess_logits_for_metrics=_first_logit if generation else None,
        callbacks=[
            HistoryStream(Path(job.out_dir) / HISTORY_STREAM, job.train.overfit_patience),
            EarlyStoppingCallback(early_stopping_patience=job.train.early_stopping_patience),
            *([pruning_callback(job.trial, data.metric)] if job.trial else []),
        ],
    )
    if rouge is not None:
        rouge.trainer = trainer
    return trainer


def training_arguments(job: TrainJob, metric: str, resume: Path | None) -> TrainingArguments:
    """The Trainer's settings from `train.*`: best checkpoint by `metric`, CPU when no CUDA."""
    settings = job.train
    generation = job.model.task == "generation"
    strategy = "steps" if settings.checkpoint_steps else "epoch"
    return TrainingArguments(
        output_dir=str(Path(job.out_dir) / "checkpoints"),
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
        tf32=True if tf32_supported() else None,
        **precision_flags(settings),
    )


def assemble_result(
    job: TrainJob,
    trainer: Trainer,
    data: TrainData,
    history: list[dict],
    steps: int,
    seconds: float,
    resume: Path | None,
) -> TrainResult:
    """The figures `result.json` reports, from the finished trainer and its log history."""
    generation = job.model.task == "generation"
    evals = [h for h in history if "eval_loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    best = trainer.state.best_metric
    epochs_run = float(trainer.state.epoch or 0)
    return TrainResult(
        model_dir=Path(job.out_dir) / "model",
        task=job.model.task,
        metric=data.metric,
        best_metric=float(best if best is not None else 0.0),
        best_val_f1=float(best if best is not None and not generation else 0.0),
        final_eval_loss=evals[-1]["eval_loss"] if evals else None,
        final_train_loss=losses[-1] if losses else None,
        epochs_run=epochs_run,
        steps=steps,
        seconds=seconds,
        examples_per_second=len(data.train) * epochs_run / max(seconds, 1e-9),
        resumed_from_step=int(resume.name.split("-")[-1]) if resume else None,
        truncation=data.truncation,
        overfitting_warning=overfitting_message(history, job.train.overfit_patience),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        num_processes=int(trainer.args.world_size),
    )
