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

Layout: `settings` (what to scrub, how), `patterns` (regexes and the word lists in `words/`),
`recognizers` (the Presidio recognizers; loads Presidio, so imported on first use), `engine`
(the analyzer and `Scrubber`), `scrub` (the one scrub loop and its callers), `audit` (counts).
"""

from tasks.pii.audit import PIIAudit
from tasks.pii.engine import Scrubber, build_analyzer, get_scrubber
from tasks.pii.patterns import luhn_valid, name_gazetteers
from tasks.pii.scrub import (
    ResidualPII,
    ScrubbedRecord,
    ScrubbedText,
    ScrubResult,
    replace_spans,
    residual_scan,
    scrub_cache_key,
    scrub_dataset,
    scrub_file,
    scrub_many,
    scrub_one,
    scrub_record,
    scrub_records,
    scrub_task,
    scrub_text,
    scrub_texts,
    write_quarantine,
)
from tasks.pii.settings import ENTITY_TYPES, PLACEHOLDER_NAMES, Operator, PIISettings

__all__ = [
    "ENTITY_TYPES",
    "PLACEHOLDER_NAMES",
    "Operator",
    "PIIAudit",
    "PIISettings",
    "ResidualPII",
    "ScrubResult",
    "ScrubbedRecord",
    "ScrubbedText",
    "Scrubber",
    "build_analyzer",
    "get_scrubber",
    "luhn_valid",
    "name_gazetteers",
    "replace_spans",
    "residual_scan",
    "scrub_cache_key",
    "scrub_dataset",
    "scrub_file",
    "scrub_many",
    "scrub_one",
    "scrub_record",
    "scrub_records",
    "scrub_task",
    "scrub_text",
    "scrub_texts",
    "write_quarantine",
]
