"""Tiny randomly initialised models and a templated summarization set, built offline in seconds.

For tests, benchmarks and smoke runs of the generation path: nothing is downloaded. The
summaries are extractions from a fixed sentence pattern, so a small model can learn them and ROUGE
shows it.
"""

from __future__ import annotations

import random
from pathlib import Path

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
VERBS = ["bought", "returned", "ordered", "cancelled"]
COUNTS = ["one", "two", "three", "four", "five"]
COLOURS = ["red", "blue", "green", "black", "white"]
ITEMS = ["chairs", "tables", "lamps", "desks", "shelves", "beds"]
CITIES = ["oslo", "lima", "cairo", "perth", "quito", "dakar"]
DAYS = ["monday", "tuesday", "friday", "sunday"]
PAYMENTS = ["card", "cash", "voucher"]


def summarization_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`text` (a support note) and `target` (its one-line summary)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, verb, count = rng.choice(NAMES), rng.choice(VERBS), rng.choice(COUNTS)
        colour, item, city = rng.choice(COLOURS), rng.choice(ITEMS), rng.choice(CITIES)
        day, pay = rng.choice(DAYS), rng.choice(PAYMENTS)
        text = (
            f"note {i % 50} : on {day} the customer {name} {verb} {count} {colour} {item} "
            f"at the {city} store and paid by {pay} ."
        )
        rows.append({"text": text, "target": f"{name} {verb} {count} {colour} {item}"})
    return rows


def build_tiny_llama(
    path: Path,
    texts: list[str],
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    chat_template: str | None = None,
) -> Path:
    """A Llama-architecture causal LM with a word-level tokenizer over the words of `texts`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    pre = pre_tokenizers.Whitespace()
    words = sorted(
        {w for text in texts for w, _ in pre.pre_tokenize_str(text.lower())}
        | {"###", "response", ":", "user", "assistant"}
    )
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    return path
