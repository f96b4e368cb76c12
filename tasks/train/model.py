"""The model a run trains: LoRA targets, 4-bit loading, runtime checks, the peft wrap, saving.

Loading itself is `tasks.models.load_base_model` (the one loader of base models); this module adds
what only training needs: quantization for qlora, kbit preparation, the adapter, and writing the
trained folder (`model/`: weights or adapter, tokenizer, `tunegate.json`, `labels.json`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from tasks.models import ModelCard, ModelSettings, load_base_model, write_labels
from tasks.train.settings import LoraSettings, TrainingError, TrainJob, TrainSettings

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
    """Refuse settings this machine cannot run, before loading anything.

    The parent runs this before it starts the worker; torch is imported only for the settings
    that need it, so a parent without torch (a pool's flow run) does not spend seconds of CPU on
    it while the worker starts."""
    if settings.precision in ("fp16", "bf16"):
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
    """auto: bf16 where the GPU has it, fp16 (the Trainer adds a loss scaler) on an older GPU,
    fp32 on CPU, where half precision is slower and less exact."""
    import torch

    if settings.precision == "auto":
        if not torch.cuda.is_available():
            return {"bf16": False, "fp16": False}
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": settings.precision == "bf16", "fp16": settings.precision == "fp16"}


def tf32_supported() -> bool:
    """TF32 matmuls: Ampere (compute capability 8) and newer; a free speed-up for fp32 parts."""
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def packing_supported(model) -> bool:  # noqa: ANN001
    """A decoder-only model whose attention builds its mask from position ids (transformers'
    masking utilities detect the restarts), so packed examples never attend to each other."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    return (
        not getattr(config, "is_encoder_decoder", False)
        and getattr(base, "_supports_attention_backend", False)
        and "position_ids" in inspect.signature(base.forward).parameters
    )


def use_packing(settings: TrainSettings, task: str, model) -> bool:  # noqa: ANN001
    """`train.packing`, resolved: absent means on for generation where the model supports it."""
    supported = task == "generation" and packing_supported(model)
    if settings.packing and not supported:
        why = (
            "classification pads each example to score it"
            if task != "generation"
            else f"'{model.config.model_type}' models cannot mask packed examples apart"
        )
        raise TrainingError(f"train.packing: {why}; set train.packing=false or leave it unset")
    return supported if settings.packing is None else settings.packing


def runtime_choices(settings: TrainSettings, model, packing: bool) -> dict[str, str]:  # noqa: ANN001
    """What this run ran with, for `TrainResult.runtime` and the MLflow run's tags."""
    import torch

    flags = precision_flags(settings)
    precision = "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "device": device,
        "precision": precision,
        "tf32": str(tf32_supported()).lower(),
        "attention": str(getattr(model.config, "_attn_implementation", None) or "default"),
        "packing": str(packing).lower(),
        "gradient_checkpointing": str(settings.gradient_checkpointing).lower(),
    }


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


def keep_4bit_weights_trainable(model: Any) -> None:
    """Stop bitsandbytes' CPU fast path from repacking 4-bit weights for inference.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit`'s weight the first time
    it runs in eval mode without gradients (the evaluation before the first step) and from then
    on multiplies through a kernel with no backward: every later training step had a gradient
    norm of 0 and the adapter stayed zero, silently. Turning the fast path off keeps training
    on the differentiable path.
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


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

        keep_4bit_weights_trainable(model)
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


def save_model(model, tokenizer, job: TrainJob) -> Path:  # noqa: ANN001
    """`job.out_dir/model`: adapter (peft layout) or full weights + tokenizer + metadata.

    With `train.merge_adapter`, also `merged/`: the adapter merged into full-precision base
    weights (a 4-bit base cannot hold the merged result), loadable without peft.
    """
    model_dir = job.out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if job.labels is not None and job.model.task == "classification":
        write_labels(model_dir, job.labels)
    card = ModelCard.for_training(job.model, job.train.method)
    if job.train.merge_adapter and job.train.method in ("lora", "qlora"):
        from peft import PeftModel

        full_settings = job.train.model_copy(update={"method": "full"})
        full = load_model(job.model, job.lora, full_settings, job.labels)[1]
        merged = PeftModel.from_pretrained(full, model_dir).merge_and_unload()
        merged.save_pretrained(model_dir / "merged", safe_serialization=True)
        tokenizer.save_pretrained(model_dir / "merged")
        card.merged = True
    card.write(model_dir)
    return model_dir
