"""Presidio recognizers for every entity type, built from the settings' patterns.

Importing this module loads Presidio (and with it spaCy): `tasks.pii.engine` imports it on first
use, so reading a config or importing `tasks.pii` stays cheap.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import IbanRecognizer, IpRecognizer, PhoneRecognizer

from tasks.pii.patterns import (
    _LO,
    CONJUNCTIONS,
    CUES,
    DATE,
    DATE_ONLY,
    DETERMINERS,
    NAME_TOKEN,
    NOT_NAMES,
    PARTICLE,
    SURNAME,
    THING_NOUNS,
    TITLES,
    company_suffixes,
    lexical,
    luhn_valid,
    name_gazetteers,
    ordinary_words,
    stop_words,
    street_types,
    thing_gazetteer,
    word_list,
    word_shaped,
)
from tasks.pii.settings import PIISettings


class LuhnCardRecognizer(PatternRecognizer):
    """13-19 digits, optionally grouped, that pass the Luhn checksum (all card brands)."""

    def validate_result(self, pattern_text: str) -> bool:
        return luhn_valid(pattern_text)


class GroupedPhoneRecognizer(PatternRecognizer):
    """Phone numbers in formats `phonenumbers` rejects: 7-15 digits, +/00 prefixes, ext."""

    def validate_result(self, pattern_text: str) -> bool:
        if DATE_ONLY.match(pattern_text.strip()):
            return False
        main = re.split(r"x|ext", pattern_text)[0]
        return 7 <= sum(c.isdigit() for c in main) <= 15


class PersonNameRecognizer(EntityRecognizer):
    """Titles, cue words, "Last, First", gazetteers and mid-sentence capitalised runs; a run
    that reads as a thing (a country, currency, card brand, company, region) is left alone."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="PersonNameRecognizer")
        self.first_names, self.last_names = name_gazetteers()
        self.lower_firsts = frozenset(n.lower() for n in self.first_names)
        self.lower_lasts = frozenset(n.lower() for n in self.last_names)
        self.blocked = NOT_NAMES | stop_words()
        self.thing_phrases, self.thing_words = thing_gazetteer()
        self.suffixes = frozenset(x.replace(".", "") for x in company_suffixes())
        self.ordinary = ordinary_words()
        run = rf"{NAME_TOKEN}(?:\s+(?:{PARTICLE}\s+)*{NAME_TOKEN}){{0,3}}"
        particled = rf"(?:{PARTICLE}\s+)*{run}"
        lower = rf"[{_LO}][{_LO}'’-]+"
        self.titled = re.compile(rf"\b{TITLES}\s+({particled})")
        # "ms. wang", "dr. okafor", "mr wang": a lower-case surname after a courtesy title
        self.titled_lower = re.compile(
            rf"(?<![\w.])(?i:(?:mr|mrs|ms|mx|miss|dr\.|prof\.))\.?\s+"
            rf"((?:(?i:{PARTICLE})\s+)?{lower})(?:\s+({lower}))?"
        )
        self.cued = re.compile(rf"(?i:\b{CUES})[:,]?\s+({particled})")
        # lower-case names after the cues that name a person's role, not after verbs ("called
        # twice", "named after")
        role_cues = "|".join(
            re.escape(c)
            for c in word_list("cues")
            if c not in ("called", "emailed", "name", "named")
        )
        self.cued_lower = re.compile(
            rf"(?i:\b(?:{role_cues}))[:,]?\s+((?:(?i:{PARTICLE})\s+)?{lower})(?:\s+({lower}))?"
        )
        self.first_lower = re.compile(rf"(?<![\w'’-])({NAME_TOKEN})\s+({lower})(?![\w'’-])")
        self.last_first = re.compile(rf"\b({SURNAME}),\s+({NAME_TOKEN})(?:\s+({NAME_TOKEN}))?")
        self.runs = re.compile(rf"(?<![\w'’/-])({run})(?![\w'’])")
        self.firm = re.compile(
            rf"(?<![\w'’-]){NAME_TOKEN}(?:(?:,\s+(?:{PARTICLE}\s+)*{NAME_TOKEN})+,?\s+{CONJUNCTIONS}|\s+&)"
            rf"\s+(?:{PARTICLE}\s+)*{NAME_TOKEN}(?![\w'’])"
        )

    def load(self) -> None:  # nothing to load: patterns compile in __init__
        return None

    def _trim(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """Drop blocked words from either end of a token run."""
        tokens = list(re.finditer(r"\S+", text[start:end]))
        while tokens and tokens[-1].group().strip(".,") in self.blocked:
            tokens.pop()
        while tokens and tokens[0].group().strip(".,") in self.blocked:
            tokens.pop(0)
        if not tokens:
            return None
        return start + tokens[0].start(), start + tokens[-1].end()

    def _trim_lexical(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """Drop words of things from either end of a run: "Merchant Macedo" is the word
        "Merchant" and then one surname; "Passenger Transport" is nothing left."""
        tokens = list(re.finditer(r"\S+", text[start:end]))
        while tokens and lexical(tokens[-1].group().strip(".,")):
            tokens.pop()
        while tokens and lexical(tokens[0].group().strip(".,")):
            tokens.pop(0)
        if not tokens:
            return None
        return start + tokens[0].start(), start + tokens[-1].end()

    def _is_thing(self, text: str, start: int, end: int, context: bool = True) -> bool:
        """A capitalised phrase that reads as a thing, not a person: by the gazetteers (the
        whole phrase is a country, currency, card brand, city...; or a word of it occurs only
        in such names: "Republic", "Dollar"), by a legal-form suffix after it ("... GmbH"), by
        a product noun after it ("American Express card") and, with `context`, by a
        determiner or place preposition before it ("the European Economic Area", "in Ivory").
        """
        phrase = text[start:end]
        words = re.findall(r"[\w'’-]+", phrase)
        if any(w in self.thing_words for w in words) or self._in_thing_phrase(text, start, end):
            return True
        after = text[end:].lstrip(" ,")
        next_word = re.match(r"[\w.&]+(?:\s+\w+)?", after)
        if next_word:
            following = next_word.group().lower().replace("&", "and")
            undotted = following.replace(".", "")
            head = (undotted.split() or [""])[0]
            if head in self.suffixes or undotted in self.suffixes:
                return True
            if following.split()[0] in THING_NOUNS:
                return True
        if context:
            before = re.search(r"(\w+)\s+$", text[max(0, start - 20) : start])
            if before and before.group(1).lower() in DETERMINERS:
                return True
        return False

    def _in_thing_phrase(self, text: str, start: int, end: int) -> bool:
        """The span, alone or with up to 4 words either side, is a gazetteer phrase ("Chase
        UK", "Bank of London and The Middle East")."""
        left = text[:start]
        befores = [start]
        for _ in range(4):
            m = re.search(r"\S+\s+$", left)
            if not m:
                break
            left = left[: m.start()]
            befores.append(m.start())
        afters = [end]
        for m in re.finditer(r"\s+[^\s,.;:!?]+", text[end:]):
            if len(afters) > 4 or m.start() != afters[-1] - end:
                break
            afters.append(end + m.end())
        return any(text[b:a].strip().lower() in self.thing_phrases for b in befores for a in afters)

    def _firm_spans(self, text: str) -> list[tuple[int, int]]:
        """ "Stewart, Campbell and Baker": capitalised words in a list closed by "and" are a
        firm's name (or a list of places), not one person."""
        return [m.span() for m in self.firm.finditer(text)]

    def _lower_names(self, first: str, second: str | None) -> int:
        """How many of the lower-case tokens after a title or cue are name-like (0, 1, 2)."""
        if word_shaped(first.split()[-1]):
            return 0
        if second and not word_shaped(second):
            return 2
        return 1

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
        results = []

        def add(span: tuple[int, int] | None, score: float) -> None:
            if span is not None:
                results.append(RecognizerResult("PERSON", span[0], span[1], score))

        for m in self.titled.finditer(text):  # after a title, any capitalised run
            add((m.start(), m.end(1)), 0.85)
        for m in self.titled_lower.finditer(text):
            n = self._lower_names(m.group(1), m.group(2))
            if n:
                add((m.start(), m.end(n)), 0.7)
        for m in self.cued.finditer(text):
            span = self._trim(text, m.start(1), m.end(1))
            if span and not self._is_thing(text, *span, context=False):
                add(span, 0.7)
        for m in self.cued_lower.finditer(text):
            n = self._lower_names(m.group(1), m.group(2))
            if n:
                add((m.start(1), m.end(n)), 0.6)
        for m in self.first_lower.finditer(text):
            # "Maria garcía": a known first name, then a lower-case surname
            first, last = m.group(1), m.group(2)
            if self._in_thing_phrase(text, m.start(1), m.end(2)):
                continue
            if first in self.blocked or word_shaped(last):
                continue
            mid_sentence = not re.search(r"(?:^|[.!?:;\n])\s*$", text[: m.start(1)])
            if first in self.first_names and not self._is_thing(text, m.start(1), m.end(2)):
                add((m.start(1), m.end(2)), 0.6 if last in self.lower_lasts else 0.45)
            elif (
                mid_sentence
                and not word_shaped(first.lower())
                and not self._is_thing(text, m.start(1), m.end(2))
            ):
                add((m.start(1), m.end(2)), 0.4)  # "my husband Oyelaran babatunde"
        for m in self.last_first.finditer(text):
            last, first = m.group(1).split()[-1], m.group(2)
            if first in self.blocked or last in self.blocked:
                continue
            if re.match(rf"\s+{CONJUNCTIONS}\s+[A-Z]", text[m.end() :]):
                continue  # "Dease, Cogan and Connaughton": a firm of partners
            if self._is_thing(text, m.start(), m.end()):
                continue
            known = first in self.first_names or last in self.last_names
            if not known and any(lexical(w) for w in re.findall(r"[\w'’-]+", m.group())):
                continue  # "Programmer, Multimedia": a job title, inverted
            if known:
                add((m.start(), m.end()), 0.8)
            else:  # unseen names in "Last, First" order: weaker evidence
                add((m.start(), m.end()), 0.5)
        firms = self._firm_spans(text)
        for m in self.runs.finditer(text):
            span = self._trim_lexical(text, m.start(1), m.end(1))
            if span is None or any(span[0] < fe and span[1] > fs for fs, fe in firms):
                continue
            start, end = span
            words = text[start:end].split()
            if any(lexical(w) for w in words):
                continue  # a word of a thing inside the run: "Green Energy Partners"
            names = [w for w in words if w[:1].isupper()]
            if not names:
                continue  # only particles were left: "de"
            known_first = names[0] in self.first_names
            known_last = any(w in self.last_names for w in names[1:])
            sentence_start = start == 0 or bool(
                re.search(r"[.!?:;\n]\s*$", text[max(0, start - 3) : start])
            )
            if self._is_thing(text, start, end):
                continue
            if len(names) == 1:
                # A lone capitalised word is a name only as a known first name mid-sentence,
                # and not as the rest of a thing's phrase ("Port Alan", "Fine Art").
                trimmed_off = span != (m.start(1), m.end(1))
                if (
                    known_first
                    and not trimmed_off
                    and not sentence_start
                    and names[0] not in self.blocked
                ):
                    add((start, end), 0.5)
                continue
            if any(w in self.blocked for w in names[1:]):
                trimmed = self._trim(text, start, end)
                if trimmed is None or trimmed == (start, end):
                    continue
                inner = text[trimmed[0] : trimmed[1]].split()
                if len(inner) < 2 or any(w in self.blocked for w in inner):
                    continue
                if not self._is_thing(text, *trimmed):
                    add(trimmed, 0.6)
                continue
            if names[0] in self.blocked:
                trimmed = self._trim(text, start, end)
                if trimmed and len(text[trimmed[0] : trimmed[1]].split()) >= 2:
                    inner = text[trimmed[0] : trimmed[1]].split()
                    named = inner[0] in self.first_names or any(w in self.last_names for w in inner)
                    if named and not self._is_thing(text, *trimmed):
                        add(trimmed, 0.6)
                continue
            # two or more capitalised tokens, none an ordinary word: a proper name
            add((start, end), 0.75 if known_first or known_last else 0.5)
        return results


def _cue_recognizer(entity: str, name: str, patterns: list[str]) -> PatternRecognizer:
    """Numbers found by the configured regexes (account, loan, medical record), any case."""
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=[Pattern(f"{name}_{i}", p, 0.6) for i, p in enumerate(patterns)],
        global_regex_flags=re.IGNORECASE | re.DOTALL | re.MULTILINE,
    )


def build(settings: PIISettings) -> list:
    """One recognizer per detector, in the order the analyzer registry holds them."""
    ssn = PatternRecognizer(
        supported_entity="US_SSN",
        name="UsSsnAnyRecognizer",
        patterns=[
            Pattern("ssn_grouped", r"(?<![\d-])\d{3}([- .])\d{2}\1\d{4}(?![\d-])", 0.6),
            Pattern(
                "ssn_after_cue",
                r"(?<=\b(?:ssn|ss#|ss no\.?|social security(?: number| no\.?| #)?)[:#]?\s{0,2})"
                r"\d{3}[- .]?\d{2}[- .]?\d{4}\b",
                0.7,
            ),
        ],
    )
    dob = PatternRecognizer(
        supported_entity="DATE_OF_BIRTH",
        name="DateOfBirthRecognizer",
        patterns=[
            Pattern(
                "date_after_birth_cue",
                rf"(?<=\b(?:dob|d\.o\.b\.|date of birth|birth ?date|born(?: on)?|birthday)"
                rf"[:\s]{{1,3}}(?:is\s+|was\s+|on\s+)?){DATE}",
                0.7,
            )
        ],
    )
    types = "|".join(re.escape(t) for t in street_types())
    lower_types = "|".join(
        re.escape(t.lower())
        for t in street_types()
        if len(t) > 3 and t.lower() not in ordinary_words()
    )
    stop = "the|a|an|of|to|in|on|at|for|and|or|my|your|our|their|his|her|by|from|with|per"
    street = PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="StreetAddressRecognizer",
        patterns=[
            Pattern(
                "after_address_cue",
                r"(?i)(?<=address: )[^\n]{5,160}?(?=\.\s+[A-Z][a-z]|\.?\s*$)",
                0.7,
            ),
            Pattern(
                "number_street",
                rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z][\w'’]*\.?\s+){{1,4}}(?:{types})\b\.?"
                r"(?:,?\s+(?:Apt|Suite|Unit|#)\.?\s*\w+)?",
                0.6,
            ),
            Pattern(  # "12 kingfisher mews": lower case, the less ambiguous street types only
                "number_street_lower",
                rf"\b\d{{1,5}}[a-z]?\s+(?:(?!(?:{stop})\b)[a-z][a-z'’]+\s+){{1,3}}"
                rf"(?:{lower_types})\b",
                0.5,
            ),
            Pattern(
                "number_first_eu",
                r"\b\d{1,5}[a-z]?,?\s+(?:Rue|Via|Calle|Rua|Avenida|Avenue|Plaza|Piazza|Viale|"
                r"Boulevard|Place|Chemin|Allée|Quai|Impasse)\s+(?:(?:de|la|del|di|da|du|des|do|"
                r"dos|le|les|l'|d')\s*)*[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ][\w'’-]+){0,2}",
                0.6,
            ),
            Pattern(
                "street_number_eu",
                r"\b(?:[A-Z][a-zäöüß]+(?:straße|strasse|weg|gasse|platz|allee|laan|straat|gracht)"
                r"|(?:Rue|Avenue|Via|Calle|Rua|Boulevard|Plaza|Avenida|Piazza|Viale|ulica|ul\.)"
                r"\s+(?:[\w'’-]+\s+){0,4}?[\w'’-]+)\s*,?\s*\d{1,5}[a-z]?\b",
                0.6,
            ),
        ],
        global_regex_flags=re.DOTALL | re.MULTILINE,
    )

    # Presidio's EmailRecognizer validates domains with tldextract, which fetches the public
    # suffix list from the internet; a plain pattern needs nothing.
    email = PatternRecognizer(
        supported_entity="EMAIL_ADDRESS",
        name="EmailPatternRecognizer",
        patterns=[
            Pattern(
                "email",
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
                0.9,
            )
        ],
    )
    card = LuhnCardRecognizer(
        supported_entity="CREDIT_CARD",
        name="LuhnCardRecognizer",
        patterns=[Pattern("card", r"\b(?:\d[ -]?){11,18}\d\b", 0.6)],
    )
    phone = GroupedPhoneRecognizer(
        supported_entity="PHONE_NUMBER",
        name="GroupedPhoneRecognizer",
        patterns=[
            Pattern(
                "grouped_digits",
                r"(?<![\w@$/:.-])(?:\+|00)?\(?\d{1,4}\)?(?:[ .-]?\(?\d{1,5}\)?){1,6}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\w,]|[.:]\d)",
                0.4,
            )
        ],
    )
    return [
        email,
        PhoneRecognizer(
            supported_regions=("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "PL", "TR")
        ),
        card,
        phone,
        IbanRecognizer(),
        IpRecognizer(),
        ssn,
        dob,
        street,
        _cue_recognizer("ACCOUNT_NUMBER", "AccountNumberRecognizer", settings.account_patterns),
        _cue_recognizer("LOAN_NUMBER", "LoanNumberRecognizer", settings.loan_patterns),
        _cue_recognizer(
            "MEDICAL_RECORD_NUMBER", "MedicalRecordRecognizer", settings.medical_record_patterns
        ),
        PersonNameRecognizer(),
    ]
