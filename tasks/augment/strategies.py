"""The rewrite strategies that need no model: character noise, word edits, entity swaps.

Each takes a text, a seeded `random.Random` and its settings, and returns the rewrite; the
same seed gives the same rewrite. Placeholders (`<PERSON_1>`) and negations are never touched.
"""

from __future__ import annotations

import functools
import random
import re

from tasks.augment.settings import CharNoiseSettings, EntitySwapSettings, WordEditSettings

PLACEHOLDER = re.compile(r"<([A-Z]+(?:_[A-Z]+)*)_(\d+)>")
MAX_DRAWS = 8  # random redraws of a money amount before it moves by one step
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
QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


# --- tokens ----------------------------------------------------------------------------------


def split_token(token: str) -> tuple[str, str, str] | None:
    """(leading punctuation, word, trailing punctuation) for a plain word token, else None."""
    if PLACEHOLDER.search(token):
        return None
    match = TOKEN.match(token)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def match_case(template: str, word: str) -> str:
    """`word` in the case of `template` (UPPER, Capitalised, as is), so a swap reads naturally."""
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
        if (p := split_token(t)) is not None and p[1].lower() not in NEGATIONS
    ]
    if not candidates:
        return text
    for i in rng.sample(candidates, max(1, round(len(candidates) * settings.rate))):
        pre, word, post = split_token(tokens[i])  # type: ignore[misc]
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
                    if (p := split_token(t)) and p[1].lower() in DELETABLE and not p[0] and not p[2]
                ]
                if spots and len(tokens) > 3:
                    del tokens[rng.choice(spots)]
                    break
            elif op == "swap":
                spots = [
                    i
                    for i in range(len(tokens) - 1)
                    if (a := split_token(tokens[i]))
                    and (b := split_token(tokens[i + 1]))
                    and not a[2]
                    and not b[0]
                    and a[1].lower() not in NEGATIONS
                    and b[1].lower() not in NEGATIONS
                    and a[1].lower() != b[1].lower()
                ]
                if spots:
                    i = rng.choice(spots)
                    a, b = split_token(tokens[i]), split_token(tokens[i + 1])
                    first = match_case(a[1], b[1]) if a[1][:1].isupper() else b[1]
                    second = a[1].lower() if a[1][:1].isupper() and not a[1].isupper() else a[1]
                    tokens[i], tokens[i + 1] = a[0] + first, second + b[2]
                    break
            else:
                spots = [i for i in range(1, len(tokens)) if split_token(tokens[i - 1])]
                if spots:
                    tokens.insert(rng.choice(spots), rng.choice(FILLERS))
                    break
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
        # a few draws, then the next step up: a small amount ("£1") may have no other value
        # within the spread, and redrawing until it differs would never end
        for _ in range(MAX_DRAWS):
            new = max(step, round(value * rng.uniform(1 - spread, 1 + spread) / step) * step)
            if new != value:
                break
        else:
            new = value + step
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
