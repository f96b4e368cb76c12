"""The datasets a run trains and evaluates on, built from the split parquet files.

Classification: tokenized text and the label's index in the head. Generation: prompt + target ids
with the loss masked on the prompt; an input is cut to make room, an example whose target would be
cut is dropped and counted (`TruncationReport`), never cut silently. Validation also yields a few
prompts to generate from, for ROUGE.

Packed generation (`train.packing`): the same examples, concatenated per batch into one row with
position ids restarting at each example (transformers' `DataCollatorWithFlattening`), so short
examples stop paying for the longest one; the masking and truncation above are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.models import encode_prompt, prompt_parts
from tasks.train.settings import TrainingError, TrainJob, TruncationReport


@dataclass
class TrainData:
    """What the Trainer needs from the data, whichever the task."""

    train: Any
    val: Any
    collator: Any
    metric: str
    truncation: dict[str, TruncationReport] = field(default_factory=dict)
    eval_prompts: list[list[int]] = field(default_factory=list)
    eval_targets: list[str] = field(default_factory=list)


def build_datasets(job: TrainJob, tokenizer, packed: bool = False) -> TrainData:  # noqa: ANN001
    """The task decides the columns, the collator and the metric the best checkpoint is kept by."""
    if job.model.task == "generation":
        return _generation_data(job, tokenizer, packed)
    return _classification_data(job, tokenizer)


def _classification_data(job: TrainJob, tokenizer) -> TrainData:  # noqa: ANN001
    from transformers import DataCollatorWithPadding

    labels, max_length = job.labels or [], job.model.max_length
    return TrainData(
        train=classification_dataset(
            pd.read_parquet(job.train_path), tokenizer, labels, max_length
        ),
        val=classification_dataset(pd.read_parquet(job.val_path), tokenizer, labels, max_length),
        collator=DataCollatorWithPadding(tokenizer),
        metric="f1_macro",
    )


def generation_collator(tokenizer, packed: bool):  # noqa: ANN001, ANN201
    """Padded batches, or one packed row per batch with per-example position ids."""
    from transformers import DataCollatorForSeq2Seq

    if packed:
        return PackedCollator()
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)


class PackedCollator:
    """`DataCollatorWithFlattening`, plus `use_cache=False` in every batch.

    transformers separates packed examples only when the forward pass has no cache; a causal LM
    whose config says `use_cache` builds one even in training, and its examples would then
    attend to each other without an error. The first label of each example becomes -100, which
    the prompt mask has already made it.
    """

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)

    def __call__(self, features: list[dict]) -> dict:
        batch = self.flatten(features)
        batch["use_cache"] = False
        return batch


def _generation_data(job: TrainJob, tokenizer, packed: bool) -> TrainData:  # noqa: ANN001
    from datasets import Dataset

    settings = job.model
    parts = prompt_parts(tokenizer, settings)
    data = TrainData(
        train=None,
        val=None,
        collator=generation_collator(tokenizer, packed),
        metric="rouge_l",
    )
    frames = {
        "train": read_generation_frame(job.train_path),
        "val": read_generation_frame(job.val_path),
    }
    for name, frame in frames.items():
        rows, data.truncation[name] = generation_examples(
            frame, tokenizer, parts, settings.max_length
        )
        if not rows:
            raise TrainingError(
                f"model.max_length: {settings.max_length} tokens leave no room for any "
                f"{name} target; raise it"
            )
        setattr(data, name, Dataset.from_list(rows))
    sample = frames["val"].head(job.train.generation_eval_samples)
    budget = settings.max_length - len(parts[0]) - len(parts[1])
    for text, target in zip(sample["text"], sample["target"], strict=True):
        data.eval_prompts.append(encode_prompt(tokenizer, parts, str(text), budget)[0])
        data.eval_targets.append(str(target))
    return data


def classification_dataset(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int):  # noqa: ANN001, ANN201
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
