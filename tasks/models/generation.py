"""Prompting and the one batched generation core.

Training (ROUGE during evaluation steps), serving (`TextGenerator`) and standalone evaluation
(`tasks.evaluate.generate_texts`, with beams or sampling) all generate through
`generate_batched`, so batching, padding and decoding of new tokens are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.models.card import PROMPT_SLOT, ModelError, ModelSettings
from tasks.models.loading import model_device

_SENTINEL = "\u241fTUNEGATE_INPUT\u241f"


def prompt_parts(tokenizer, model_settings: ModelSettings) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """Token ids before and after the input text, from the chat template (with
    `model.system_prompt` as its system message) or the prompt template."""
    style = model_settings.prompt_style
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "template"
    if style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(
                "model.prompt_style: chat, but the tokenizer has no chat template; use template"
            )
        messages = [{"role": "user", "content": _SENTINEL}]
        if model_settings.system_prompt:
            messages.insert(0, {"role": "system", "content": model_settings.system_prompt})
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
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


def generate_batched(
    model,  # noqa: ANN001 - a transformers causal LM
    tokenizer,  # noqa: ANN001 - its tokenizer (pad token set)
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Continuations of tokenised prompts, special tokens removed, stripped, in input order.

    Prompts are sorted by length so each left-padded batch pads little. `options` go to
    `model.generate` (beams, sampling, eos) over greedy defaults; `progress(done, total)` is
    called after each batch. Inputs go to the model's device.
    """
    import torch

    device = model_device(model)
    pad = tokenizer.pad_token_id
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad}
    kwargs.update(options or {})
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor(
                [[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=device
            )
            mask = torch.tensor(
                [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                device=device,
            )
            generated = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(chunk, texts, strict=True):
                outputs[i] = text.strip()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    return outputs


def generate_from_ids(
    model,  # noqa: ANN001
    tokenizer,  # noqa: ANN001
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers, stopping at the tokenizer's end-of-sequence token, as training taught
    the model to answer: training's evaluation steps and serving decode this way."""
    return generate_batched(
        model,
        tokenizer,
        prompts,
        max_new_tokens,
        batch_size,
        options={"eos_token_id": tokenizer.eos_token_id},
    )
