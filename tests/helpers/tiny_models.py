"""Tiny randomly initialised models for tests and benchmarks, built offline in seconds.

Nothing is downloaded: each builder writes a word-level tokenizer over the given texts and a
2-layer model with random weights, enough to exercise training, evaluation and serving.
"""

from __future__ import annotations

from pathlib import Path


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


def build_tiny_bert(path: Path, texts: list[str]) -> Path:
    """A 2-layer, 32-dim BERT encoder with a word-level tokenizer over the words of `texts`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    words = set()
    for text in texts:
        words.update((text or "").lower().replace(".", " ").replace(",", " ").split())
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=True,
    )
    fast.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(path)
    return path
