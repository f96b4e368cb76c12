"""Scrub PII offline with Presidio before anything is trained on or logged.

Presidio's default engine downloads a spaCy model; we give it a blank spaCy pipeline (saved to a
temporary folder once per process) and our own recognizer registry: Presidio's pattern
recognizers (email, phone, card with Luhn, IBAN, IP) plus ours for US SSNs (Presidio rejects
well-known sample numbers), street addresses, account numbers and person names. Names have no
NER model offline, so `PersonNameRecognizer` combines title cues (Mr., Dr., ...), "Last, First"
order and a gazetteer of first names from many cultures (Faker's locale lists), followed by
capitalised, possibly hyphenated or accented surname tokens.

Each detected value is replaced by a typed placeholder, consistent within a record
(`<PERSON_1>` twice for the same name). The audit holds counts only, never values.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from tasks.load import DataSettings, read_records
from tasks.validate import ValidationReport

ENTITY_TYPES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "ACCOUNT_NUMBER",
]

PLACEHOLDER_NAMES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "SSN",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "STREET_ADDRESS": "ADDRESS",
    "ACCOUNT_NUMBER": "ACCOUNT",
}


class PIISettings(BaseModel):
    """Which entities to scrub and how sure a detector must be."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Scrub PII before training and logging.")
    entities: list[str] = Field(
        default_factory=lambda: list(ENTITY_TYPES), description="Entity types to scrub."
    )
    score_threshold: float = Field(
        default=0.3, ge=0, le=1, description="Lowest detector score that counts as a hit."
    )


# --- recognizers --------------------------------------------------------------------------

TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)\.?"
# A capitalised name token: letters incl. accents, optionally hyphenated or with an apostrophe.
NAME_TOKEN = r"[A-ZÀ-ÖØ-ÞĀ-Ž][a-zß-öø-ÿā-žA-Z'’]+(?:-[A-ZÀ-ÖØ-ÞĀ-Ž][a-zß-öø-ÿā-ž'’]+)*"
PARTICLE = r"(?:de|del|della|da|das|dos|do|di|van|von|der|den|la|le|du|bin|al|ter|ten|y)"
SURNAME = rf"(?:{PARTICLE}\s+)*{NAME_TOKEN}(?:\s+(?:{PARTICLE}\s+)*{NAME_TOKEN})?"

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
}


@functools.lru_cache(maxsize=1)
def first_name_gazetteer() -> frozenset[str]:
    """First names from Faker's person providers across every locale it ships (offline)."""
    import faker.providers.person as person

    names: set[str] = set()
    for locale_dir in Path(person.__file__).parent.iterdir():
        if not locale_dir.is_dir() or locale_dir.name.startswith("_"):
            continue
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale_dir.name}").Provider
        except Exception:  # noqa: BLE001 - a locale module that fails to import adds no names
            continue
        for attr in ("first_names", "first_names_male", "first_names_female"):
            values = getattr(provider, attr, ())
            if not isinstance(values, list | tuple | dict):
                continue
            names.update(v for v in values if isinstance(v, str) and v[:1].isupper())
    return frozenset(n for n in names if n not in NOT_NAMES and len(n) > 1)


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


def _build_recognizers() -> list:
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
            main = re.split(r"x|ext", pattern_text)[0]
            return 7 <= sum(c.isdigit() for c in main) <= 15

    class PersonNameRecognizer(EntityRecognizer):
        """Titles, "Last, First" and gazetteer first names followed by surname tokens."""

        def __init__(self) -> None:
            super().__init__(supported_entities=["PERSON"], name="PersonNameRecognizer")
            self.first_names = first_name_gazetteer()
            self.titled = re.compile(rf"\b{TITLES}\s+(?:{NAME_TOKEN}\s+)?{SURNAME}")
            self.candidate = re.compile(rf"\b({NAME_TOKEN})(?:\s+({NAME_TOKEN}))?\s+({SURNAME})")
            self.last_first = re.compile(rf"\b({SURNAME}),\s+({NAME_TOKEN})\b")

        def load(self) -> None:  # nothing to load: patterns compile in __init__
            return None

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
            results = []
            for m in self.titled.finditer(text):
                results.append(RecognizerResult("PERSON", m.start(), m.end(), 0.85))
            for m in self.last_first.finditer(text):
                if m.group(2) in self.first_names and m.group(1).split()[-1] not in NOT_NAMES:
                    results.append(RecognizerResult("PERSON", m.start(), m.end(), 0.8))
            for m in self.candidate.finditer(text):
                first = m.group(1)
                if first in self.first_names and m.group(3).split()[0] not in NOT_NAMES:
                    results.append(RecognizerResult("PERSON", m.start(), m.end(), 0.75))
            return results

    ssn = PatternRecognizer(
        supported_entity="US_SSN",
        name="UsSsnAnyRecognizer",
        patterns=[
            Pattern("ssn_dashed", r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", 0.6),
            Pattern("ssn_plain", r"(?i)(?<=ssn[:#\s])\s*\d{9}\b", 0.6),
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
                r"\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|"
                r"Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Parkway|Square)\b\.?",
                0.6,
            ),
        ],
    )
    account = PatternRecognizer(
        supported_entity="ACCOUNT_NUMBER",
        name="AccountNumberRecognizer",
        patterns=[
            Pattern(
                "account_cue",
                r"(?i)(?<=account (?:number|no\.|#) )\s*[A-Z0-9][A-Z0-9-]{5,24}\b",
                0.6,
            )
        ],
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
                r"(?<![\w@$])(?:\+|00)?\(?\d{1,4}\)?(?:[ .-]?\(?\d{1,5}\)?){1,6}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\w,])",
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
        street,
        account,
        PersonNameRecognizer(),
    ]


@functools.lru_cache(maxsize=1)
def build_analyzer():  # noqa: ANN201 - presidio's AnalyzerEngine
    """An offline AnalyzerEngine: blank spaCy pipeline + our registry. Built once per process."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    blank_dir = Path(tempfile.mkdtemp(prefix="tunegate-spacy-")) / "blank_en"
    spacy.blank("en").to_disk(blank_dir)
    nlp_engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": str(blank_dir)}],
        }
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in _build_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


# --- scrubbing ----------------------------------------------------------------------------


@dataclass
class PIIAudit:
    """Counts per entity type, no values."""

    records: int = 0
    records_with_pii: int = 0
    entities: Counter = field(default_factory=Counter)

    def add(self, counts: Counter) -> None:
        self.records += 1
        if counts:
            self.records_with_pii += 1
        self.entities.update(counts)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "records_with_pii": self.records_with_pii,
            "entities": dict(sorted(self.entities.items())),
        }


# On equal spans the more specific type wins: "123-45-6789" is an SSN before it is a phone.
SPECIFICITY = {
    name: rank
    for rank, name in enumerate(
        ["US_SSN", "CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS", "ACCOUNT_NUMBER"]
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


def scrub_text(text: str, settings: PIISettings) -> tuple[str, Counter]:
    """Replace every detected entity with a typed placeholder, consistent within the text."""
    if not text:
        return text, Counter()
    results = build_analyzer().analyze(
        text=text,
        language="en",
        entities=settings.entities,
        score_threshold=settings.score_threshold,
    )
    spans = _resolve_overlaps(results)
    numbering: dict[tuple[str, str], int] = {}
    per_type: Counter = Counter()
    counts: Counter = Counter()
    pieces: list[str] = []
    cursor = 0
    for r in spans:
        value = text[r.start : r.end]
        key = (r.entity_type, value)
        if key not in numbering:
            per_type[r.entity_type] += 1
            numbering[key] = per_type[r.entity_type]
        counts[r.entity_type] += 1
        pieces.append(text[cursor : r.start])
        pieces.append(f"<{PLACEHOLDER_NAMES.get(r.entity_type, r.entity_type)}_{numbering[key]}>")
        cursor = r.end
    pieces.append(text[cursor:])
    return "".join(pieces), counts


def scrub_texts(
    texts: list[str | None], settings: PIISettings
) -> tuple[list[str | None], PIIAudit]:
    """Scrub a batch of texts; `None` stays `None`. Returns the texts and the audit."""
    audit = PIIAudit()
    out: list[str | None] = []
    for text in texts:
        if text is None or not settings.enabled:
            out.append(text)
            audit.add(Counter())
            continue
        scrubbed, counts = scrub_text(text, settings)
        out.append(scrubbed)
        audit.add(counts)
    return out, audit


def scrub_record(record: dict, settings: PIISettings) -> tuple[dict, Counter]:
    """Scrub every string value of a record (used for quarantined rows, whatever their shape)."""
    counts: Counter = Counter()
    out = {}
    for key, value in record.items():
        if isinstance(value, str) and not key.startswith("_reason") and settings.enabled:
            value, found = scrub_text(value, settings)
            counts.update(found)
        out[key] = value
    return out, counts


class ScrubResult(BaseModel):
    accepted_path: Path
    quarantine_path: Path
    rows_accepted: int
    rows_quarantined: int
    audit: dict


def scrub_dataset(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    """Write `<name>_accepted.parquet` (text, label, _line) and `<name>_quarantine.jsonl`, scrubbed.

    Both come straight from the source file, so no unscrubbed copy is ever written.
    """
    loaded = read_records(data.path)
    frame = loaded.frame.set_index("_line", drop=False)
    accepted = frame.loc[report.accepted_lines]
    texts, audit = scrub_texts([str(t) for t in accepted[data.text_column]], settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted_path = out_dir / f"{name}_accepted.parquet"
    pd.DataFrame(
        {
            "_line": accepted["_line"].astype(int).to_numpy(),
            "text": texts,
            "label": accepted[data.label_column].astype(str).to_numpy(),
        }
    ).to_parquet(accepted_path, index=False)

    quarantine_path = out_dir / f"{name}_quarantine.jsonl"
    unreadable = {int(r["_line"]): r for r in loaded.unreadable}
    with quarantine_path.open("w", encoding="utf-8") as fh:
        for line, reason in sorted(report.quarantined.items()):
            if line in unreadable:
                record = {"_raw": unreadable[line]["_raw"]}
            else:
                record = {
                    k: (None if isinstance(v, float) and pd.isna(v) else v)
                    for k, v in frame.loc[line].to_dict().items()
                    if k != "_line"
                }
            record, _ = scrub_record(record, settings)
            record.update({"_line": line, "_reason": reason})
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return ScrubResult(
        accepted_path=accepted_path,
        quarantine_path=quarantine_path,
        rows_accepted=len(accepted),
        rows_quarantined=len(report.quarantined),
        audit=audit.as_dict(),
    )


@task(name="scrub-pii")
def scrub_task(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    result = scrub_dataset(data, report, settings, out_dir, name)
    get_run_logger().info("scrubbed %s: %s", name, json.dumps(result.audit["entities"]))
    return result
