"""A held-out PII set, written by a different scheme than `pii_testset.py` and BEFORE the
detector changes of issue 13 were made: it is scored, never tuned on.

Two gaps the review found: surnames in lower case (after a courtesy title, a cue word, or a
capitalised first name), and street addresses whose street type is not one of the few common
ones (Street, Avenue, Road...). Names are a third hand-written list (none of them in
`NAMES`/`HOLDOUT_NAMES`); street types come from UK, Irish, Australian, Canadian and US usage
lists written by hand, not from Faker (the detector's source of street types).
"""

from __future__ import annotations

import random

from tests.data.pii_testset import Record

NAMES = [
    ("Oyelaran", "Babatunde"),
    ("Thuy", "Lowenthal"),
    ("Eamon", "Fitzgibbon"),
    ("Marisol", "Quintanilla"),
    ("Tavita", "Leiataua"),
    ("Keziah", "Ashworth"),
    ("Bongani", "Mthembu"),
    ("Radomir", "Vukovic"),
    ("Ingeborg", "Halvorsen"),
    ("Yerlan", "Abenov"),
    ("Parisa", "Moradi"),
    ("Declan", "Ó Ceallaigh"),
    ("Ottilie", "Brandstätter"),
    ("Hamid", "Karzai-Nouri"),
    ("Lucía", "Etxeberria"),
    ("Kaito", "Fujimori"),
    ("Sunniva", "Fjeldstad"),
    ("Adaeze", "Nwachukwu"),
    ("Teodor", "Petrescu"),
    ("Manaia", "Tuilagi"),
    ("Florin", "Dumitrache"),
    ("Wiremu", "Tawhiri"),
    ("Gwendolyn", "Pritchard"),
    ("Nasrin", "Haddadi"),
    ("Ignatius", "Mwangi"),
]

COURTESY = ["ms.", "mr.", "dr.", "mrs.", "mr", "ms", "prof."]

# {t} courtesy title, {first} / {last} lower-cased; {F} the first name capitalised.
LOWER_NAME_TEMPLATES = [
    ("spoke to {t} {last} about the overdraft", "{last}"),
    ("{t} {last} wants to close the savings account", "{last}"),
    ("please ask {t} {last} to call the branch back", "{last}"),
    ("the form was signed by {t} {last} yesterday", "{last}"),
    ("notes on {t} {first} {last}: income verified", "{first} {last}"),
    ("hi, this is {t} {last}, my card was declined", "{last}"),
    ("applicant {first} {last} asked about fees", "{first} {last}"),
    ("customer {last} reports a missing refund", "{last}"),
    ("met with {first} {last} to review the loan", "{first} {last}"),
    ("{F} {last} phoned twice about the transfer", "{F} {last}"),
    ("my husband {F} {last} has a joint account", "{F} {last}"),
    ("dear {t} {last}, your statement is ready", "{last}"),
]

STREET_NAMES = [
    "Kingfisher",
    "Wattle",
    "Rowan Tree",
    "Harbour",
    "Foxglove",
    "Bramble",
    "St Brigid's",
    "Copper Beech",
    "Heron",
    "Larkspur",
    "Old Mill",
    "Ferndale",
]
STREET_TYPES = [
    "Mews",
    "Row",
    "Grove",
    "Gardens",
    "Rise",
    "Walk",
    "Parade",
    "Esplanade",
    "Quay",
    "Wharf",
    "Hill",
    "Green",
    "Heights",
    "View",
    "Chase",
    "Gate",
    "Vale",
    "Wynd",
    "Loop",
    "Bend",
    "Pike",
    "Crossing",
    "Commons",
    "Landing",
    "Promenade",
    "Concourse",
    "Meadows",
    "Court",
    "Park",
    "Glen",
]
STREET_TEMPLATES = [
    "I moved to {a} last month, please update it",
    "send the replacement card to {a}, thanks",
    "my new address is {a} since March",
    "Statements still go to {a} instead of the new flat.",
    "We live at {a} and the letter never came",
    "Delivery address: {a}",
]


def build(seed: int = 23) -> list[Record]:
    """Every lower-case name template with each name, and 180 street addresses."""
    rng = random.Random(seed)
    records: list[Record] = []
    for first, last in NAMES:
        for template, gold in LOWER_NAME_TEMPLATES:
            values = {
                "{t}": rng.choice(COURTESY),
                "{first}": first.lower(),
                "{last}": last.lower(),
                "{F}": first,
            }
            text, name = template, gold
            for key, value in values.items():
                text, name = text.replace(key, value), name.replace(key, value)
            start = text.index(name)
            records.append(Record(text, [("PERSON", start, start + len(name))]))
    for i in range(180):
        street = f"{rng.randint(1, 480)} {rng.choice(STREET_NAMES)} {STREET_TYPES[i % len(STREET_TYPES)]}"
        if i % 6 == 5:
            street = street.lower()
        text = STREET_TEMPLATES[i % len(STREET_TEMPLATES)].replace("{a}", street)
        start = text.index(street)
        records.append(Record(text, [("STREET_ADDRESS", start, start + len(street))]))
    return records
