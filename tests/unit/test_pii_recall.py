"""Recall and precision of the scrubber on the deterministic PII test set (tests/data)."""

import pytest

from tasks.pii import PIISettings, get_scrubber
from tests.data.pii_testset import HOLDOUT_NAMES, ORDINARY, build, name_records, score

pytestmark = pytest.mark.unit

STRUCTURED = [
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


@pytest.fixture(scope="module")
def result():
    records = build()
    assert len(records) >= 200
    scrubber = get_scrubber(PIISettings())
    out = score(records, lambda t: [(r.entity_type, r.start, r.end) for r in scrubber.analyze(t)])
    print({k: round(v, 4) for k, v in out["recall"].items()})
    print({k: round(v, 4) for k, v in out["precision"].items()})
    return out


def test_every_entity_type_is_in_the_set(result):
    assert set(result["support"]) == {*STRUCTURED, "PERSON"}
    assert min(result["support"].values()) >= 20


def test_recall_structured_types_at_least_0_99(result):
    low = {k: v for k, v in result["recall"].items() if k in STRUCTURED and v < 0.99}
    assert low == {}


def test_recall_person_names_at_least_0_95(result):
    assert result["recall"]["PERSON"] >= 0.95


def test_precision_and_ordinary_words_survive(result):
    assert result["ordinary_sentences_untouched"] == 1.0
    low = {k: v for k, v in result["precision"].items() if v < 0.95}
    assert low == {}


def test_ordinary_sentences_come_back_unchanged():
    scrubber = get_scrubber(PIISettings())
    changed = [s for s in ORDINARY if scrubber.analyze(s)]
    assert changed == []


def test_recall_on_the_second_hand_written_name_list():
    scrubber = get_scrubber(PIISettings())
    out = score(
        name_records(HOLDOUT_NAMES),
        lambda t: [(r.entity_type, r.start, r.end) for r in scrubber.analyze(t)],
    )
    assert out["recall"]["PERSON"] >= 0.95
