"""Loan applications with specifics and their reviews: the `reviews` demo set (generation).

Each narrative states a loan's facts in shuffled order and varied wording: the product (a
15-year fixed mortgage, a 48-month auto loan...), amount, rate, income, employment, credit
score, late payments with their year, debt-to-income ratio, sometimes a bankruptcy, plus a
planted name and contact detail for the PII stage. Its reference review is in the method's
shape: the risk flags, the rules or clauses they touch, and one next step (policy thresholds stay unnamed), each fact phrased
one of several ways and the flags in varying order. The flags follow from thresholds (a
score under 620, a debt-to-income ratio over 43%, under two years in a job...), so writing the right review
means reading the numbers, not copying a sentence; the review repeats only specifics that
are in the narrative, which is what `tasks.unsupported` checks an answer for.

    from tunegate.demo_data.reviews import generate_reviews
    rows = generate_reviews(n=480, seed=7)  # [{"id", "narrative", "review"}, ...]
"""

from __future__ import annotations

import random

from tunegate.demo_data.loans import _person_name, seeded_fakers

NUMBER_WORDS = ["no", "one", "two", "three", "four"]

# (product, term phrase, amount range, rate range in tenths of a percent)
PRODUCTS = [
    ("mortgage", "{n}-year fixed", (15, 20, 30), (180_000, 620_000, 5_000), (55, 78)),
    ("mortgage", "5/1 adjustable-rate", (30,), (150_000, 540_000, 5_000), (52, 72)),
    ("auto loan", "{n}-month", (36, 48, 60, 72), (12_000, 58_000, 500), (49, 129)),
    ("personal loan", "{n}-month", (24, 36, 48, 60), (3_000, 40_000, 500), (79, 219)),
    ("home equity line", "{n}-year", (10, 15), (20_000, 150_000, 1_000), (69, 99)),
]
JOBS = [
    ("a salaried nurse at a regional hospital", False),
    ("a public school teacher", False),
    ("a warehouse shift lead", False),
    ("a software engineer at a logistics firm", False),
    ("a self-employed electrician", True),
    ("a freelance graphic designer", True),
    ("a restaurant owner", True),
    ("a city bus driver", False),
]
PURPOSES = {
    "mortgage": ["to buy a first home", "to buy a townhouse", "to refinance the current home"],
    "auto loan": ["for a used pickup truck", "for a family car", "for an electric car"],
    "personal loan": ["to consolidate card debt", "for medical bills", "for a kitchen remodel"],
    "home equity line": ["for a roof replacement", "for a home extension", "for tuition fees"],
}

OPENERS = [
    "{name} applied for a {term} {product} of ${amount:,} at {rate}% {purpose}.",
    "{name} requests ${amount:,} as a {term} {product} at {rate}% {purpose}.",
    "Application from {name}: {term} {product}, ${amount:,}, {rate}%, {purpose}.",
]
FACTS = {
    "job": [
        "Works as {job} for {years_text}.",
        "Employment: {job}, {years_text} in the role.",
        "The applicant has been {job} for {years_text}.",
    ],
    "income": [
        "Annual income is ${income:,}.",
        "Reported income: ${income:,} a year.",
        "Earns ${income:,} per year.",
    ],
    "score": [
        "Credit score {score}.",
        "The bureau score is {score}.",
        "Credit report shows a score of {score}.",
    ],
    "late": [
        "{late_word} {late_noun} in {late_year}, none since.",
        "The file shows {late_word_lower} {late_noun} in {late_year}.",
        "Paid late {late_times} in {late_year}.",
    ],
    "dti": [
        "Debt-to-income ratio {dti}%.",
        "Monthly debts come to {dti}% of income.",
        "The DTI is {dti}%.",
    ],
    "bankruptcy": [
        "A Chapter 7 bankruptcy was discharged in {bk_year}.",
        "A past bankruptcy (Chapter 7) was discharged in {bk_year}.",
    ],
}
CONTACT = ["Phone {phone}.", "Email {email}.", "Reach at {email} or {phone}.", "", ""]

# The review: (header variants, then phrasings per flag, rule and next step)
FLAG_HEADERS = ["Risk flags:", "Flags:", "Risks:"]
RULE_HEADERS = ["Rules:", "Rules involved:", "Clauses:"]
NEXT_HEADERS = ["Next step:", "Next:", "Action:"]
FLAGS = {
    "score": ["score {score} below the minimum", "credit score {score} under the floor"],
    "late": [
        "{late_word_lower} {late_noun} in {late_year}",
        "late {late_times} in {late_year}",
    ],
    "dti": ["debt-to-income {dti}% above the cap", "debt-to-income ratio of {dti}% too high"],
    "tenure": ["only {years_text} in the job", "{years_text} of employment, too short"],
    "self_employed": ["self-employed income", "income from self-employment"],
    "bankruptcy": ["bankruptcy discharged in {bk_year}", "past bankruptcy ({bk_year})"],
    "waiting": ["bankruptcy discharged {bk_year}, inside the waiting period"],
}
RULES = {
    "score": ["minimum credit score policy", "score floor rule"],
    "late": ["payment history review", "late-payment explanation rule"],
    "dti": ["ability-to-repay rule", "debt-to-income limit"],
    "tenure": ["employment history rule", "employment stability rule"],
    "self_employed": ["self-employed income verification", "tax return requirement"],
    "bankruptcy": ["bankruptcy seasoning rule", "waiting period after bankruptcy"],
    "waiting": ["bankruptcy seasoning rule", "waiting period after bankruptcy"],
}
NONE_FLAGS = ["none", "no risk flags", "none found"]
NONE_RULES = ["standard underwriting", "standard verification"]
NEXT = {
    "decline": [
        "decline and send an adverse action notice",
        "decline; send the adverse action notice",
    ],
    "approve": [
        "approve the {term} {product} at {rate}%",
        "approve ${amount:,} at {rate}% subject to standard checks",
    ],
    "late": [
        "ask for a letter explaining the {late_year} late payments",
        "request an explanation of the {late_year} late payments",
    ],
    "dti": [
        "request proof of income to recheck the {dti}% ratio",
        "recheck the debts behind the {dti}% ratio",
    ],
    "tenure": [
        "request pay stubs and a letter from the employer",
        "verify employment with the employer",
    ],
    "self_employed": ["request recent tax returns", "ask for the latest tax returns"],
    "bankruptcy": [
        "request the {bk_year} discharge papers",
        "obtain the {bk_year} discharge papers",
    ],
}
ORDER = ["score", "dti", "waiting", "late", "bankruptcy", "tenure", "self_employed"]


def _facts(rng: random.Random) -> dict:
    product, term, terms, (low, high, step), (rate_low, rate_high) = rng.choice(PRODUCTS)
    job, self_employed = rng.choice(JOBS)
    late = rng.choices([0, 1, 2, 3], weights=[4, 3, 2, 1])[0]
    bankruptcy = rng.random() < 0.15
    return {
        "product": product,
        "term": term.format(n=rng.choice(terms)),
        "amount": rng.randrange(low, high, step),
        "rate": f"{rng.randint(rate_low, rate_high) / 10:.1f}",
        "purpose": rng.choice(PURPOSES[product]),
        "job": job,
        "self_employed": self_employed,
        "years": (years := rng.choice([1, 1, 2, 3, 4, 6, 8, 11, 15])),
        "years_text": "1 year" if years == 1 else f"{years} years",
        "income": rng.randrange(32_000, 160_000, 1_000),
        "score": rng.randint(560, 815),
        "late": late,
        "late_word": NUMBER_WORDS[late].capitalize(),
        "late_word_lower": NUMBER_WORDS[late],
        "late_noun": "late payment" if late == 1 else "late payments",
        "late_times": ["never", "once", "twice", "three times"][late],
        "late_year": rng.randint(2017, 2024),
        "dti": rng.randint(14, 56),
        "bk_year": rng.randint(2012, 2023) if bankruptcy else None,
    }


def _flags(f: dict) -> list[str]:
    """The flags the facts raise, in `ORDER` (the review shuffles the shown ones)."""
    raised = {
        "score": f["score"] < 620,
        "dti": f["dti"] > 43,
        "late": f["late"] > 0,
        "tenure": f["years"] < 2,
        "self_employed": f["self_employed"],
        "bankruptcy": f["bk_year"] is not None and f["bk_year"] <= 2021,
        "waiting": f["bk_year"] is not None and f["bk_year"] > 2021,
    }
    return [name for name in ORDER if raised[name]]


def _review(f: dict, rng: random.Random) -> str:
    flags = _flags(f)[:3]  # the three most serious: a review stays short
    decline = f["score"] < 620 or f["dti"] > 50 or "waiting" in flags
    if flags:
        shown = flags[:]
        rng.shuffle(shown)
        flag_text = "; ".join(rng.choice(FLAGS[name]) for name in shown)
        rules = list(dict.fromkeys(rng.choice(RULES[name]) for name in shown))
        rule_text = "; ".join(rules)
    else:
        flag_text, rule_text = rng.choice(NONE_FLAGS), rng.choice(NONE_RULES)
    if decline:
        step = rng.choice(NEXT["decline"])
    elif flags:
        follow = next(name for name in flags if name in NEXT)
        step = rng.choice(NEXT[follow])
    else:
        step = rng.choice(NEXT["approve"])
    parts = [
        f"{rng.choice(FLAG_HEADERS)} {flag_text}.",
        f"{rng.choice(RULE_HEADERS)} {rule_text}.",
        f"{rng.choice(NEXT_HEADERS)} {step}.",
    ]
    return " ".join(parts).format(**f)


def _narrative(f: dict, name: str, contact: str, rng: random.Random) -> str:
    keys = ["job", "income", "score", "dti"] + (["late"] if f["late"] else [])
    keys += ["bankruptcy"] if f["bk_year"] is not None else []
    rng.shuffle(keys)
    sentences = [rng.choice(OPENERS)] + [rng.choice(FACTS[k]) for k in keys]
    text = " ".join(sentences).format(name=name, **f)
    return f"{text} {contact}".strip()


def generate_reviews(n: int = 480, seed: int = 7) -> list[dict[str, str]]:
    """`n` rows of `id`, `narrative` and `review`, seeded (no defective rows: the
    classification set `loans` exercises validation)."""
    rng = random.Random(seed)
    fakers = seeded_fakers(seed)
    rows = []
    for i in range(n):
        fake = rng.choice(fakers)
        facts = _facts(rng)
        contact = rng.choice(CONTACT).format(email=fake.email(), phone=fake.phone_number())
        narrative = _narrative(facts, _person_name(fake, rng), contact, rng)
        rows.append({"id": f"REV-{i:05d}", "narrative": narrative, "review": _review(facts, rng)})
    return rows
