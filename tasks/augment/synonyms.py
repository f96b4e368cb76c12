"""Offline synonyms: nearest whole-word neighbours in the base model's input embeddings.

Neighbours in embedding space include inflections and opposites (high/low); the guards here
drop both, so a swap keeps the label.
"""

from __future__ import annotations

import functools
import os
import random

import numpy as np

from tasks.augment.settings import AugmentError, SynonymSettings
from tasks.augment.strategies import DELETABLE, NEGATIONS, match_case, split_token
from tasks.models import ModelError, load_encoder

# Contrast pairs that sit close together in embedding space but mean opposite things.
CONTRASTS = (
    ("high", "low"),
    ("higher", "lower"),
    ("strong", "weak"),
    ("good", "bad"),
    ("early", "late"),
    ("rich", "poor"),
    ("heavy", "light"),
    ("long", "short"),
    ("more", "less"),
    ("most", "least"),
    ("above", "below"),
    ("over", "under"),
    ("positive", "negative"),
    ("increase", "decrease"),
    ("large", "small"),
    ("big", "small"),
    ("easy", "hard"),
    ("safe", "risky"),
    ("best", "worst"),
    ("better", "worse"),
    ("excellent", "terrible"),
    ("clean", "dirty"),
    ("always", "never"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("maximal", "minimal"),
    ("rich", "poverty"),
    ("accept", "reject"),
    ("approve", "decline"),
    ("win", "lose"),
    ("gain", "loss"),
    ("profit", "loss"),
    ("success", "failure"),
    ("secure", "insecure"),
    ("stable", "volatile"),
    ("first", "last"),
    ("thin", "thick"),
    ("slight", "noticeable"),
    ("slight", "significant"),
    ("light", "dark"),
    ("young", "old"),
    ("new", "old"),
    ("open", "closed"),
    ("full", "empty"),
    ("clear", "unclear"),
)
NEGATING_PREFIXES = ("un", "in", "im", "ir", "il", "dis", "non", "mis")


def _is_inflection(a: str, b: str) -> bool:
    """Same word in another form (loan/loans, strong/strength), by shared prefix or shape."""
    from difflib import SequenceMatcher

    prefix = len(os.path.commonprefix([a, b]))
    return (
        prefix >= min(4, len(a) - 1, len(b) - 1)
        or a in b
        or b in a
        or SequenceMatcher(None, a, b).ratio() >= 0.7
    )


def _is_contrast(a: str, b: str) -> bool:
    """An opposite of `a` in any form (weak/stronger), or `a` with a negating prefix."""
    for x, y in CONTRASTS:
        for one, other in ((x, y), (y, x)):
            if _is_inflection(a, one) and _is_inflection(b, other):
                return True
    return any(a.startswith(p + b[:3]) or b.startswith(p + a[:3]) for p in NEGATING_PREFIXES)


def _whole_word(token: str) -> str | None:
    """The word a vocabulary entry stands for when it is a whole lower-case word, else None."""
    if token.startswith("##"):
        return None
    word = token.removeprefix("Ġ").removeprefix("▁")
    return word if word.isalpha() and word.islower() and len(word) >= 3 else None


@functools.lru_cache(maxsize=4)
def _embedding_table(base_model: str) -> tuple[list[str], np.ndarray]:
    """Whole-word vocabulary entries and their L2-normalised input embeddings."""
    try:
        tokenizer, model = load_encoder(base_model, device="cpu")  # a table lookup, not a forward
    except ModelError as exc:
        raise AugmentError(f"augment.synonym needs model.base_model offline: {exc}") from None
    weights = model.get_input_embeddings().weight.detach().float().numpy()
    words, ids, seen = [], [], set()
    for token, idx in tokenizer.get_vocab().items():
        word = _whole_word(token)
        if word is not None and word not in seen and idx < len(weights):
            seen.add(word)
            words.append(word)
            ids.append(idx)
    matrix = weights[ids]
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return words, matrix


def embedding_synonyms(
    base_model: str, words: set[str], settings: SynonymSettings
) -> dict[str, list[str]]:
    """For each word in `words`: up to `top_k` neighbours above `min_similarity`, minus
    inflections of the word, known contrasts (high/low), negating prefixes and protected words."""
    vocab, matrix = _embedding_table(base_model)
    index = {w: i for i, w in enumerate(vocab)}
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    protected = {w.lower() for w in settings.protected_words} | NEGATIONS | DELETABLE
    protected |= set(ENGLISH_STOP_WORDS)
    queries = sorted(w for w in words if w in index and w not in protected)
    if not queries:
        return {}
    sims = matrix[[index[w] for w in queries]] @ matrix.T
    table: dict[str, list[str]] = {}
    for row, word in zip(sims, queries, strict=True):
        order = np.argsort(-row)[: settings.top_k * 8 + 1]
        picks = []
        for j in order:
            cand = vocab[j]
            if row[j] < settings.min_similarity or len(picks) >= settings.top_k:
                break
            if cand == word or cand in protected or _is_inflection(word, cand):
                continue
            if _is_contrast(word, cand):
                continue
            picks.append(cand)
        if picks:
            table[word] = picks
    return table


def synonym_swap(
    text: str, rng: random.Random, table: dict[str, list[str]], settings: SynonymSettings
) -> str:
    tokens = text.split(" ")
    spots = [i for i, t in enumerate(tokens) if (p := split_token(t)) and p[1].lower() in table]
    if not spots:
        return text
    for i in rng.sample(spots, max(1, round(len(spots) * settings.rate))):
        pre, word, post = split_token(tokens[i])  # type: ignore[misc]
        tokens[i] = pre + match_case(word, rng.choice(table[word.lower()])) + post
    return " ".join(tokens)
