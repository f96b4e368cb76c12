"""Synthetic loan-application reviews: the embedded default data set of `make demo`.

Each narrative describes three risk factors (credit history, debt burden, repayment record),
each at one of three levels, in one of many phrasings, surrounded by neutral context and
planted PII. The label is the bucket of the summed factor levels, so no single keyword decides it:
a keyword rule or a few-shot head stays low while a fine-tuned model that reads every factor
scores high. About 2% of rows are defective on purpose (null/empty text, unknown labels,
duplicates) so that validation has real work.
"""

from __future__ import annotations

import random

from faker import Faker

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]

# Phrasings per factor and level (0 = favourable, 2 = adverse).
FACTORS: dict[str, list[list[str]]] = {
    "credit": [
        [
            "the credit file is excellent with a long, clean history",
            "bureau scores sit in the top tier",
            "credit history is strong and well established",
            "the applicant has an outstanding credit record going back many years",
            "their credit profile is exemplary",
            "the bureau report shows a very high score and no derogatory marks",
        ],
        [
            "the credit file is thin but acceptable",
            "bureau scores are middling",
            "credit history is fair with a few soft spots",
            "the applicant has an average credit record",
            "their credit profile is unremarkable, neither strong nor weak",
            "the bureau report shows a moderate score",
        ],
        [
            "the credit file is poor",
            "bureau scores are well below our floor",
            "credit history is damaged",
            "the applicant has a weak credit record with several derogatory marks",
            "their credit profile is troubled",
            "the bureau report shows a very low score",
        ],
    ],
    "debt": [
        [
            "existing debt is minimal relative to income",
            "the debt-to-income ratio is comfortably low",
            "monthly obligations take only a small share of earnings",
            "they carry almost no outstanding balances",
            "repayments would be easily affordable",
        ],
        [
            "existing debt is moderate relative to income",
            "the debt-to-income ratio is in the middle of our range",
            "monthly obligations take a noticeable share of earnings",
            "they carry some outstanding card and auto balances",
            "repayments would be manageable but not trivial",
        ],
        [
            "existing debt is heavy relative to income",
            "the debt-to-income ratio is above our guideline",
            "monthly obligations consume most of their earnings",
            "they carry large balances on several cards",
            "repayments would stretch the household budget",
        ],
    ],
    "employment": [
        [
            "they have held the same salaried position for over eight years",
            "employment is long-standing and stable",
            "income is steady, verified by several years of payslips",
            "the applicant is a tenured employee with a secure contract",
            "work history is continuous with one long-term employer",
        ],
        [
            "they changed jobs a few months ago",
            "employment is recent, still within a probation period",
            "income is partly commission-based and varies month to month",
            "the applicant recently moved into contract work",
            "work history shows a couple of short gaps",
        ],
        [
            "they are currently between jobs",
            "employment could not be verified",
            "income is irregular and largely undocumented",
            "the applicant was laid off recently and relies on savings",
            "work history is fragmented with long unexplained gaps",
        ],
    ],
    "repayment": [
        [
            "every past loan was repaid on time",
            "the repayment record is spotless",
            "no late payments appear on any account",
            "previous loans with us were settled early",
            "they have never missed a scheduled payment",
        ],
        [
            "there were a couple of late payments last year",
            "the repayment record shows occasional delays",
            "one account was thirty days past due once",
            "previous loans were repaid, though sometimes late",
            "they missed a payment during a move but caught up",
        ],
        [
            "an earlier loan went to collections",
            "the repayment record includes a default",
            "several accounts were ninety days past due",
            "a previous loan was charged off",
            "they went through a bankruptcy discharge",
        ],
    ],
}

PURPOSES = [
    "home renovation",
    "debt consolidation",
    "a used car",
    "medical bills",
    "a small business expansion",
    "wedding costs",
    "tuition fees",
    "moving expenses",
    "solar panels",
    "a kitchen remodel",
]

OPENERS = [
    "{name} applied for ${amount:,} for {purpose}.",
    "{name} requests ${amount:,} for {purpose}.",
    "Notes on {name}: ${amount:,}, {purpose}.",
    "{name} asks ${amount:,} towards {purpose}.",
]

CONTACT = [
    "Contact: {email}.",
    "Phone {phone}.",
    "Email {email}, phone {phone}.",
    "SSN {ssn} verified.",
    "Fee paid by card {card}.",
    "Mailing address: {address}.",
    "Payout IBAN {iban}.",
    "Submitted from IP {ip}.",
    "",
    "",
]

FILLERS = [
    "Met in branch.",
    "Documents uploaded online.",
    "Asked about early repayment.",
    "No co-signer.",
    "",
    "",
    "",
    "",
]

LOCALES = ["en_US", "en_GB", "es_ES", "de_DE", "fr_FR", "it_IT", "pt_BR", "pl_PL", "nl_NL", "tr_TR"]


# The factors that decide the label; employment is described in FACTORS for other uses.
SCORED = ("credit", "debt", "repayment")


def label_for(levels: dict[str, int]) -> str:
    """Bucket the summed factor levels (0..6) into four risk classes: <=1, 2, 3, >=4."""
    total = sum(levels.values())
    if total <= 1:
        return "low_risk"
    if total == 2:
        return "medium_risk"
    if total == 3:
        return "high_risk"
    return "decline"


def _person_name(fake: Faker, rng: random.Random) -> str:
    first, last = fake.first_name(), fake.last_name()
    style = rng.random()
    if style < 0.15:
        return f"{rng.choice(['Mr.', 'Ms.', 'Dr.', 'Mrs.'])} {first} {last}"
    if style < 0.25:
        return f"{last}, {first}"
    return f"{first} {last}"


def make_record(rng: random.Random, fakers: list[Faker], index: int) -> dict:
    fake = rng.choice(fakers)
    levels = {name: rng.choice([0, 1, 2]) for name in SCORED}
    clauses = [rng.choice(FACTORS[name][level]) for name, level in levels.items()]
    rng.shuffle(clauses)
    opener = rng.choice(OPENERS).format(
        name=_person_name(fake, rng),
        amount=rng.randrange(2_000, 80_000, 500),
        purpose=rng.choice(PURPOSES),
    )
    contact = rng.choice(CONTACT).format(
        email=fake.email(),
        phone=fake.phone_number(),
        ssn=f"{rng.randint(100, 899):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}",
        card=fake.credit_card_number(),
        address=fake.address().replace("\n", ", "),
        iban=fake.iban(),
        ip=fake.ipv4_public(),
    )
    body = ". ".join(c[0].upper() + c[1:] for c in clauses) + "."
    parts = [opener, body, rng.choice(FILLERS), contact]
    return {
        "application_id": f"APP-{index:06d}",
        "narrative": " ".join(p for p in parts if p),
        "risk_label": label_for(levels),
    }


def seeded_fakers(seed: int) -> list[Faker]:
    """One Faker per locale of `LOCALES`, the i-th seeded with `seed + i`."""
    fakers = []
    for i, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + i)
        fakers.append(fake)
    return fakers


def generate(n: int = 3000, seed: int = 7, defect_rate: float = 0.02) -> list[dict]:
    """`n` valid records plus about `defect_rate * n` defective ones, shuffled, seeded."""
    rng = random.Random(seed)
    fakers = seeded_fakers(seed)
    rows = [make_record(rng, fakers, i) for i in range(n)]
    n_defects = round(n * defect_rate)
    for j in range(n_defects):
        kind = j % 4
        base = dict(rng.choice(rows[:n]))
        base["application_id"] = f"APP-{n + j:06d}"
        if kind == 0:
            base["narrative"] = None
        elif kind == 1:
            base["narrative"] = "   "
        elif kind == 2:
            base["risk_label"] = rng.choice(["approve", "unknown", "LOW"])
        else:
            pass  # an exact duplicate of another narrative
        rows.append(base)
    rng.shuffle(rows)
    return rows
