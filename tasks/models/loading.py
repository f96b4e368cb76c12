"""Loading and placing models: base models, trained folders, the baseline's encoder.

The one place that knows the sequence resolve base -> from_pretrained -> pad-token fix ->
adapter, and where inference runs (`model.device`) in which dtype. Training loads through
`load_base_model` and places itself (Trainer / accelerate); everything that predicts loads
through `load_trained`, `load_untuned` or `load_encoder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.models.card import ModelCard, ModelError, ModelSettings, read_labels
from tasks.models.embedded import EMBEDDED_MODELS, resolve_embedded

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip


# ---------------------------------------------------------------- placement


def resolve_device(device: str = "auto") -> str:
    """'cpu', 'cuda' or 'cuda:N' for the `model.device` setting; a GPU asked for but missing is
    an error rather than a silent fall back to a CPU run that would take hours."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"model.device is '{device}' but CUDA is not available on this machine; "
                "set model.device to 'auto' or 'cpu'"
            )
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ModelError(
                f"model.device is '{device}' but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)"
            )
        return device
    raise ModelError(f"model.device is '{device}'; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def inference_dtype(device: str) -> Any:
    """bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on the CPU (where half
    precision is slow or unsupported)."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def place(model: Any, device: str) -> Any:
    """`model` in eval mode on `device` (already resolved), in that device's dtype."""
    return model.to(device=device, dtype=inference_dtype(device)).eval()


def model_device(model: Any) -> Any:
    """Where the model's inputs must go (the first parameter's device, as with device maps)."""
    return next(model.parameters()).device


def fix_pad_token(tokenizer: Any) -> Any:
    """Batched inference pads; tokenizers of causal LMs often have no pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


# ---------------------------------------------------------------- base models


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id for `name`; embedded names map to their folder in the package
    (or, for a GGUF file, to its converted folder in the cache, converted on first use)."""
    if name in EMBEDDED_MODELS:
        return resolve_embedded(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base_model '{name}' is a path without a config.json")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise ModelError(
                f"model.base_model '{name}' has a config.json but no weights "
                "(model.safetensors or pytorch_model.bin)"
            )
        return str(path)
    return name


def load_base_model(
    model_settings: ModelSettings, labels: list[str] | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """(tokenizer, model): the base model with the task's head, pad token set.

    `kwargs` go to `from_pretrained` (e.g. a quantization config, or `dtype`). Every failure
    names the setting: a missing model, a tokenizer that does not load, an architecture without
    the head. The model is not placed: training places itself; inference passes
    `dtype=inference_dtype(device)` and hands the model to `place`.
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    source = resolve_base_model(model_settings.base_model)
    name = model_settings.base_model
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model.base_model '{name}' could not be loaded offline: {str(exc).splitlines()[0]}"
        ) from None
    generation = model_settings.task == "generation"
    auto = AutoModelForCausalLM if generation else AutoModelForSequenceClassification
    if type(config) not in auto._model_mapping:
        raise ModelError(
            f"model.task: '{config.model_type}' models do not support {model_settings.task} "
            f"(no {auto.__name__} head); choose another model.base_model or model.task"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model.base_model '{name}': its tokenizer could not be loaded offline: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if not generation:
        kwargs.update(
            num_labels=len(labels or []),
            id2label=dict(enumerate(labels or [])),
            label2id={label: i for i, label in enumerate(labels or [])},
        )
    try:
        model = auto.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelError(
            f"model.base_model '{name}' could not be loaded offline: {str(exc).splitlines()[0]}"
        ) from None
    fix_pad_token(tokenizer)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if name in EMBEDDED_MODELS:  # adapters then record the name, which resolves on any machine
        model.name_or_path = model.config._name_or_path = name
    if generation and tokenizer.eos_token_id is None:
        raise ModelError(
            f"model.base_model '{name}': its tokenizer has no end-of-sequence token, which "
            "generation needs to learn where an answer stops"
        )
    return tokenizer, model


def load_untuned(
    model_settings: ModelSettings, labels: list[str] | None = None, device: str = "auto"
) -> tuple[Any, Any]:
    """(tokenizer, model): the base model with the task's head as it is, placed for inference
    (the zero-shot baseline, the adversarial reference before any champion)."""
    where = resolve_device(device)
    tokenizer, model = load_base_model(model_settings, labels, dtype=inference_dtype(where))
    return tokenizer, place(model, where)


def load_encoder(base_model: str, device: str = "auto") -> tuple[Any, Any]:
    """(tokenizer, model): the untuned base model without a head, placed for inference; the
    few-shot baseline embeds with it."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_base_model(base_model)
    where = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=inference_dtype(where))
    except OSError as exc:
        raise ModelError(
            f"model.base_model '{base_model}' could not be loaded offline: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return fix_pad_token(tokenizer), place(model, where)


# ---------------------------------------------------------------- trained folders


def load_trained(
    model_dir: Path, device: str = "auto", card: ModelCard | None = None
) -> tuple[Any, Any]:
    """(tokenizer, model) of a trained folder, placed for inference on `device`.

    The card says how: `merged/` loads on its own, full weights from the folder, a peft adapter
    onto the card's base model (with the task's head, built from `labels.json`) and merged, so
    prediction runs at base-model speed. `card` describes a folder without `tunegate.json`.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    card = card or ModelCard.read(model_dir)
    where = resolve_device(device)
    dtype = inference_dtype(where)
    classification = card.task == "classification"
    auto = AutoModelForSequenceClassification if classification else AutoModelForCausalLM
    tokenizer = fix_pad_token(AutoTokenizer.from_pretrained(model_dir))
    if card.merged:
        model = auto.from_pretrained(model_dir / "merged", dtype=dtype)
    elif card.method in ("lora", "qlora"):
        from peft import PeftModel

        labels = read_labels(model_dir) if classification else None
        settings = ModelSettings(base_model=card.base_model, task=card.task)
        base = load_base_model(settings, labels, dtype=dtype)[1]
        model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    else:
        model = auto.from_pretrained(model_dir, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, place(model, where)
