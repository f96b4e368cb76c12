"""A DEVELOPMENT set for PII precision: PII-free sentences that the detector's rules are tuned
on, kept apart from `benchmarks/pii_precision.py` (scored, never tuned on).

Different from the benchmark on purpose: other templates (support-chat and back-office notes,
not banking-app questions), other Faker locales and seed, and partly other providers (catch
phrases, jobs in sector phrases, language and colour names, administrative units, street-less
place names, product-ish titles built from Faker's lorem and colour words).
"""

from __future__ import annotations

import random

LOCALES = ["en_NZ", "en_IN", "de_AT", "de_CH", "fr_CA", "es_MX", "es_CO", "pt_BR", "it_CH", "nl_BE"]
SEED = 20_261

TEMPLATES = {
    "company": [
        "Ticket: customer asks about a charge from {x} on the statement.",
        "Merchant {x} is flagged as a subscription service.",
        "We received a chargeback request for {x}.",
        "Payroll deposits from {x} arrive on the 25th.",
    ],
    "bank": [
        "Incoming SWIFT transfer from {x} is on hold.",
        "The customer wants to move their mortgage from {x}.",
    ],
    "currency": [
        "Conversion fees apply when paying in {x}.",
        "Please add {x} to the list of wallet currencies.",
        "The customer holds a balance in {x} and wants to close it.",
    ],
    "country": [
        "Card payments from {x} are blocked by the fraud rules.",
        "New accounts for residents of {x} need extra checks.",
        "Roaming fees for {x} are waived this month.",
        "Shipping to {x} takes ten working days.",
    ],
    "region": [
        "Branches across {x} close early on Friday.",
        "Tax forms differ for {x}, see the help page.",
    ],
    "city": [
        "ATM withdrawal in {x} failed twice.",
        "Contactless limit raised for the trip to {x}.",
        "Our office in {x} handles card replacements.",
    ],
    "job": [
        "Occupation on the form: {x}.",
        "Applicant works in {x} and asks for a credit line.",
        "Student discount does not cover {x} courses.",
        "Self-employed {x} accounts need two years of returns.",
    ],
    "sector": [
        "Interest rates for {x} loans were updated.",
        "The {x} team approved the new fee schedule.",
        "Does the {x} Plan include travel insurance?",
        "Customer asks whether {x} counts as a business expense.",
    ],
    "product": [
        "Is the {x} card available for teenagers?",
        "The {x} account has no monthly fee.",
        "Upgrade from Standard to {x} failed in the app.",
    ],
    "language": [
        "Statements can be printed in {x} on request.",
        "The chat bot does not understand {x} yet.",
    ],
    "calendar": [
        "Direct debits scheduled for {x} were delayed.",
        "The app was down on {x} morning.",
    ],
}

SECTORS = [
    "Higher Education",
    "Further Education",
    "Primary Care",
    "Social Care",
    "Public Health",
    "Civil Engineering",
    "Fine Art",
    "Fast Food",
    "Real Estate",
    "Private Equity",
    "Venture Capital",
    "Human Resources",
    "Customer Service",
    "Supply Chain",
    "Information Technology",
    "Financial Services",
    "Early Years",
    "Media Studies",
    "Green Energy",
    "Small Business",
]


def _filler(fake, kind: str, rng: random.Random) -> str | None:
    try:
        if kind == "company":
            return fake.company()
        if kind == "bank":
            return fake.bank()
        if kind == "currency":
            name = fake.currency_name()
            return name.title() if rng.random() < 0.5 else name
        if kind == "country":
            return fake.country()
        if kind == "region":
            return fake.administrative_unit()
        if kind == "city":
            return fake.city()
        if kind == "job":
            job = fake.job()
            return job.title() if rng.random() < 0.6 else job
        if kind == "sector":
            if rng.random() < 0.5:
                return rng.choice(SECTORS)
            return " ".join(w.title() for w in fake.bs().split()[-2:])
        if kind == "product":
            words = [fake.color_name().split()[0].title(), fake.word().title()]
            return " ".join(words) if rng.random() < 0.5 else f"{words[0]} Plus"
        if kind == "language":
            return fake.language_name()
        if kind == "calendar":
            return rng.choice([fake.day_of_week(), fake.month_name()])
    except (AttributeError, NotImplementedError):
        return None
    raise ValueError(kind)


def build(n: int = 1500, seed: int = SEED) -> list[tuple[str, str]]:
    """`n` (kind, sentence) pairs with no personal data, deterministic for a seed."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = []
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(seed)
        fakers.append(fake)
    kinds = sorted(TEMPLATES)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        kind = kinds[len(out) % len(kinds)]
        value = _filler(rng.choice(fakers), kind, rng)
        if not value:
            continue
        text = rng.choice(TEMPLATES[kind]).replace("{x}", value)
        out.append((kind, text[0].upper() + text[1:]))
    return out
