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


DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?,?\s+\d{4}"
    r"|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"
)
DATE_ONLY = re.compile(rf"^{DATE}$", re.IGNORECASE)
