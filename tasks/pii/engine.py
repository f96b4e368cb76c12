"""Detection: Presidio's analyzer offline, and `Scrubber`, the same recognizers run fast.

`build_analyzer` is Presidio's `AnalyzerEngine` with a blank spaCy pipeline (saved to a temporary
folder once per process) and our registry; `Scrubber` calls its recognizers directly with a cheap
pre-filter each and resolves overlapping detections. Both are cached per settings.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path

from tasks.pii.settings import PIISettings


def _recognizer_settings_key(settings: PIISettings) -> str:
    return json.dumps(
        [settings.account_patterns, settings.loan_patterns, settings.medical_record_patterns]
    )


@functools.lru_cache(maxsize=4)
def _analyzer_for(key: str):  # noqa: ANN202 - presidio's AnalyzerEngine
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from tasks.pii import recognizers  # loads Presidio: on first use, not on import

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
    for recognizer in recognizers.build(settings):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def build_analyzer(settings: PIISettings | None = None):  # noqa: ANN201 - AnalyzerEngine
    """Presidio's AnalyzerEngine, offline: blank spaCy pipeline + our registry (cached)."""
    return _analyzer_for(_recognizer_settings_key(settings or PIISettings()))


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
