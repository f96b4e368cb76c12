"""What a training run is told and what it reports: settings, the job, the result, the error.

Every other module of the package takes a `TrainJob` (the flow builds one; the spec file the
worker reads is its JSON) and returns a `TrainResult` (`result.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.models import ModelError, ModelSettings

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
        description="auto: bf16 on a GPU that supports it, fp16 with a loss scaler on an older "
        "GPU, fp32 on CPU. fp16 needs CUDA. TF32 matmuls are on for Ampere and newer GPUs.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in backward: less memory, ~30% slower; for 8B-class "
        "models on one GPU.",
    )
    packing: bool | None = Field(
        default=None,
        description="Generation: train on the batch's examples concatenated without padding "
        "(position ids restart per example, so examples never attend to each other). Absent: "
        "on where the model supports it (decoder-only models), off for classification; true "
        "on a model or task without support is refused.",
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


class TrialRef(BaseModel):
    """The Optuna trial a training run reports to, when it is one trial of a search.

    The worker is a child process (or a run on a work pool), so it reaches the study through
    its RDB storage; the pruner is not stored there, so its settings travel here too.
    """

    storage: str = Field(description="Optuna RDB storage URL (SQLite file or Postgres).")
    study_name: str
    trial_id: int = Field(description="Optuna's storage id of the trial (not its number).")
    number: int = Field(description="The trial's number in the study, for logs.")
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(default=2, ge=0)
    warmup_evals: int = Field(default=0, ge=0)


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
    trial: TrialRef | None = Field(
        default=None, description="Set by the search stage: report evaluations, stop if pruned."
    )


class TruncationReport(BaseModel):
    """Per generation split: inputs cut to fit, and examples dropped because the target did not."""

    examples: int
    prompt_truncated: int = 0
    dropped_target_too_long: int = 0


class TrainResult(BaseModel):
    """`result.json`: what the run reports to the flow, the MLflow run and the gate."""

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
    runtime: dict[str, str] = Field(
        default_factory=dict,
        description="What this machine ran with: device, precision, tf32, attention, packing, "
        "gradient_checkpointing (MLflow tags `train.runtime.*`).",
    )


class TrainingError(ModelError):
    """Training could not start or failed; the message says which setting to change."""
