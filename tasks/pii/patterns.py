"""The regexes, word lists and checks the recognizers share, without Presidio.

Light to import: `tasks.pii` re-exports `luhn_valid` and the gazetteers, and reading a config
must not load Presidio or spaCy. The long word lists live in `words/*.txt` (package data), one
entry a line, so that a reviewer can read and extend them without touching code.
"""

from __future__ import annotations

import functools
import importlib
import re
from importlib import resources
from pathlib import Path


@functools.cache
def word_list(name: str) -> tuple[str, ...]:
    """The entries of `words/<name>.txt`, in file order; read once per process."""
    text = resources.files("tasks.pii").joinpath("words", f"{name}.txt").read_text("utf-8")
    return tuple(line for line in (raw.strip() for raw in text.splitlines()) if line)


def _alternatives(name: str) -> str:
    return "|".join(re.escape(word) for word in word_list(name))


TITLES = rf"(?:{_alternatives('titles')})\.?"
_UP = r"A-ZÀ-ÖØ-Þ\u1e00-\u1efeĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽȘȚ"
_LO = r"a-zß-öø-ÿ\u1e01-\u1effāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĳĵķĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżžșț"
# A capitalised name token: letters incl. accents, optionally hyphenated or with an apostrophe
# (O'Brien, D'Angelo, Jean-Luc, Al-Sayed, McDonald).
NAME_TOKEN = (
    rf"(?:[{_UP}]['’])?[{_UP}][{_LO}]+(?:[{_UP}][{_LO}]+)?"
    rf"(?:-(?:[{_LO}]{{1,3}}-)?[{_UP}{_LO}][{_LO}]+)*"
)
PARTICLE = rf"(?:{_alternatives('particles')})"
SURNAME = rf"(?:{PARTICLE}\s+)*{NAME_TOKEN}(?:\s+(?:{PARTICLE}\s+)*{NAME_TOKEN})?"
# Words in front of a name in records about people.
CUES = rf"(?:{_alternatives('cues')})"

# Capitalised words that open sentences in business text and are never names on their own.
NOT_NAMES = frozenset(word_list("not_names"))


def stop_words() -> frozenset[str]:
    """spaCy's English stop words, capitalised: sentence openers that are never names."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(w.capitalize() for w in STOP_WORDS)


@functools.lru_cache(maxsize=1)
def name_gazetteers() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names) from Faker's person providers across every locale (offline).

    Only Latin-script entries are kept: the detector works on romanised text.
    """
    import faker.providers.person as person

    firsts: set[str] = set()
    lasts: set[str] = set()
    latin = re.compile(rf"^[{_UP}][{_LO}A-Za-z'’-]+$")
    for locale_dir in Path(person.__file__).parent.iterdir():
        if not locale_dir.is_dir() or locale_dir.name.startswith("_"):
            continue
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale_dir.name}").Provider
        except Exception:  # noqa: BLE001 - a locale module that fails to import adds no names
            continue
        for attrs, target in (
            (("first_names", "first_names_male", "first_names_female"), firsts),
            (("last_names",), lasts),
        ):
            for attr in attrs:
                values = getattr(provider, attr, ())
                if not isinstance(values, list | tuple | dict):
                    continue
                for v in values:
                    if isinstance(v, str):
                        target.update(p for p in re.split(r"[\s]+", v) if latin.match(p))
    blocked = NOT_NAMES | stop_words()
    return (
        frozenset(n for n in firsts if n not in blocked and len(n) > 1),
        frozenset(n for n in lasts if n not in blocked and len(n) > 2),
    )


def first_name_gazetteer() -> frozenset[str]:
    """The first-name half of `name_gazetteers`, for callers that need only that."""
    return name_gazetteers()[0]


def luhn_valid(number: str) -> bool:
    """True when the digits of `number` (13-19 of them) pass the Luhn card checksum."""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# "and" in the languages of Faker's company names: "Tanghe, Schoofs en De Baets NV".
CONJUNCTIONS = r"(?:and|&|und|et|y|e|en|og|och|ve|i)"

DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?,?\s+\d{4}"
    r"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"
)
DATE_ONLY = re.compile(rf"^{DATE}$", re.IGNORECASE)


# --- Things that are not people: phrases, words of such phrases, and ordinary lower-case words.

PAYMENT_BRANDS = word_list("payment_brands")
# Lower-case nouns after a capitalised run that make it a modifier: "American Express card".
THING_NOUNS = frozenset(word_list("thing_nouns"))
# Words before a run that make it a thing or place, not a person: "the Czech Republic".
DETERMINERS = frozenset(
    "the a an my your our their his her its this that these those any every no some "
    "in into within across throughout via".split()
)


def _faker_values(
    kind: str, attrs: tuple[str, ...], locales: tuple[str, ...] | None = None
) -> list[str]:
    """Every string (or string inside a tuple/dict) of `attrs` in Faker's `kind` providers,
    across `locales` (default: all): offline gazetteers of countries, currencies, places..."""
    base = importlib.import_module(f"faker.providers.{kind}")
    modules = [base] + [
        f"faker.providers.{kind}.{d.name}"
        for d in Path(base.__file__).parent.iterdir()
        if d.is_dir() and not d.name.startswith("_") and (locales is None or d.name in locales)
    ]
    out: list[str] = []
    for module in modules:
        try:
            provider = (
                module if not isinstance(module, str) else importlib.import_module(module)
            ).Provider
        except Exception:  # noqa: BLE001 - a locale module that fails to import adds nothing
            continue
        for attr in attrs:
            values = vars(provider).get(attr, ())
            if isinstance(values, dict):
                values = list(values) + list(values.values())
            if not isinstance(values, list | tuple):
                continue
            for v in values:
                parts = v if isinstance(v, list | tuple) else (v,)
                out.extend(p for p in parts if isinstance(p, str))
    return out


# Locales whose place lists are read (Latin script; the detector works on romanised text).
_WESTERN = tuple(
    "en_US en_GB en_AU en_CA en_IE en_NZ en_IN de_DE de_AT de_CH fr_FR fr_CA fr_CH es_ES "
    "es_MX it_IT nl_NL nl_BE pt_PT pt_BR pl_PL sv_SE da_DK no_NO fi_FI cs_CZ ro_RO tr_TR".split()
)
_ENGLISH = ("en_US", "en_GB", "en_AU", "en_CA", "en_IE", "en_NZ")


@functools.lru_cache(maxsize=1)
def thing_gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(phrases, words): names of countries, currencies, cities, regions, banks, card brands,
    company suffixes, months and weekdays, from Faker's providers (all locales) and the payment
    brands list, lower-cased; and the capitalised words of those phrases that are not also in
    the person-name gazetteers ("Republic", "Dollar", "Express"), which no person's name holds.
    """
    import faker.providers.credit_card as credit_card

    raw = [
        *_faker_values("address", ("countries",)),
        *_faker_values(
            "address", ("states", "provinces", "regions", "counties", "territories"), _WESTERN
        ),
        *_faker_values("currency", ("currencies", "cryptocurrencies")),
        *_faker_values("bank", ("banks",)),
        *_faker_values("company", ("company_suffixes",)),
        *_faker_values("date_time", ("MONTH_NAMES", "DAY_NAMES")),
        *(t.name for t in credit_card.Provider.credit_card_types.values()),
        *PAYMENT_BRANDS,
    ]
    latin = re.compile(rf"^[{_UP}{_LO}A-Za-z0-9 .,'’&()/-]+$")

    def clean(values: list[str]) -> set[str]:
        out = {re.sub(r"\s+", " ", p).strip().lower() for p in values if latin.match(p)}
        # "VISA 16 digit" -> "visa"; "British Indian Ocean Territory (Chagos Archipelago)" ->
        # both names
        inner = {m for p in out for m in re.findall(r"\((.*?)\)", p)}
        return out | inner | {re.sub(r"\s*\(.*?\)|\s+\d+ digit$", "", p) for p in out}

    phrases = clean(raw)
    firsts, lasts = name_gazetteers()
    words = {
        w
        for p in phrases
        for w in re.findall(rf"[{_UP}{_LO}A-Za-z]+", p.title())
        if len(w) > 2 and w not in firsts and w not in lasts
    }
    # cities and companies as whole phrases only: their words include surnames and are too
    # many to rule out as parts of names
    phrases |= clean(_faker_values("address", ("cities",), _WESTERN))
    phrases |= clean(
        _faker_values("company", ("companies", "large_companies", "company_names"), _WESTERN)
    )
    return frozenset(p for p in phrases if len(p) > 2), frozenset(words)


@functools.lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Lower-case words of things, not people, that no name gazetteer holds: the words of
    Faker's job titles (every Latin-script locale: "hygienist", "reparador", "zeichner"), of
    its company jargon ("paradigms", "bandwidth") and colour names ("magenta"). A capitalised
    run made of such words is an occupation, sector or product ("Occupational Hygienist",
    "Supply Chain"), not a name. Words that are also first or last names ("Baker", "Mason",
    "Rosa") are left out, so "ms. baker" and "Rosa Mason" stay names."""
    values = [
        *_faker_values("job", ("jobs",)),
        *_faker_values("company", ("catch_phrase_words", "bsWords")),
        *_faker_values("color", ("all_colors",)),
    ]
    words = set()
    for value in values:
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", value)  # "AliceBlue" -> "Alice Blue"
        words.update(w.lower() for w in re.findall(rf"[{_UP}{_LO}A-Za-z]+", spaced))
    firsts, lasts = name_gazetteers()
    names = {n.lower() for n in firsts | lasts}
    return frozenset(w for w in words if len(w) > 3 and w not in names)


@functools.lru_cache(maxsize=1)
def ordinary_words() -> frozenset[str]:
    """Lower-case words that are not names: Faker's English lorem list (~1,000 common words),
    spaCy's stop words, the not-a-name list, the words of the thing gazetteer and the
    lexicon of occupations, jargon and colours."""
    from faker.providers.lorem.en_US import Provider as Lorem
    from spacy.lang.en.stop_words import STOP_WORDS

    words = set(Lorem.word_list) | set(STOP_WORDS) | {w.lower() for w in NOT_NAMES}
    words |= {w.lower() for w in thing_gazetteer()[1]} | set(THING_NOUNS) | lexicon()
    return frozenset(words)


# Endings of abstract nouns that surnames hardly ever have ("Education", "Equity", "Tourism").
NOUN_ENDINGS = (
    "tion",
    "sion",
    "ment",
    "ness",
    "ity",
    "ism",
    "ology",
    "ics",
    "ship",
    "ance",
    "ence",
)


@functools.lru_cache(maxsize=65536)
def lexical(token: str) -> bool:
    """True when a capitalised token is a word of a thing (an occupation, sector, product,
    abstract noun) and in neither name gazetteer: "Engineering", "Hygienist", "Education"."""
    lower = token.lower()
    if len(lower) < 4:
        return False
    firsts, lasts = name_gazetteers()
    if token in firsts or token in lasts:
        return False
    if lower in lexicon() or (len(lower) > 5 and lower.endswith(NOUN_ENDINGS)):
        return True
    return any(lexical(part) for part in re.split(r"[-’']", token) if part != token)


# Faker's street suffixes that are also everyday nouns after a number ("3 Day Pass", "5 Star
# Club"): a house number before them says little, so they do not make an address.
_NOT_STREET_TYPES = frozenset(
    "Follow Little Lower Upper Part Rest Turn Well Wells Top End Key Keys Line Light Lights "
    "Lock Locks Pass Ring Union Unions Front Ride Land Mission Formation Deviation Distributor "
    "Trailer Reserve Station Loaf Dip Lees Mew Wade Brace Break Block Elbow Neck Rapid Rapids "
    "Strip Spurs Club Center Centers Centre Point Points Island Islands Mall Port Ports Plain "
    "Plains Sound Track Range Route Round Steps Stairs Cross Course Camp Lake Lakes Spring "
    "Springs Fall Falls Field Fields Forest River Stream Beach Pocket Access Artery Entrance".split()
)


@functools.lru_cache(maxsize=1)
def street_types() -> tuple[str, ...]:
    """Street types ("Mews", "Quay", "Esplanade", ...) from Faker's English-locale address
    providers plus the common abbreviations, longest first (for the regex alternation)."""
    found = {
        s
        for s in _faker_values("address", ("street_suffixes", "street_suffixes_long"), _ENGLISH)
        if re.fullmatch(r"[A-Z][a-z]+", s)
    }
    found -= _NOT_STREET_TYPES
    found |= set("St Ave Rd Ln Dr Blvd Ct Pl Pkwy Sq Hwy Cir Ter Cres Cl Gdns Esp Pde".split())
    found |= {"Street", "Avenue", "Road", "Lane", "Drive", "Close", "Crescent", "Mews", "Row"}
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


@functools.lru_cache(maxsize=1)
def company_suffixes() -> frozenset[str]:
    """Lower-cased legal-form suffixes ("inc", "gmbh", "and sons", "s.a.") of every locale."""
    found = {s.lower().strip() for s in _faker_values("company", ("company_suffixes",))}
    return frozenset(s for s in found if s and latin_text(s))


def latin_text(value: str) -> bool:
    return re.fullmatch(rf"[{_UP}{_LO}A-Za-z0-9 .,'’&/-]+", value) is not None


# Word endings of ordinary English words (verbs, adverbs, abstract nouns), rare in surnames.
WORD_ENDINGS = (
    "ing",
    "ed",
    "ly",
    "tion",
    "sion",
    "ment",
    "ness",
    "able",
    "ible",
    "ful",
    "less",
    "ous",
    "ive",
    "ise",
    "ize",
    "ity",
    "ance",
    "ence",
    "ary",
    "ery",
    "ship",
    "ward",
    "wise",
)


def word_shaped(token: str) -> bool:
    """True when a lower-case token looks like an ordinary word rather than a surname."""
    words = ordinary_words()
    if token in words or token.endswith(WORD_ENDINGS) or len(token) < 3:
        return True
    return (token.endswith("s") and token[:-1] in words) or (
        token.endswith("es") and token[:-2] in words
    )
