import pytest

from tasks.pii import PIISettings, luhn_valid, scrub_text, scrub_texts

pytestmark = pytest.mark.unit

S = PIISettings()

CASES = [
    ("Reach me at jane.doe@example.co.uk today", "jane.doe@example.co.uk", "<EMAIL_1>"),
    ("Call +1 415-555-0132 after six", "415-555-0132", "<PHONE_1>"),
    ("Phone (0084) 763866.", "763866", "<PHONE_1>"),
    ("SSN 123-45-6789 on file", "123-45-6789", "<SSN_1>"),
    ("Card 4111 1111 1111 1111 charged", "4111 1111 1111 1111", "<CARD_1>"),
    ("IBAN DE89370400440532013000 given", "DE89370400440532013000", "<IBAN_1>"),
    ("Login from 203.0.113.7 flagged", "203.0.113.7", "<IP_1>"),
    ("Mailing address: 12 Rue de Rivoli, 75001 Paris.", "Rue de Rivoli", "<ADDRESS_1>"),
    ("Dr. Amélie Dubois-Laurent called", "Dubois-Laurent", "<PERSON_1>"),
    ("Notes on Müller, Hans: fine", "Müller", "<PERSON_1>"),
    ("Maria García requests a loan", "García", "<PERSON_1>"),
]


@pytest.mark.parametrize("text, secret, placeholder", CASES)
def test_each_entity_type_is_replaced_by_its_placeholder(text, secret, placeholder):
    scrubbed, counts = scrub_text(text, S)
    assert secret not in scrubbed
    assert placeholder in scrubbed
    assert sum(counts.values()) >= 1


def test_same_value_gets_same_placeholder_within_a_record():
    scrubbed, counts = scrub_text("Mail a@b.com or a@b.com, not c@d.org", S)
    assert scrubbed == "Mail <EMAIL_1> or <EMAIL_1>, not <EMAIL_2>"
    assert counts["EMAIL_ADDRESS"] == 3


def test_ordinary_text_survives():
    text = "The credit file is thin but acceptable. Existing debt is moderate relative to income."
    assert scrub_text(text, S)[0] == text


def test_audit_counts_without_values():
    texts, audit = scrub_texts(["x@y.com", None, "nothing here"], S)
    assert texts[1] is None
    assert audit.as_dict() == {
        "records": 3,
        "records_with_pii": 1,
        "entities": {"EMAIL_ADDRESS": 1},
    }


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
