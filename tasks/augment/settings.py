"""The `augment:` config section: how many rows to add and each strategy's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["char_noise", "word_edit", "synonym", "entity_swap", "paraphrase"]
STRATEGIES: tuple[str, ...] = ("char_noise", "word_edit", "synonym", "entity_swap", "paraphrase")


class CharNoiseSettings(BaseModel):
    """Character-level noise."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.08, gt=0, le=0.5, description="Share of words given noise.")
    kinds: list[Literal["typo", "keyboard", "casing", "punctuation"]] = Field(
        default_factory=lambda: ["typo", "keyboard", "casing", "punctuation"],
        description="Noise kinds: letter swap/drop/double, QWERTY neighbour, case flip, commas.",
    )


class WordEditSettings(BaseModel):
    """Word-level edits that keep every content word."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.1, gt=0, le=0.5, description="Share of words edited.")
    operations: list[Literal["swap", "delete", "insert"]] = Field(
        default_factory=lambda: ["swap", "delete", "insert"],
        description="Swap neighbours, delete a filler word, insert a filler word.",
    )


class SynonymSettings(BaseModel):
    """Offline synonyms: nearest whole-word neighbours in the base model's input embeddings."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.15, gt=0, le=1, description="Share of eligible words replaced.")
    min_similarity: float = Field(
        default=0.5, ge=-1, le=1, description="Lowest cosine similarity of a neighbour."
    )
    top_k: int = Field(default=4, ge=1, description="Neighbours kept per word.")
    protected_words: list[str] = Field(
        default_factory=list,
        description="Words never replaced (negations and placeholders are always kept).",
    )


class EntitySwapSettings(BaseModel):
    """Realistic replacement values from Faker."""

    model_config = ConfigDict(extra="forbid")

    swap_placeholders: bool = Field(
        default=False,
        description="Replace PII placeholders (<PERSON_1>) with fake values, consistently per text.",
    )
    locale: str = Field(default="en_US", description="Faker locale for the fake values.")
    amount_spread: float = Field(
        default=0.5, gt=0, lt=1, description="Money amounts move by up to this share."
    )


class ParaphraseSettings(BaseModel):
    """Model-based paraphrase. Without a model the strategy is skipped (logged)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, description="Local directory or hub id of a seq2seq or causal LM; none: off."
    )
    prompt: str = Field(
        default="Paraphrase: {text}\nParaphrase:", description="Prompt; {text} is the source."
    )
    max_new_tokens: int = Field(default=96, ge=1, description="Longest paraphrase in tokens.")
    temperature: float = Field(default=0.9, gt=0, description="Sampling temperature.")
    batch_size: int = Field(default=8, ge=1, description="Texts per generation batch.")


class AugmentSettings(BaseModel):
    """How many extra training rows to make, and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Augment the training split.")
    ratio: float = Field(
        default=0.2, ge=0, le=5, description="Augmented rows per original training row."
    )
    class_ratios: dict[str, float] = Field(
        default_factory=dict, description="Per-label ratio overriding `ratio` (e.g. rare classes)."
    )
    balance_classes: bool = Field(
        default=False,
        description="Raise each class's ratio so every class reaches the largest one's size.",
    )
    max_per_example: int = Field(
        default=2, ge=1, description="Most augmented rows made from one source row."
    )
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["char_noise", "word_edit", "synonym", "entity_swap"],
        description="Strategies to use; each new row uses one, picked at random.",
    )
    near_duplicate_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Drop new rows whose TF-IDF cosine to any val/test text reaches this.",
    )
    seed: int = Field(default=13, description="Seed: the same seed gives the same rows.")
    char_noise: CharNoiseSettings = Field(default_factory=CharNoiseSettings)
    word_edit: WordEditSettings = Field(default_factory=WordEditSettings)
    synonym: SynonymSettings = Field(default_factory=SynonymSettings)
    entity_swap: EntitySwapSettings = Field(default_factory=EntitySwapSettings)
    paraphrase: ParaphraseSettings = Field(default_factory=ParaphraseSettings)


class AugmentResult(BaseModel):
    train_path: Path
    rows_original: int
    rows_added: int
    per_strategy: dict[str, int]
    per_class: dict[str, int]
    near_duplicates_removed: int
    skipped_strategies: list[str]
    sample_path: Path | None = None


class AugmentError(Exception):
    """A strategy cannot run; the message names the setting to change."""
