"""Augment the training split with label-preserving rewrites, each tagged with its strategy.

Strategies (each with its own settings section under `augment`):
- `char_noise`: typos, keyboard slips, casing and punctuation noise, the way real notes arrive;
- `word_edit`: swap neighbouring words, delete filler words, insert filler words;
- `synonym`: whole words replaced with nearest neighbours in the base model's own input-embedding
  space (offline, no lexicon download), with guards against antonyms and inflections;
- `entity_swap`: money amounts and dates replaced with other realistic values, and (optionally)
  PII placeholders (`<PERSON_1>`) replaced consistently with fake values from Faker -- never with
  the scrubbed originals, which this stage never sees;
- `paraphrase`: a configured transformers model rewrites the text; skipped (logged) when none is
  configured.
The label of every new row is its source row's label. Only the training split is augmented, and
new rows that are near-duplicates of a validation or test text are dropped, so nothing leaks into
evaluation. The `source` column says where a row came from (`original` or the strategy name).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Strategy = Literal["char_noise", "word_edit", "synonym", "entity_swap", "paraphrase"]
STRATEGIES: tuple[str, ...] = ("char_noise", "word_edit", "synonym", "entity_swap", "paraphrase")
PLACEHOLDER = re.compile(r"<([A-Z]+(?:_[A-Z]+)*)_(\d+)>")
MONEY = re.compile(r"(?<![\w.])([$€£])(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{2})?(?![\d,]*\d)")
ISO_DATE = re.compile(r"\b(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
SLASH_DATE = re.compile(r"\b(0?[1-9]|[12]\d|3[01])/(0?[1-9]|1[0-2])/((?:19|20)\d{2})\b")
MONTHS = (
    "January February March April May June July August September October November December"
).split()
LONG_DATE = re.compile(r"\b(" + "|".join(MONTHS) + r") (\d{1,2}), ((?:19|20)\d{2})\b")
TOKEN = re.compile(r"^(\W*?)([A-Za-z]+(?:['’-][A-Za-z]+)*)(\W*)$")

# Words a rewrite must never remove or replace: negations and the like flip meaning.
NEGATIONS = frozenset(
    "no not never none nor nothing nobody nowhere without cannot can't don't doesn't didn't "
    "isn't wasn't aren't weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't".split()
)
# Function and filler words whose deletion leaves the meaning intact.
DELETABLE = frozenset(
    "a an the very really quite just also so rather fairly somewhat indeed actually overall "
    "then still even that".split()
)
FILLERS = ("also", "indeed", "overall", "actually", "notably", "currently", "reportedly")
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
QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


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


# --- tokens ----------------------------------------------------------------------------------


def _split(token: str) -> tuple[str, str, str] | None:
    """(leading punctuation, word, trailing punctuation) for a plain word token, else None."""
    if PLACEHOLDER.search(token):
        return None
    match = TOKEN.match(token)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# --- character noise -------------------------------------------------------------------------


def _keyboard_neighbour(ch: str, rng: random.Random) -> str:
    low = ch.lower()
    for r, row in enumerate(QWERTY_ROWS):
        if low in row:
            c = row.index(low)
            options = [row[c - 1]] if c > 0 else []
            options += [row[c + 1]] if c + 1 < len(row) else []
            for rr in (r - 1, r + 1):
                if 0 <= rr < len(QWERTY_ROWS) and c < len(QWERTY_ROWS[rr]):
                    options.append(QWERTY_ROWS[rr][c])
            new = rng.choice(options)
            return new.upper() if ch.isupper() else new
    return ch


def _noisy_word(word: str, kind: str, rng: random.Random) -> str:
    if kind == "casing":
        return word.lower() if word[:1].isupper() else word[:1].upper() + word[1:]
    if len(word) < 4:
        return word
    j = rng.randrange(1, len(word) - 1)
    if kind == "keyboard":
        return word[:j] + _keyboard_neighbour(word[j], rng) + word[j + 1 :]
    op = rng.choice(["swap", "drop", "double"])
    if op == "swap" and word[j] != word[j + 1]:
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if op == "drop":
        return word[:j] + word[j + 1 :]
    return word[:j] + word[j] + word[j:]


def char_noise(text: str, rng: random.Random, settings: CharNoiseSettings) -> str:
    """Noise in about `rate` of the words; placeholders and negations kept intact."""
    tokens = text.split(" ")
    candidates = [
        i
        for i, t in enumerate(tokens)
        if (p := _split(t)) is not None and p[1].lower() not in NEGATIONS
    ]
    if not candidates:
        return text
    for i in rng.sample(candidates, max(1, round(len(candidates) * settings.rate))):
        pre, word, post = _split(tokens[i])  # type: ignore[misc]
        kind = rng.choice(settings.kinds)
        if kind == "punctuation":
            if post in {".", ","}:
                post = "" if rng.random() < 0.5 else ("," if post == "." else ".")
            else:
                post = post + rng.choice([",", ";", " -"])
            tokens[i] = pre + word + post
        else:
            tokens[i] = pre + _noisy_word(word, kind, rng) + post
    return " ".join(tokens)


# --- word edits ------------------------------------------------------------------------------


def word_edit(text: str, rng: random.Random, settings: WordEditSettings) -> str:
    """Swap neighbouring words, delete filler words, insert fillers; content words all kept."""
    tokens = text.split(" ")
    n_edits = max(1, round(len(tokens) * settings.rate))
    for _ in range(n_edits):
        ops = list(settings.operations)
        rng.shuffle(ops)
        for op in ops:
            if op == "delete":
                spots = [
                    i
                    for i, t in enumerate(tokens)
                    if (p := _split(t)) and p[1].lower() in DELETABLE and not p[0] and not p[2]
                ]
                if spots and len(tokens) > 3:
                    del tokens[rng.choice(spots)]
                    break
            elif op == "swap":
                spots = [
                    i
                    for i in range(len(tokens) - 1)
                    if (a := _split(tokens[i]))
                    and (b := _split(tokens[i + 1]))
                    and not a[2]
                    and not b[0]
                    and a[1].lower() not in NEGATIONS
                    and b[1].lower() not in NEGATIONS
                    and a[1].lower() != b[1].lower()
                ]
                if spots:
                    i = rng.choice(spots)
                    a, b = _split(tokens[i]), _split(tokens[i + 1])
                    first = _match_case(a[1], b[1]) if a[1][:1].isupper() else b[1]
                    second = a[1].lower() if a[1][:1].isupper() and not a[1].isupper() else a[1]
                    tokens[i], tokens[i + 1] = a[0] + first, second + b[2]
                    break
            else:
                spots = [i for i in range(1, len(tokens)) if _split(tokens[i - 1])]
                if spots:
                    tokens.insert(rng.choice(spots), rng.choice(FILLERS))
                    break
    return " ".join(tokens)


# --- synonyms --------------------------------------------------------------------------------


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
    from transformers import AutoModel, AutoTokenizer

    from tasks.models import resolve_base_model

    source = resolve_base_model(base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except OSError as exc:
        raise AugmentError(
            f"augment.synonym needs model.base_model '{base_model}' offline: "
            f"{str(exc).splitlines()[0]}"
        ) from None
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
    spots = [i for i, t in enumerate(tokens) if (p := _split(t)) and p[1].lower() in table]
    if not spots:
        return text
    for i in rng.sample(spots, max(1, round(len(spots) * settings.rate))):
        pre, word, post = _split(tokens[i])  # type: ignore[misc]
        tokens[i] = pre + _match_case(word, rng.choice(table[word.lower()])) + post
    return " ".join(tokens)


# --- entity and number swaps -----------------------------------------------------------------


def _fake_value(kind: str, fake) -> str:  # noqa: ANN001 - a Faker instance
    makers = {
        "PERSON": fake.name,
        "EMAIL": fake.email,
        "PHONE": fake.phone_number,
        "SSN": fake.ssn,
        "CARD": fake.credit_card_number,
        "IBAN": fake.iban,
        "IP": fake.ipv4_public,
        "ADDRESS": lambda: fake.address().replace("\n", ", "),
        "LOCATION": fake.city,
        "ACCOUNT": fake.bban,
        "DATE": lambda: fake.date(pattern="%B %d, %Y"),
    }
    return makers.get(kind, fake.word)()


@functools.lru_cache(maxsize=8)
def _faker(locale: str):  # noqa: ANN202
    from faker import Faker

    return Faker(locale)


def entity_swap(text: str, rng: random.Random, settings: EntitySwapSettings) -> str:
    """Money amounts and dates moved to other realistic values; placeholders (optionally)
    replaced with fake values, the same placeholder by the same value within a text. Plain
    numbers stay: they can carry the label ("90 days past due")."""
    fake = _faker(settings.locale)
    fake.seed_instance(rng.randrange(2**31))
    spread = settings.amount_spread

    def money(match: re.Match) -> str:
        value = int(match.group(2).replace(",", ""))
        step = 100 if value >= 1000 else 10 if value >= 100 else 1
        new = value
        while new == value:
            new = max(step, round(value * rng.uniform(1 - spread, 1 + spread) / step) * step)
        return f"{match.group(1)}{new:,}"

    def iso(_: re.Match) -> str:
        return fake.date(pattern="%Y-%m-%d")

    def slash(_: re.Match) -> str:
        return fake.date(pattern="%d/%m/%Y")

    def long(_: re.Match) -> str:
        d = fake.date_object()
        return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"

    text = MONEY.sub(money, text)
    text = ISO_DATE.sub(iso, text)
    text = SLASH_DATE.sub(slash, text)
    text = LONG_DATE.sub(long, text)
    if settings.swap_placeholders:
        values: dict[str, str] = {}

        def placeholder(match: re.Match) -> str:
            key = match.group(0)
            if key not in values:
                values[key] = _fake_value(match.group(1), fake)
            return values[key]

        text = PLACEHOLDER.sub(placeholder, text)
    return text


# --- paraphrase ------------------------------------------------------------------------------


class Paraphraser:
    """A seq2seq or causal LM that rewrites texts; rejects rewrites that drop placeholders."""

    def __init__(self, settings: ParaphraseSettings, seed: int) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        from tasks.models import resolve_base_model

        self.settings = settings
        source = resolve_base_model(str(settings.model))
        try:
            config = AutoConfig.from_pretrained(source)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.seq2seq = bool(config.is_encoder_decoder)
            loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
            self.model = loader.from_pretrained(source).eval()
        except (OSError, ValueError) as exc:
            raise AugmentError(
                f"augment.paraphrase.model '{settings.model}' could not be loaded offline: "
                f"{str(exc).splitlines()[0]}; set it to a local model directory or null"
            ) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._torch = torch
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            self.model.to("cuda")

    def __call__(self, texts: list[str]) -> list[str | None]:
        out: list[str | None] = []
        s = self.settings
        for start in range(0, len(texts), s.batch_size):
            batch = texts[start : start + s.batch_size]
            prompts = [s.prompt.format(text=t) for t in batch]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            with self._torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=s.temperature,
                    top_p=0.95,
                    max_new_tokens=s.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            if not self.seq2seq:
                generated = generated[:, enc["input_ids"].shape[1] :]
            for source, ids in zip(batch, generated, strict=True):
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                text = text.split("\n")[0].strip()
                out.append(text if _acceptable_paraphrase(source, text) else None)
        return out


def _acceptable_paraphrase(source: str, text: str) -> bool:
    if not text or text == source or not 0.5 <= len(text) / max(len(source), 1) <= 2.0:
        return False
    return sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(text))


# --- the stage -------------------------------------------------------------------------------


def class_targets(labels: pd.Series, settings: AugmentSettings) -> dict[str, int]:
    """New rows to make per label: `class_ratios` or `ratio`, raised to balance classes when
    asked, capped at `max_per_example` per source row."""
    counts = labels.value_counts()
    largest = int(counts.max()) if len(counts) else 0
    targets = {}
    for label, count in counts.items():
        n = round(count * settings.class_ratios.get(str(label), settings.ratio))
        if settings.balance_classes:
            n = max(n, round(largest * (1 + settings.ratio)) - int(count))
        targets[str(label)] = min(n, int(count) * settings.max_per_example)
    return targets


def near_duplicate_mask(candidates: list[str], held_out: list[str], threshold: float) -> np.ndarray:
    """True where a candidate's TF-IDF cosine (words 1-2 grams) to any held-out text >= threshold."""
    if not candidates or not held_out:
        return np.zeros(len(candidates), dtype=bool)
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tasks.validate import normalise_text

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit([normalise_text(t) for t in held_out + candidates])
    a = vectorizer.transform([normalise_text(t) for t in candidates])
    b = vectorizer.transform([normalise_text(t) for t in held_out])
    best = np.zeros(len(candidates))
    for start in range(0, len(candidates), 2048):
        block = (a[start : start + 2048] @ b.T).max(axis=1).toarray().ravel()
        best[start : start + 2048] = block
    return best >= threshold - 1e-9


def augment_frame(
    frame: pd.DataFrame,
    settings: AugmentSettings,
    held_out: list[str] | None = None,
    base_model: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`frame` (source='original') plus augmented rows, deterministic for a seed; and stats.

    `held_out`: val/test texts; new rows that are near-duplicates of one are dropped.
    `base_model`: whose embeddings give synonyms (the `synonym` strategy is skipped without one).
    """
    rng = random.Random(settings.seed)
    original = frame.assign(source="original")
    stats: dict = {"near_duplicates_removed": 0, "skipped_strategies": [], "unchanged": 0}
    if not settings.enabled or not settings.strategies:
        return original, stats
    strategies = list(dict.fromkeys(settings.strategies))
    if "paraphrase" in strategies and settings.paraphrase.model is None:
        log.info("augment: paraphrase skipped: no augment.paraphrase.model configured")
        strategies.remove("paraphrase")
        stats["skipped_strategies"].append("paraphrase")
    table: dict[str, list[str]] = {}
    if "synonym" in strategies:
        if base_model is None:
            log.info("augment: synonym skipped: no base model given for embedding neighbours")
            strategies.remove("synonym")
            stats["skipped_strategies"].append("synonym")
        else:
            words = {
                p[1].lower() for t in frame["text"] for tok in t.split(" ") if (p := _split(tok))
            }
            table = embedding_synonyms(base_model, words, settings.synonym)
    if not strategies:
        return original, stats

    paraphraser = (
        Paraphraser(settings.paraphrase, settings.seed) if "paraphrase" in strategies else None
    )
    plans: list[tuple[int, str]] = []
    targets = class_targets(frame["label"], settings)
    for label, n_new in sorted(targets.items()):
        positions = [i for i, lbl in enumerate(frame["label"]) if str(lbl) == label]
        order: list[int] = []
        while len(order) < n_new:
            batch = positions[:]
            rng.shuffle(batch)
            order += batch
        plans += [(i, rng.choice(strategies)) for i in order[:n_new]]

    rewrites: dict[int, str | None] = {}
    if paraphraser is not None:
        wanted = sorted({i for i, s in plans if s == "paraphrase"})
        texts = paraphraser([str(frame["text"].iloc[i]) for i in wanted])
        rewrites = dict(zip(wanted, texts, strict=True))

    def apply(strategy: str, text: str, i: int) -> str:
        if strategy == "char_noise":
            return char_noise(text, rng, settings.char_noise)
        if strategy == "word_edit":
            return word_edit(text, rng, settings.word_edit)
        if strategy == "synonym":
            return synonym_swap(text, rng, table, settings.synonym)
        if strategy == "entity_swap":
            return entity_swap(text, rng, settings.entity_swap)
        return rewrites.pop(i, None) or text

    rows = []
    seen = set(frame["text"])
    for i, strategy in plans:
        row = frame.iloc[i]
        text = apply(strategy, row["text"], i)
        if text == row["text"] or text in seen:
            # strategies that find nothing to change (no amounts, no synonyms) hand over
            fallback = [s for s in strategies if s not in (strategy, "paraphrase")]
            rng.shuffle(fallback)
            for other in fallback:
                text = apply(other, row["text"], i)
                if text != row["text"] and text not in seen:
                    strategy = other
                    break
        if text == row["text"] or text in seen:
            stats["unchanged"] += 1
            continue
        seen.add(text)
        rows.append({**row.to_dict(), "text": text, "source": strategy, "source_row": int(i)})
    added = pd.DataFrame(rows)
    if len(added) and held_out:
        dup = near_duplicate_mask(
            added["text"].tolist(), list(held_out), settings.near_duplicate_threshold
        )
        stats["near_duplicates_removed"] = int(dup.sum())
        added = added[~dup]
    if not len(added):
        return original, stats
    return pd.concat([original, added], ignore_index=True), stats


def sample_table(augmented: pd.DataFrame, per_strategy: int = 3) -> list[dict[str, str]]:
    """A few (strategy, original -> augmented) pairs per strategy, for people to read."""
    originals = augmented[augmented["source"] == "original"]
    added = augmented[augmented["source"] != "original"]
    rows = []
    for strategy, group in added.groupby("source", sort=True):
        for _, row in group.head(per_strategy).iterrows():
            rows.append(
                {
                    "strategy": str(strategy),
                    "label": str(row["label"]),
                    "original": str(originals["text"].iloc[int(row["source_row"])]),
                    "augmented": str(row["text"]),
                }
            )
    return rows


def augment_file(
    train_path: Path,
    settings: AugmentSettings,
    out_path: Path,
    held_out_paths: list[Path] | None = None,
    base_model: str | None = None,
) -> AugmentResult:
    """Read a training parquet, augment it, write `out_path` and a sample table beside it."""
    frame = pd.read_parquet(train_path)
    held_out = [t for p in held_out_paths or [] for t in pd.read_parquet(p)["text"].astype(str)]
    augmented, stats = augment_frame(frame, settings, held_out, base_model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    augmented.to_parquet(out_path, index=False)
    added = augmented[augmented["source"] != "original"]
    sample_path = out_path.with_name(out_path.stem + "_samples.json")
    pd.DataFrame(sample_table(augmented)).to_json(sample_path, orient="records", indent=1)
    return AugmentResult(
        train_path=out_path,
        rows_original=len(frame),
        rows_added=len(added),
        per_strategy={str(k): int(v) for k, v in added["source"].value_counts().items()}
        if len(added)
        else {},
        per_class={str(k): int(v) for k, v in added["label"].value_counts().items()}
        if len(added)
        else {},
        near_duplicates_removed=stats["near_duplicates_removed"],
        skipped_strategies=stats["skipped_strategies"],
        sample_path=sample_path,
    )


@task(name="augment")
def augment_task(
    train_path: Path,
    settings: AugmentSettings,
    out_dir: Path,
    held_out_paths: list[Path] | None = None,
    base_model: str | None = None,
) -> AugmentResult:
    result = augment_file(
        train_path, settings, out_dir / "train_augmented.parquet", held_out_paths, base_model
    )
    log.info(
        "augmented %d rows with %d new (%s); %d near-duplicates of val/test dropped",
        result.rows_original,
        result.rows_added,
        ", ".join(f"{k}={v}" for k, v in sorted(result.per_strategy.items())) or "none",
        result.near_duplicates_removed,
    )
    return result
