"""Scrub PII offline with Presidio before anything is trained on or logged.

Presidio's default engine downloads a spaCy model; we give it a blank spaCy pipeline (saved to a
temporary folder once per process) and our own recognizer registry: Presidio's phone (the
`phonenumbers` library), IBAN and IP (v4 and v6) recognizers plus ours for email, cards (Luhn),
US SSNs with or without separators (Presidio rejects well-known sample numbers), dates of birth,
street addresses, account / loan / medical-record numbers (patterns from the settings) and
person names.

Names have no NER model offline, so `PersonNameRecognizer` combines cues that work across
cultures without a model: titles (Mr., Dr., Frau, ...), context words ("applicant", "Notes
on", "signed by"), "Last, First" order, first- and last-name gazetteers from Faker's locale
lists (dozens of cultures), and capitalised (hyphenated, accented, particle-joined) token runs
in mid-sentence that are not ordinary words. Recall is measured on a hand-written name list that
is not drawn from those gazetteers (`tests/data/pii_testset.py`).

`Scrubber` runs the same recognizer objects as the Presidio `AnalyzerEngine` that
`build_analyzer` makes, without the per-record spaCy pass, with a cheap pre-filter per
recognizer (no digits: no phone lookup) and, for large batches, worker processes. Each detected
value is replaced per `pii.operators` (typed placeholder consistent within a record, mask,
hash, or drop the row). A residual scan runs the detectors again on the scrubbed text at a lower
threshold; a hit quarantines the row or fails the stage. The audit holds counts only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import stage_logger
from tasks.load import DataSettings, LoadedData, detect_format, read_records, write_records
from tasks.validate import ValidationReport

ENTITY_TYPES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "DATE_OF_BIRTH",
    "STREET_ADDRESS",
    "ACCOUNT_NUMBER",
    "LOAN_NUMBER",
    "MEDICAL_RECORD_NUMBER",
]

PLACEHOLDER_NAMES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "SSN",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "DATE_OF_BIRTH": "DOB",
    "STREET_ADDRESS": "ADDRESS",
    "ACCOUNT_NUMBER": "ACCOUNT",
    "LOAN_NUMBER": "LOAN",
    "MEDICAL_RECORD_NUMBER": "MRN",
}


class Operator(StrEnum):
    """What replaces a detected value."""

    placeholder = "placeholder"  # <EMAIL_1>, consistent within a record
    mask = "mask"  # every letter and digit becomes '*', separators stay
    hash = "hash"  # <EMAIL_3fa9c01b2e>: salted sha256, the same value everywhere
    drop_row = "drop_row"  # the whole row is quarantined (scrubbed) instead of kept


class PIISettings(BaseModel):
    """Which entities to scrub, how, and how sure a detector must be."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Scrub PII before training and logging.")
    entities: list[str] = Field(
        default_factory=lambda: list(ENTITY_TYPES), description="Entity types to scrub."
    )
    score_threshold: float = Field(
        default=0.3, ge=0, le=1, description="Lowest detector score that counts as a hit."
    )
    operators: dict[str, Operator] = Field(
        default_factory=dict,
        description="Per entity type: placeholder, mask, hash or drop_row (others: placeholder).",
    )
    hash_salt: str = Field(
        default="tunegate", description="Salt for the hash operator; set your own secret."
    )
    residual_action: Literal["quarantine", "fail"] = Field(
        default="quarantine",
        description="A residual hit after scrubbing quarantines the row or fails the stage.",
    )
    residual_score_threshold: float = Field(
        default=0.1, ge=0, le=1, description="Threshold of the residual scan (stricter pass)."
    )
    account_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\b(?:account|acct)\.?\s*(?:number|no\.?|#|num)?[:#]?\s{0,2})"
            r"(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{5,24}\b",
        ],
        description="Regexes (case-insensitive) for account numbers.",
    )
    loan_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\bloan\s*(?:number|no\.?|#|id|ref)[:#]?\s{0,2})(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,24}\b",
            r"\bLN-?\d{6,12}\b",
        ],
        description="Regexes (case-insensitive) for loan numbers.",
    )
    medical_record_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\b(?:MRN|medical record\s*(?:number|no\.?|#)?)[:#]?\s{0,2})(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,20}\b",
        ],
        description="Regexes (case-insensitive) for medical-record numbers.",
    )
    processes: int = Field(
        default=2, ge=1, le=16, description="Worker processes for batches of 2,000+ records."
    )

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ENTITY_TYPES)}")
        return value

    @field_validator("operators")
    @classmethod
    def _known_operator_keys(cls, value: dict[str, Operator]) -> dict[str, Operator]:
        unknown = sorted(set(value) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ENTITY_TYPES)}")
        return value

    @field_validator("account_patterns", "loan_patterns", "medical_record_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        import regex

        for pattern in value:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex ({exc})") from None
        return value

    def operator(self, entity: str) -> Operator:
        return self.operators.get(entity, Operator.placeholder)


# --- recognizers --------------------------------------------------------------------------

TITLES = (
    r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Sig|Sig\.ra|"
    r"Pan|Pani|Dhr|Mevr|Rev|Fr|Hon|Capt|Col)\.?"
)
_UP = r"A-ZÀ-ÖØ-Þ\u1e00-\u1efeĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽȘȚ"
_LO = r"a-zß-öø-ÿ\u1e01-\u1effāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĳĵķĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżžșț"
# A capitalised name token: letters incl. accents, optionally hyphenated or with an apostrophe
# (O'Brien, D'Angelo, Jean-Luc, Al-Sayed, McDonald).
NAME_TOKEN = (
    rf"(?:[{_UP}]['’])?[{_UP}][{_LO}]+(?:[{_UP}][{_LO}]+)?"
    rf"(?:-(?:[{_LO}]{{1,3}}-)?[{_UP}{_LO}][{_LO}]+)*"
)
PARTICLE = (
    r"(?:de|del|della|da|das|dos|do|di|van|von|der|den|la|le|du|bin|binti|bint|ibn|abu|al|el|"
    r"ter|ten|y|zu|af|ap|Ó|Ní|Nic|Mac|Ua|Mc)"
)
SURNAME = rf"(?:{PARTICLE}\s+)*{NAME_TOKEN}(?:\s+(?:{PARTICLE}\s+)*{NAME_TOKEN})?"
# Words in front of a name in records about people.
CUES = (
    r"(?:applicant|co-applicant|borrower|co-signer|cosigner|guarantor|customer|client|patient|"
    r"notes on|spoke with|spoke to|signed by|approved by|reviewed by|referred by|called|"
    r"emailed|met with|name|named|dear|contact person|beneficiary|employee|account holder)"
)

# Capitalised words that open sentences in business text and are never names on their own.
NOT_NAMES = {
    "The",
    "This",
    "That",
    "These",
    "Those",
    "Application",
    "Applicant",
    "Loan",
    "Contact",
    "Email",
    "Card",
    "Mailing",
    "Payout",
    "Submitted",
    "Reviewer",
    "Notes",
    "Documents",
    "They",
    "Their",
    "No",
    "Collateral",
    "Credit",
    "Bureau",
    "Existing",
    "Monthly",
    "Income",
    "Work",
    "Employment",
    "Every",
    "Previous",
    "One",
    "Several",
    "An",
    "A",
    "Repayments",
    "There",
    "Reach",
    "Phone",
    "IBAN",
    "SSN",
    "IP",
    "Branch",
    "Street",
    "Road",
    "Avenue",
    "Suite",
    "Apt",
    "Met",
    "Asked",
    "Fee",
    "Paid",
    "Bank",
    "Account",
    "Medical",
    "Record",
    "Date",
    "Birth",
    "Born",
    "Customer",
    "Client",
    "Patient",
    "Borrower",
    "Dear",
    "Name",
    "Signed",
    "Approved",
    "Reviewed",
    "Called",
    "Please",
    "Thanks",
    "Thank",
    "Regards",
    "Best",
    "Kind",
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "Prof",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Visa",
    "Mastercard",
    "Amex",
    "North",
    "South",
    "East",
    "West",
    "New",
    "Old",
    "Saint",
    "St",
    "Mount",
    "Lake",
    "Port",
    "Fort",
    "Declined",
    "Pending",
    "Review",
    "Risk",
    "High",
    "Low",
    "Medium",
    "Total",
    "Score",
    "Scores",
    "Report",
    "Reports",
    "Debt",
    "Payment",
    "Payments",
    "Office",
    "Department",
    "Team",
    "Manager",
    "Officer",
    "Agent",
    "Service",
    "Services",
    "Support",
    "Insurance",
    "Mortgage",
    "Savings",
    "Checking",
    "Deposit",
    "Transfer",
    "Wire",
    "Online",
    "Mobile",
    "App",
    "Website",
    "Portal",
    "Login",
    "Security",
    "Social",
    "Number",
    "Id",
    "ID",
    "Ref",
    "Reference",
    "Case",
    "File",
    "Files",
    "Note",
    "Update",
    "Summary",
    "Status",
    "Follow",
    "Up",
    "Call",
    "Calls",
    "Visit",
    "Meeting",
    "Interview",
    "Letter",
    "Statement",
    "Statements",
    "Tax",
    "Taxes",
    "Return",
    "Returns",
    "Proof",
    "Address",
    "Home",
    "House",
    "Car",
    "Auto",
    "Business",
    "Small",
    "Personal",
    "Student",
    "Family",
    "Married",
    "Single",
    "Self",
    "Employed",
    "Unemployed",
    "Retired",
    "Full",
    "Part",
    "Time",
    "Year",
    "Years",
    "Month",
    "Months",
    "Week",
    "Weeks",
    "Day",
    "Days",
    "Today",
    "Yesterday",
    "Tomorrow",
    "Good",
    "Bad",
    "Fair",
    "Poor",
    "Excellent",
    "Strong",
    "Weak",
    "Stable",
    "Steady",
    "Overall",
    "Also",
    "However",
    "But",
    "And",
    "Or",
    "If",
    "When",
    "While",
    "After",
    "Before",
    "Since",
    "Because",
    "Although",
    "Both",
    "Each",
    "Some",
    "Many",
    "Most",
    "All",
    "Any",
    "None",
    "Few",
    "More",
    "Less",
    "Other",
    "Another",
    "Such",
    "Only",
    "Just",
    "Still",
    "Even",
    "Never",
    "Always",
    "Often",
    "Sometimes",
    "Usually",
    "Recently",
    "Currently",
    "Yes",
    "Not",
    "Is",
    "Was",
    "Are",
    "Were",
    "Has",
    "Have",
    "Had",
    "Will",
    "Would",
    "Can",
    "Could",
    "Should",
    "Must",
    "Might",
    "He",
    "She",
    "It",
    "We",
    "You",
    "I",
    "His",
    "Her",
    "Its",
    "Our",
    "Your",
    "My",
    "Him",
    "Them",
    "Us",
    "Me",
    "Who",
    "What",
    "Which",
    "Where",
    "Why",
    "How",
    "Hospital",
    "Clinic",
    "Health",
    "Care",
    "Center",
    "Centre",
    "University",
    "College",
    "School",
    "Company",
    "Corporation",
    "Inc",
    "Ltd",
    "LLC",
    "Group",
    "Holdings",
    "Trust",
    "Fund",
    "Capital",
    "Financial",
    "Finance",
    "Federal",
    "National",
    "State",
    "County",
    "City",
    "Court",
    "Way",
    "Drive",
    "Lane",
    "Place",
    "Square",
    "Boulevard",
    "Terrace",
    "Early",
    "Late",
    "Final",
    "First",
    "Second",
    "Third",
    "Last",
    "Next",
    "Same",
    "Different",
    "Verified",
    "Confirmed",
    "Uploaded",
    "Received",
    "Sent",
    "Requested",
    "Requests",
    "Asks",
    "Applied",
    "Plans",
    "Wants",
    "Needs",
    "Says",
    "Said",
    "Told",
    "Reported",
    "Noted",
    "Union",
    "Kingdom",
    "States",
    "United",
    "America",
    "Europe",
    "Asia",
    "Africa",
    "Data",
    "Model",
    "Policy",
    "Rules",
    "Check",
    "Checks",
    "Approval",
    "Decision",
    "Limit",
}


def _stop_words() -> frozenset[str]:
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
    blocked = NOT_NAMES | _stop_words()
    return (
        frozenset(n for n in firsts if n not in blocked and len(n) > 1),
        frozenset(n for n in lasts if n not in blocked and len(n) > 2),
    )


def first_name_gazetteer() -> frozenset[str]:
    return name_gazetteers()[0]


def luhn_valid(number: str) -> bool:
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


def _build_recognizers(settings: PIISettings) -> list:
    from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
    from presidio_analyzer.predefined_recognizers import (
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
    )

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
        """Titles, cue words, "Last, First", gazetteers and mid-sentence capitalised runs."""

        def __init__(self) -> None:
            super().__init__(supported_entities=["PERSON"], name="PersonNameRecognizer")
            self.first_names, self.last_names = name_gazetteers()
            self.blocked = NOT_NAMES | _stop_words()
            run = rf"{NAME_TOKEN}(?:\s+(?:{PARTICLE}\s+)*{NAME_TOKEN}){{0,3}}"
            particled = rf"(?:{PARTICLE}\s+)*{run}"
            self.titled = re.compile(rf"\b{TITLES}\s+({particled})")
            self.cued = re.compile(rf"(?i:\b{CUES})[:,]?\s+({particled})")
            self.last_first = re.compile(rf"\b({SURNAME}),\s+({NAME_TOKEN})(?:\s+({NAME_TOKEN}))?")
            self.runs = re.compile(rf"(?<![\w'’-])({run})")

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

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
            results = []

            def add(span: tuple[int, int] | None, score: float) -> None:
                if span is not None:
                    results.append(RecognizerResult("PERSON", span[0], span[1], score))

            for m in self.titled.finditer(text):  # after a title, any capitalised run
                add((m.start(), m.end(1)), 0.85)
            for m in self.cued.finditer(text):
                add(self._trim(text, m.start(1), m.end(1)), 0.7)
            for m in self.last_first.finditer(text):
                last, first = m.group(1).split()[-1], m.group(2)
                if first in self.blocked or last in self.blocked:
                    continue
                if first in self.first_names or last in self.last_names:
                    add((m.start(), m.end()), 0.8)
                else:  # unseen names in "Last, First" order: weaker evidence
                    add((m.start(), m.end()), 0.5)
            for m in self.runs.finditer(text):
                words = m.group(1).split()
                names = [w for w in words if w[:1].isupper()]
                known_first = names[0] in self.first_names
                known_last = any(w in self.last_names for w in names[1:])
                sentence_start = m.start() == 0 or bool(
                    re.search(r"[.!?:;\n]\s*$", text[max(0, m.start() - 3) : m.start()])
                )
                if len(names) == 1:
                    # A lone capitalised word is a name only as a known first name mid-sentence.
                    if known_first and not sentence_start and names[0] not in self.blocked:
                        add((m.start(1), m.end(1)), 0.5)
                    continue
                if any(w in self.blocked for w in names[1:]):
                    span = self._trim(text, m.start(1), m.end(1))
                    if span is None or span == (m.start(1), m.end(1)):
                        continue
                    inner = text[span[0] : span[1]].split()
                    if len(inner) < 2 or any(w in self.blocked for w in inner):
                        continue
                    add(span, 0.6)
                    continue
                if names[0] in self.blocked:
                    span = self._trim(text, m.start(1), m.end(1))
                    if span and len(text[span[0] : span[1]].split()) >= 2:
                        inner = text[span[0] : span[1]].split()
                        if inner[0] in self.first_names or any(w in self.last_names for w in inner):
                            add(span, 0.6)
                    continue
                # two or more capitalised tokens, none an ordinary word: a proper name
                add((m.start(1), m.end(1)), 0.75 if known_first or known_last else 0.5)
            return results

    flags = re.IGNORECASE | re.DOTALL | re.MULTILINE
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
                r"\b\d{1,6}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|"
                r"Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy|"
                r"Square|Sq|Highway|Hwy|Circle|Cir|Trail|Close|Crescent)\b\.?"
                r"(?:,?\s+(?:Apt|Suite|Unit|#)\.?\s*\w+)?",
                0.6,
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

    def cue_recognizer(entity: str, name: str, patterns: list[str]) -> object:
        return PatternRecognizer(
            supported_entity=entity,
            name=name,
            patterns=[Pattern(f"{name}_{i}", p, 0.6) for i, p in enumerate(patterns)],
            global_regex_flags=flags,
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
        cue_recognizer("ACCOUNT_NUMBER", "AccountNumberRecognizer", settings.account_patterns),
        cue_recognizer("LOAN_NUMBER", "LoanNumberRecognizer", settings.loan_patterns),
        cue_recognizer(
            "MEDICAL_RECORD_NUMBER", "MedicalRecordRecognizer", settings.medical_record_patterns
        ),
        PersonNameRecognizer(),
    ]


def _recognizer_settings_key(settings: PIISettings) -> str:
    return json.dumps(
        [settings.account_patterns, settings.loan_patterns, settings.medical_record_patterns]
    )


@functools.lru_cache(maxsize=4)
def _analyzer_for(key: str):  # noqa: ANN202 - presidio's AnalyzerEngine
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    account, loan, mrn = json.loads(key)
    settings = PIISettings(
        account_patterns=account, loan_patterns=loan, medical_record_patterns=mrn
    )
    blank_dir = Path(tempfile.mkdtemp(prefix="tunegate-spacy-")) / "blank_en"
    spacy.blank("en").to_disk(blank_dir)
    nlp_engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": str(blank_dir)}],
        }
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in _build_recognizers(settings):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def build_analyzer(settings: PIISettings | None = None):  # noqa: ANN201 - AnalyzerEngine
    """Presidio's AnalyzerEngine, offline: blank spaCy pipeline + our registry (cached)."""
    return _analyzer_for(_recognizer_settings_key(settings or PIISettings()))


# --- the fast engine ------------------------------------------------------------------------

_NON_DIGITS = re.compile(r"\D+")
_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")
_IP_HINT = re.compile(r"\d\.\d|[0-9A-Fa-f]:[0-9A-Fa-f:]|::")


def _prefilter(name: str):  # noqa: ANN202 - (text, digit count) -> bool, or None for always
    """Cheap necessary conditions per recognizer: skip it when the text cannot match."""
    return {
        "EmailPatternRecognizer": lambda t, d: "@" in t,
        "PhoneRecognizer": lambda t, d: d >= 7,
        "LuhnCardRecognizer": lambda t, d: d >= 13,
        "GroupedPhoneRecognizer": lambda t, d: d >= 7,
        "IbanRecognizer": lambda t, d: d >= 8 and _IBAN_HINT.search(t) is not None,
        "IpRecognizer": lambda t, d: _IP_HINT.search(t) is not None,
        "UsSsnAnyRecognizer": lambda t, d: d >= 9,
        "DateOfBirthRecognizer": lambda t, d: d >= 2,
        "StreetAddressRecognizer": lambda t, d: d >= 1,
        "AccountNumberRecognizer": lambda t, d: d >= 1,
        "LoanNumberRecognizer": lambda t, d: d >= 1,
        "MedicalRecordRecognizer": lambda t, d: d >= 1,
    }.get(name)


# Digit runs that could hold a phone number; `phonenumbers` then looks only at these windows.
_PHONE_WINDOW = re.compile(r"(?:\+|\b00|\()?\d[\d \t().\-/]{4,}\d(?:\s?(?:x|ext\.?)\s?\d{1,6})?")


class Scrubber:
    """The recognizers of `build_analyzer`, called directly with a pre-filter each.

    Differences from `AnalyzerEngine.analyze`, all for speed: no spaCy pass (the blank pipeline
    adds nothing the recognizers use), a cheap necessary condition per recognizer, and the
    `phonenumbers` recognizer (80% of the engine's time) runs on the digit-run windows that
    no more specific detector (SSN, card, IBAN, IP, date of birth, numbers) already covers.
    """

    def __init__(self, settings: PIISettings) -> None:
        self.settings = settings
        engine = build_analyzer(settings)
        chosen = [
            (r, _prefilter(r.name), [e for e in r.supported_entities if e in settings.entities])
            for r in engine.registry.recognizers
        ]
        chosen = [c for c in chosen if c[2]]
        # the windowed phone lookup goes last so it can skip what others already found
        self.recognizers = [c for c in chosen if c[0].name != "PhoneRecognizer"]
        self.phone = next((c for c in chosen if c[0].name == "PhoneRecognizer"), None)
        self.compiled = {id(r): _compile_patterns(r) for r, _, _ in self.recognizers}

    def analyze(self, text: str, threshold: float | None = None) -> list:
        threshold = self.settings.score_threshold if threshold is None else threshold
        digits = len(text) - len("".join(_NON_DIGITS.findall(text)))
        results = []
        for recognizer, gate, entities in self.recognizers:
            if gate is not None and not gate(text, digits):
                continue
            compiled = self.compiled[id(recognizer)]
            found = (
                _match_patterns(recognizer, compiled, text)
                if compiled is not None
                else recognizer.analyze(text, entities, None) or []
            )
            for r in found:
                if r.score >= threshold and r.entity_type in entities:
                    results.append(r)
        if self.phone is not None and digits >= 7:
            recognizer, _, entities = self.phone
            specific = [r for r in results if r.entity_type not in ("PHONE_NUMBER", "PERSON")]
            for m in _PHONE_WINDOW.finditer(text):
                if any(r.start <= m.start() and r.end >= m.end() for r in specific):
                    continue
                lo, hi = max(0, m.start() - 2), min(len(text), m.end() + 2)
                for r in recognizer.analyze(text[lo:hi], entities, None) or []:
                    if r.score >= threshold:
                        r.start += lo
                        r.end += lo
                        results.append(r)
        return _resolve_overlaps(results)


# Pattern recognizers whose matching `_match_patterns` reproduces without Presidio's per-match
# explanation objects (ours, and Presidio's IP recognizer, which only adds `invalidate_result`).
_PLAIN_PATTERN_RECOGNIZERS = {
    "EmailPatternRecognizer",
    "LuhnCardRecognizer",
    "GroupedPhoneRecognizer",
    "UsSsnAnyRecognizer",
    "DateOfBirthRecognizer",
    "StreetAddressRecognizer",
    "AccountNumberRecognizer",
    "LoanNumberRecognizer",
    "MedicalRecordRecognizer",
    "IpRecognizer",
}


def _compile_patterns(recognizer: object) -> list | None:
    """The recognizer's patterns compiled once with its own flags, or None to call analyze."""
    import regex

    if recognizer.name not in _PLAIN_PATTERN_RECOGNIZERS:
        return None
    flags = recognizer.global_regex_flags
    return [(regex.compile(p.regex, flags=flags), p.score) for p in recognizer.patterns]


def _match_patterns(recognizer: object, compiled: list, text: str) -> list:
    """Presidio's PatternRecognizer matching rules: validate -> 1.0 or drop, invalidate -> drop."""
    from presidio_analyzer import RecognizerResult

    entity = recognizer.supported_entities[0]
    out = []
    for pattern, score in compiled:
        for m in pattern.finditer(text):
            start, end = m.span()
            if start == end:
                continue
            value = text[start:end]
            valid = recognizer.validate_result(value)
            if valid is False or recognizer.invalidate_result(value):
                continue
            out.append(RecognizerResult(entity, start, end, 1.0 if valid else score))
    return out


@functools.lru_cache(maxsize=4)
def _scrubber_for(settings_json: str) -> Scrubber:
    return Scrubber(PIISettings.model_validate_json(settings_json))


def get_scrubber(settings: PIISettings) -> Scrubber:
    return _scrubber_for(settings.model_dump_json())


# On equal spans the more specific type wins: "123-45-6789" is an SSN before it is a phone.
SPECIFICITY = {
    name: rank
    for rank, name in enumerate(
        ["US_SSN", "CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS", "DATE_OF_BIRTH"]
        + ["MEDICAL_RECORD_NUMBER", "LOAN_NUMBER", "ACCOUNT_NUMBER"]
        + ["PHONE_NUMBER", "STREET_ADDRESS", "PERSON"]
    )
}


def _resolve_overlaps(results: list) -> list:
    """Keep the longest span where detections overlap, then the more specific type."""
    chosen: list = []
    ranked = sorted(
        results,
        key=lambda r: (-(r.end - r.start), SPECIFICITY.get(r.entity_type, 99), -r.score, r.start),
    )
    for r in ranked:
        if all(r.end <= c.start or r.start >= c.end for c in chosen):
            chosen.append(r)
    return sorted(chosen, key=lambda r: r.start)


# --- scrubbing ----------------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"<[A-Z]+_[0-9a-f]+>")


@dataclass
class ScrubbedText:
    text: str
    counts: Counter
    drop: bool = False  # an entity with operator drop_row was found
    residual: Counter = field(default_factory=Counter)  # entity types the residual scan found


def replace_spans(text: str, spans: list, settings: PIISettings) -> tuple[str, Counter, bool]:
    """Apply each entity's operator to its spans; placeholders are numbered per value."""
    numbering: dict[tuple[str, str], int] = {}
    per_type: Counter = Counter()
    counts: Counter = Counter()
    drop = False
    pieces: list[str] = []
    cursor = 0
    for r in spans:
        value = text[r.start : r.end]
        op = settings.operator(r.entity_type)
        tag = PLACEHOLDER_NAMES.get(r.entity_type, r.entity_type)
        counts[r.entity_type] += 1
        if op is Operator.mask:
            replacement = re.sub(r"\w", "*", value)
        elif op is Operator.hash:
            digest = hashlib.sha256((settings.hash_salt + value).encode()).hexdigest()[:10]
            replacement = f"<{tag}_{digest}>"
        else:
            drop = drop or op is Operator.drop_row
            key = (r.entity_type, value)
            if key not in numbering:
                per_type[r.entity_type] += 1
                numbering[key] = per_type[r.entity_type]
            replacement = f"<{tag}_{numbering[key]}>"
        pieces.append(text[cursor : r.start])
        pieces.append(replacement)
        cursor = r.end
    pieces.append(text[cursor:])
    return "".join(pieces), counts, drop


def residual_scan(text: str, settings: PIISettings) -> Counter:
    """Entity types the detectors still find in scrubbed text, outside our placeholders."""
    scrubber = get_scrubber(settings)
    found: Counter = Counter()
    masked = PLACEHOLDER_RE.sub(lambda m: "X" * len(m.group()), text)
    for r in scrubber.analyze(masked, threshold=settings.residual_score_threshold):
        value = masked[r.start : r.end]
        if value.strip("X* -.") == "":  # only placeholder or mask characters
            continue
        found[r.entity_type] += 1
    return found


def scrub_one(text: str, settings: PIISettings) -> ScrubbedText:
    if not text or not settings.enabled:
        return ScrubbedText(text, Counter())
    spans = get_scrubber(settings).analyze(text)
    scrubbed, counts, drop = replace_spans(text, spans, settings)
    return ScrubbedText(scrubbed, counts, drop, residual_scan(scrubbed, settings))


def scrub_text(text: str, settings: PIISettings) -> tuple[str, Counter]:
    """Replace every detected entity per its operator. Returns the text and counts per type."""
    out = scrub_one(text, settings)
    return out.text, out.counts


def _scrub_chunk(args: tuple[list[str | None], str]) -> list[ScrubbedText | None]:
    texts, settings_json = args
    settings = PIISettings.model_validate_json(settings_json)
    return [None if t is None else scrub_one(t, settings) for t in texts]


def scrub_many(texts: list[str | None], settings: PIISettings) -> list[ScrubbedText | None]:
    """Scrub a batch; batches of 2,000+ texts use `settings.processes` worker processes."""
    if settings.processes <= 1 or len(texts) < 2000:
        return _scrub_chunk((texts, settings.model_dump_json()))
    size = -(-len(texts) // (settings.processes * 4))
    chunks = [(texts[i : i + size], settings.model_dump_json()) for i in range(0, len(texts), size)]
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(settings.processes, mp_context=context) as pool:
        out: list[ScrubbedText | None] = []
        for part in pool.map(_scrub_chunk, chunks):
            out.extend(part)
    return out


@dataclass
class PIIAudit:
    """Counts per entity type and per column, no values."""

    records: int = 0
    records_with_pii: int = 0
    entities: Counter = field(default_factory=Counter)
    by_column: dict[str, Counter] = field(default_factory=dict)
    rows_dropped: int = 0
    residual_hits: Counter = field(default_factory=Counter)
    records_unreadable: int = 0

    def add(self, counts: Counter, column: str = "text") -> None:
        self.add_row({column: counts})

    def add_row(self, per_column: dict[str, Counter]) -> None:
        """One record, scrubbed in one or more columns (input text; target for generation)."""
        self.records += 1
        if any(per_column.values()):
            self.records_with_pii += 1
        for column, counts in per_column.items():
            self.entities.update(counts)
            self.by_column.setdefault(column, Counter()).update(counts)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "records_with_pii": self.records_with_pii,
            "entities": dict(sorted(self.entities.items())),
            "by_column": {c: dict(sorted(v.items())) for c, v in sorted(self.by_column.items())},
            "rows_dropped": self.rows_dropped,
            "residual_hits": dict(sorted(self.residual_hits.items())),
            "records_unreadable": self.records_unreadable,
        }

    def table(self) -> list[dict]:
        """One row per (column, entity type): the Prefect table artifact."""
        return [
            {"column": c, "entity": e, "count": n}
            for c, counts in sorted(self.by_column.items())
            for e, n in sorted(counts.items())
        ]


def scrub_texts(
    texts: list[str | None], settings: PIISettings, column: str = "text"
) -> tuple[list[str | None], PIIAudit]:
    """Scrub a batch of texts; `None` stays `None`. Returns the texts and the audit."""
    audit = PIIAudit()
    out: list[str | None] = []
    for text, result in zip(texts, scrub_many(texts, settings), strict=True):
        if result is None:
            out.append(text)
            audit.add(Counter(), column)
            continue
        out.append(result.text)
        audit.add(result.counts, column)
        audit.residual_hits.update(result.residual)
    return out, audit


def scrub_record(record: dict, settings: PIISettings, audit: PIIAudit | None = None) -> dict:
    """Scrub every string value of a record (quarantined rows, whatever their shape)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, str) and settings.enabled:
            result = scrub_one(value, settings)
            value = result.text
            if result.residual:  # quarantined rows cannot go anywhere else: blank the value
                value = "<REDACTED>"
            if audit is not None:
                audit.by_column.setdefault(f"quarantine.{key}", Counter()).update(result.counts)
                audit.entities.update(result.counts)
        out[key] = value
    return out


def write_quarantine(
    loaded: LoadedData,
    quarantined: dict[int, str],
    settings: PIISettings,
    stem: Path,
    like: Path,
    audit: PIIAudit | None = None,
) -> Path:
    """Quarantined rows, scrubbed, in the input's format with `_line` and `_reason`."""
    frame = loaded.frame.set_index("_line", drop=False)
    unreadable = {int(r["_line"]): r for r in loaded.unreadable}
    rows = []
    for line, reason in sorted(quarantined.items()):
        if line in unreadable:
            record = {"_raw": unreadable[line]["_raw"]}
        else:
            record = {
                k: (None if not isinstance(v, list | dict) and pd.isna(v) else v)
                for k, v in frame.loc[line].to_dict().items()
                if k != "_line"
            }
        record = scrub_record(record, settings, audit)
        # the reason names types and checks only; scrub it too in case a value slipped in
        record.update({"_line": line, "_reason": scrub_record({"r": reason}, settings)["r"]})
        rows.append(record)
    return write_records(rows, stem, like)


def scrub_file(source: Path, target: Path, settings: PIISettings) -> PIIAudit:
    """Scrub every string value of every readable record of `source` into `target`.

    The format of `target` follows its suffix. Unreadable records are counted, not copied.
    """
    loaded = read_records(source)
    frame = loaded.frame
    audit = PIIAudit()
    columns = [c for c in frame.columns if c != "_line"]
    out = frame[columns].copy()
    for column in columns:
        values = [v if isinstance(v, str) else None for v in frame[column]]
        if not any(values):
            continue
        results = scrub_many(values, settings) if settings.enabled else [None] * len(values)
        column_counts: Counter = Counter()
        scrubbed = []
        for value, result in zip(frame[column], results, strict=True):
            if result is None:
                scrubbed.append(value)
                continue
            column_counts.update(result.counts)
            audit.residual_hits.update(result.residual)
            scrubbed.append("<REDACTED>" if result.residual else result.text)
        out[column] = scrubbed
        audit.by_column[column] = column_counts
        audit.entities.update(column_counts)
    audit.records = len(frame)
    audit.records_unreadable = len(loaded.unreadable)
    audit.records_with_pii = int(
        sum(
            any(isinstance(v, str) and PLACEHOLDER_RE.search(v) for v in row)
            for row in out.itertuples(index=False)
        )
    )
    if detect_format(target) == "parquet":
        target.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(target, index=False)
    else:
        write_records(out.to_dict("records"), target.with_suffix(""), target)
    return audit


class ResidualPII(Exception):
    """The residual scan found PII after scrubbing and `pii.residual_action` is `fail`."""


class ScrubResult(BaseModel):
    accepted_path: Path
    quarantine_path: Path
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    accepted_lines: list[int]
    audit: dict


def scrub_dataset(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    """Write `<name>_accepted.parquet` (_line, text, label) and the quarantine file, scrubbed.

    Generation data (`data.target_column`) gets (_line, text, target), both texts scrubbed.

    The quarantine file has the input's format (`<name>_quarantine.<ext>`) with `_line` and
    `_reason`. Both come straight from the source file, so no unscrubbed copy is ever written.
    Rows with a drop_row entity or a residual hit (with residual_action=quarantine) move from
    accepted to quarantined, so rows in = accepted + quarantined still holds.
    """
    loaded = read_records(data.path)
    frame = loaded.frame.set_index("_line", drop=False)
    accepted = frame.loc[report.accepted_lines]
    columns = [data.text_column] + ([data.y_column] if data.generation else [])
    raw = {c: [str(t) for t in accepted[c]] for c in columns}
    results = {
        c: scrub_many(raw[c], settings) if settings.enabled else [None] * len(accepted)
        for c in columns
    }
    audit = PIIAudit()
    quarantined = dict(report.quarantined)
    keep_lines: list[int] = []
    keep: dict[str, list[str]] = {c: [] for c in columns}
    for i, line in enumerate(accepted["_line"].astype(int)):
        row = {c: results[c][i] for c in columns}
        audit.add_row({c: r.counts if r else Counter() for c, r in row.items()})
        drop: set[str] = set()
        residual: Counter = Counter()
        for result in filter(None, row.values()):
            residual.update(result.residual)
            if result.drop:
                drop.update(e for e in result.counts if settings.operator(e) is Operator.drop_row)
        audit.residual_hits.update(residual)
        if residual and settings.residual_action == "fail":
            raise ResidualPII(
                f"residual scan found {dict(residual)} in line {line} after scrubbing; "
                "fix the recognizers or set pii.residual_action=quarantine"
            )
        if drop:
            audit.rows_dropped += 1
            quarantined[line] = f"contains {', '.join(sorted(drop))} (pii.operators: drop_row)"
        elif residual:
            quarantined[line] = f"residual PII after scrubbing: {', '.join(sorted(residual))}"
        else:
            keep_lines.append(line)
            for c in columns:
                keep[c].append(row[c].text if row[c] else raw[c][i])
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted_path = out_dir / f"{name}_accepted.parquet"
    kept = frame.loc[keep_lines] if keep_lines else frame.iloc[0:0]
    table = {
        "_line": pd.Series(keep_lines, dtype="int64"),
        "text": pd.Series(keep[data.text_column], dtype=object),
    }
    if data.generation:
        table["target"] = pd.Series(keep[data.y_column], dtype=object)
    else:
        table["label"] = kept[data.label_column].astype(str).to_numpy()
    pd.DataFrame(table).to_parquet(accepted_path, index=False)

    quarantine_path = write_quarantine(
        loaded, quarantined, settings, out_dir / f"{name}_quarantine", data.path, audit
    )
    return ScrubResult(
        accepted_path=accepted_path,
        quarantine_path=quarantine_path,
        rows_in=report.rows_in,
        rows_accepted=len(keep_lines),
        rows_quarantined=len(quarantined),
        accepted_lines=keep_lines,
        audit=audit.as_dict(),
    )


def scrub_cache_key(data: DataSettings, settings: PIISettings, report: ValidationReport) -> str:
    """Content hash of the input file + the settings that shape the output."""
    from tasks.validate import file_digest

    digest = hashlib.sha256()
    digest.update(file_digest(data.path).encode())
    digest.update(data.model_dump_json(exclude={"path", "test_path"}).encode())
    digest.update(settings.model_dump_json().encode())
    digest.update(json.dumps(report.accepted_lines).encode())
    return digest.hexdigest()[:24]


def _scrub_task_key(context, parameters: dict) -> str:  # noqa: ANN001 - prefect's TaskRunContext
    where = f"{Path(parameters['out_dir']).resolve()}|{parameters['name']}"
    key = scrub_cache_key(parameters["data"], parameters["settings"], parameters["report"])
    return f"scrub-{key}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


@task(name="scrub-pii", cache_key_fn=_scrub_task_key, persist_result=True)
def scrub_task(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    """Scrub one data file; cached on file content + settings (a re-run skips the work)."""
    key = scrub_cache_key(data, settings, report)
    result = scrub_dataset(data, report, settings, Path(out_dir) / key, name)
    stage_logger(__name__).info("scrubbed %s: %s", name, json.dumps(result.audit["entities"]))
    return result
