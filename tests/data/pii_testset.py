"""A deterministic PII test set: records with gold spans for every entity type tunegate scrubs.

Person names come from the hand-written list below (many cultures, hyphenated, accented,
particles), NOT from Faker, whose name lists are the detector's gazetteers: the name recall
measured here is on names the detector has never seen as a list entry. Structured values are
generated in varied formats (card numbers pass Luhn, IBANs come from Faker's checksummed
generator). `build()` returns the same records for the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# (first, last) pairs written by hand; several deliberately unlike English names.
NAMES = [
    ("Xiuying", "Wang"),
    ("Wei", "Zhang"),
    ("Haruto", "Sato"),
    ("Yui", "Takahashi"),
    ("Min-jun", "Kim"),
    ("Ji-woo", "Park"),
    ("Thi Mai", "Tran"),
    ("Van An", "Nguyen"),
    ("Priya", "Raghunathan"),
    ("Arjun", "Venkataraman"),
    ("Omar", "Al-Farouq"),
    ("Fatima Zahra", "El-Amrani"),
    ("Chidinma", "Okonkwo"),
    ("Oluwaseun", "Adeyemi"),
    ("Wanjiru", "Kamau"),
    ("Ayşe", "Yılmaz"),
    ("Grzegorz", "Brzęczyszczykiewicz"),
    ("Dimitrios", "Papadopoulos"),
    ("Svetlana", "Kuznetsova"),
    ("José Luis", "Rodríguez Zapatero"),
    ("João", "Gonçalves"),
    ("Amélie", "Dubois-Laurent"),
    ("Siobhán", "O'Sullivan"),
    ("Angus", "MacLeod"),
    ("Jan-Willem", "van der Berg"),
    ("Jürgen", "Großmann"),
    ("Sigríður", "Jónsdóttir"),
    ("Bjørn", "Ødegaard"),
    ("Keoni", "Kahananui"),
    ("Aroha", "Ngata"),
    ("Dariush", "Farahani"),
    ("Yael", "Ben-David"),
    ("Maricel", "Dimaculangan"),
    ("Somchai", "Wongsakul"),
    ("Nomvula", "Dlamini"),
    ("Tendai", "Mutasa"),
    ("Kwame", "Mensah"),
    ("Aigerim", "Nurlanovna"),
    ("Bolat", "Seitkali"),
    ("Zeynep", "Öztürk"),
    ("Mihai", "Ionescu"),
    ("Ioana", "Popescu-Dragomir"),
    ("Lukáš", "Dvořák"),
    ("Eszter", "Szabó"),
    ("Matti", "Virtanen"),
    ("Saoirse", "Ní Bhriain"),
    ("Rhys", "ap Gruffydd"),
    ("Giulia", "D'Angelo"),
    ("Lorenzo", "della Rovere"),
    ("Inés", "García-Márquez"),
    ("Thandiwe", "Nkosi"),
    ("Rangi", "Parata"),
    ("Ngozi", "Eze"),
    ("Abebe", "Bekele"),
    ("Tigist", "Haile"),
    ("Ravi", "Subramaniam"),
    ("Anjali", "Deshpande"),
    ("Imran", "Qureshi"),
    ("Farah", "Siddiqui"),
    ("Hyun-woo", "Choi"),
    ("Mei-ling", "Huang"),
    ("Kenji", "Watanabe"),
    ("Sakura", "Yamamoto"),
    ("Tupac", "Quispe"),
    ("Itzel", "Xochitl"),
    ("Kalani", "Akana"),
    ("Björk", "Guðmundsdóttir"),
    ("Zoltán", "Kovács"),
    ("Radek", "Nowakowski"),
    ("Olamide", "Balogun"),
    ("Leilani", "Kealoha"),
    ("Sione", "Tupou"),
    ("Ahmad", "bin Ismail"),
    ("Nurul", "Hidayah"),
    ("Baraka", "Otieno"),
    ("Esi", "Asante"),
    ("Hamza", "Benali"),
    ("Yusuf", "Demir"),
    ("Aleksandr", "Volkov"),
    ("Natalia", "Wiśniewska"),
    ("Pierre-Yves", "Lefèvre"),
    ("Maëlle", "Le Goff"),
    ("Cormac", "Ó Briain"),
    ("Hemi", "Walker"),
    ("Pita", "Sharples"),
    ("Ximena", "Huamán"),
]

# A second hand-written list, added after the detector was tuned on NAMES and first scored
# unseen: 209/220 (0.95) in NAME_TEMPLATES; every miss was "Phạm" (Vietnamese letters outside
# the detector's Latin ranges, fixed since by adding Latin Extended Additional).
HOLDOUT_NAMES = [
    ("Nkechi", "Onyekachi"),
    ("Tomasz", "Wróblewski"),
    ("Anh", "Phạm"),
    ("Rashida", "Al-Hakim"),
    ("Søren", "Kierkegaard-Lund"),
    ("Mariam", "Tshabalala"),
    ("Hiroshi", "Nakamura"),
    ("Chloé", "Beaumont-Rey"),
    ("Ekaterina", "Smirnova"),
    ("Juan Carlos", "de la Fuente"),
    ("Ngaio", "Te Rangi"),
    ("Dong-hyun", "Lee"),
    ("Aylin", "Kaya"),
    ("Fionnuala", "Mac Giolla"),
    ("Ramón", "Iñiguez"),
    ("Sunita", "Bhattacharya"),
    ("Kofi", "Boateng"),
    ("Ilse", "Van den Broeck"),
    ("Ahmet", "Çelik"),
    ("Lea", "Kühn"),
]

TITLES = ["Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx.", "Dr"]

# Sentences with no PII, in the style of the records: they must come out unchanged.
ORDINARY = [
    "The credit file is thin but acceptable and the debt ratio is 32 percent.",
    "Income has been stable for five years; no late payments were reported.",
    "Requested $12,500 for home renovation, repayable over 36 months.",
    "The applicant works in logistics and has a steady salary.",
    "Collateral is a used car valued at $8,000.",
    "Documents uploaded online on 2024-05-01 were complete.",
    "The review meeting took place in March and went well.",
    "Monthly expenses are moderate relative to income.",
    "Branch staff noted a strong savings habit.",
    "Existing debt includes a student loan and a small overdraft.",
    "Payment history shows two missed payments in 2021, both repaid.",
    "The Credit Bureau score sits in the top tier.",
    "Self employed since 2015 with rising revenue.",
    "Asked about early repayment fees and the interest rate.",
    "No co-signer and no guarantor were offered.",
    "The loan would consolidate three credit cards.",
    "Rent is paid on time every month according to the landlord letter.",
    "Employment was verified by phone with the employer's HR department.",
    "The business plan projects 15% growth over the next two years.",
    "Tax returns for 2022 and 2023 were provided.",
]


@dataclass
class Record:
    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (entity, start, end)


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in range(10):
        digits = [int(c) for c in body + str(check)]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2)
            for i, d in enumerate(reversed(digits))
        )
        if total % 10 == 0:
            return body + str(check)
    raise AssertionError


def _group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for s in sizes:
        out.append(digits[i : i + s])
        i += s
    return sep.join(out)


def make_value(entity: str, rng: random.Random, fakers: list) -> str:
    d = lambda n: "".join(str(rng.randint(0, 9)) for _ in range(n))  # noqa: E731
    if entity == "EMAIL_ADDRESS":
        user = rng.choice(["j.doe", "maria_lopez", "k.tanaka+loans", "OKAFOR.C", "anna-lena", "x9"])
        dom = rng.choice(["example.com", "mail.co.uk", "uni-bonn.de", "corp.example.org", "web.fr"])
        return f"{user}{rng.randint(1, 99)}@{dom}"
    if entity == "PHONE_NUMBER":
        area = str(rng.randint(201, 989))
        return rng.choice(
            [
                f"({area}) {d(3)}-{d(4)}",
                f"{area}-{d(3)}-{d(4)}",
                f"{area}.{d(3)}.{d(4)}",
                f"+1 {area} {d(3)} {d(4)}",
                f"+44 20 {d(4)} {d(4)}",
                f"+49 30 {d(8)}",
                f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
                f"0049 89 {d(7)}",
                f"+91 9{d(4)} {d(5)}",
                f"+81 3-{d(4)}-{d(4)}",
                f"020 {d(4)} {d(4)}",
                f"{area}-{d(3)}-{d(4)} ext. {d(2)}",
            ]
        )
    if entity == "US_SSN":
        n = f"{rng.randint(100, 899)}{d(2)}{d(4)}"
        return rng.choice(
            [
                f"{n[:3]}-{n[3:5]}-{n[5:]}",
                f"{n[:3]} {n[3:5]} {n[5:]}",
                "078-05-1120",
                "219-09-9999",
                "123-45-6789",
            ]
        )
    if entity == "US_SSN_PLAIN":
        return f"{rng.randint(100, 899)}{d(2)}{d(4)}"
    if entity == "CREDIT_CARD":
        kind = rng.choice(["visa", "mc", "amex", "disc"])
        if kind == "amex":
            n = luhn_complete(rng.choice(["34", "37"]), 15, rng)
            return rng.choice([_group(n, [4, 6, 5], " "), _group(n, [4, 6, 5], "-"), n])
        n = luhn_complete(
            {"visa": "4", "mc": "5" + str(rng.randint(1, 5)), "disc": "6011"}[kind], 16, rng
        )
        return rng.choice([_group(n, [4, 4, 4, 4], " "), _group(n, [4, 4, 4, 4], "-"), n])
    if entity == "IBAN_CODE":
        iban = rng.choice(fakers).iban()
        return rng.choice([iban, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))])
    if entity == "IP_ADDRESS":
        return rng.choice(
            [
                f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8)),
                f"2001:db8::{rng.randint(1, 65535):x}",
                f"fe80::{rng.randint(1, 65535):x}:{rng.randint(1, 65535):x}",
            ]
        )
    if entity == "DATE_OF_BIRTH":
        y, m, day = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
        month = [
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
        ][m - 1]
        return rng.choice(
            [
                f"{y}-{m:02d}-{day:02d}",
                f"{m:02d}/{day:02d}/{y}",
                f"{day:02d}.{m:02d}.{y}",
                f"{day} {month} {y}",
                f"{month} {day}, {y}",
                f"{month[:3]} {day}, {y}",
            ]
        )
    if entity == "STREET_ADDRESS":
        return rng.choice(
            [
                f"{rng.randint(1, 9999)} {rng.choice(['Maple', 'Oak Hill', 'Evergreen', 'Baker', 'Sunset'])} "
                f"{rng.choice(['Street', 'Avenue', 'Road', 'Lane', 'Drive', 'Blvd', 'Terrace', 'Way'])}",
                f"{rng.choice(['Haupt', 'Linden', 'Goethe', 'Kirch'])}straße {rng.randint(1, 120)}",
                f"{rng.randint(1, 200)} Rue de {rng.choice(['Rivoli', 'la Paix', 'Lyon'])}",
                f"Via {rng.choice(['Roma', 'Garibaldi', 'Dante'])} {rng.randint(1, 200)}",
                f"Calle {rng.choice(['Mayor', 'de Alcalá', 'Serrano'])} {rng.randint(1, 200)}",
            ]
        )
    if entity == "ACCOUNT_NUMBER":
        return rng.choice([d(8), d(12), f"{d(4)}-{d(6)}", f"GB-{d(4)}-{d(2)}"])
    if entity == "LOAN_NUMBER":
        return rng.choice([f"LN-{d(8)}", f"LN{d(8)}", f"{d(4)}-{d(4)}", f"L{d(7)}"])
    if entity == "MEDICAL_RECORD_NUMBER":
        return rng.choice([d(8), f"{d(4)}-{d(3)}", f"A{d(6)}", f"MR{d(7)}"])
    raise ValueError(entity)


# Templates put a value in context; {v} is the value. Entity -> list of templates.
TEMPLATES = {
    "EMAIL_ADDRESS": [
        "Contact: {v}.",
        "Email {v} for documents",
        "wrote from {v} yesterday",
        "cc {v}",
    ],
    "PHONE_NUMBER": ["Phone {v}.", "call back on {v} after six", "mobile: {v}", "Tel {v}"],
    "US_SSN": [
        "SSN {v} verified.",
        "social security number {v} on file",
        "ssn: {v}",
        "Provided {v} as SSN.",
    ],
    "US_SSN_PLAIN": ["SSN {v} verified.", "SSN: {v}", "social security number {v}"],
    "CREDIT_CARD": ["Fee paid by card {v}.", "card number {v} on file", "charged {v} today"],
    "IBAN_CODE": ["Payout IBAN {v}.", "transfer to {v} approved", "IBAN: {v}"],
    "IP_ADDRESS": ["Submitted from IP {v}.", "login from {v} flagged", "ip={v}"],
    "DATE_OF_BIRTH": ["DOB: {v}.", "date of birth {v}", "born on {v}", "Born {v}.", "D.O.B. {v}"],
    "STREET_ADDRESS": ["Mailing address: {v}.", "lives at {v} with family", "moved to {v} in May"],
    "ACCOUNT_NUMBER": [
        "account number {v} is in good standing",
        "Acct #: {v}",
        "account no. {v} overdrawn",
    ],
    "LOAN_NUMBER": ["loan number {v} refinanced", "Loan ID: {v}", "loan #{v} closed"],
    "MEDICAL_RECORD_NUMBER": ["MRN: {v}", "medical record number {v} attached", "MRN#{v}"],
}

NAME_TEMPLATES = [
    "{n} applied for a loan.",
    "Notes on {n}: income stable.",
    "Loan officer spoke with {n}.",
    "Payment received from {n} yesterday.",
    "The co-signer is {n}.",
    "{t} {n} reviewed the file.",
    "{last}, {first} called twice.",
    "Signed by {n}.",
    "Applicant {n} asked about fees.",
    "Meeting with {t} {last} went well.",
    "Referred by {n} from the branch.",
]

STRUCTURED = [e for e in TEMPLATES if e != "US_SSN_PLAIN"] + ["US_SSN_PLAIN"]


def _place(parts: list, spans: list, text: str, entity: str, value: str, template: str) -> str:
    before, after = template.split("{v}")
    start = len(text) + len(before)
    spans.append(("US_SSN" if entity == "US_SSN_PLAIN" else entity, start, start + len(value)))
    return text + before + value + after


def build(seed: int = 11, n_records: int = 260) -> list[Record]:
    """`n_records` records, each with 1-3 entities (a name in most), plus PII-free sentences."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = []
    for locale in ["de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_GB", "pl_PL"]:
        fake = Faker(locale)
        fake.seed_instance(seed)
        fakers.append(fake)
    records: list[Record] = []
    for i in range(n_records):
        text, spans = "", []
        if i % 5 != 4:  # four of five records name a person
            first, last = NAMES[(i * 7 + rng.randint(0, 3)) % len(NAMES)]
            template = NAME_TEMPLATES[i % len(NAME_TEMPLATES)]
            title = rng.choice(TITLES)
            pieces = template.replace("{t} ", "").split("{")
            out = pieces[0]
            if "{t}" in template:
                out = template.split("{t}")[0] + title + " "
                rest = template.split("{t} ")[1]
            else:
                rest = template
            if "{t}" not in template:
                out = ""
            for chunk in _split(rest):
                if chunk in ("{n}", "{first}", "{last}"):
                    value = {"{n}": f"{first} {last}", "{first}": first, "{last}": last}[chunk]
                    spans.append(("PERSON", len(out), len(out) + len(value)))
                    out += value
                else:
                    out += chunk
            # "Last, First" is one name: merge its two spans
            if "{last}, {first}" in template:
                (_, s1, _), (_, _, e2) = spans[-2], spans[-1]
                spans[-2:] = [("PERSON", s1, e2)]
            text = out + " "
        kinds = rng.sample(STRUCTURED, k=rng.choice([1, 2, 2, 3]))
        if i < len(STRUCTURED) * 4:  # guarantee coverage of every type early on
            kinds = [STRUCTURED[i % len(STRUCTURED)]] + [
                k for k in kinds if k != STRUCTURED[i % len(STRUCTURED)]
            ][:1]
        for kind in kinds:
            value = make_value(kind, rng, fakers)
            text = _place([], spans, text, kind, value, rng.choice(TEMPLATES[kind])) + " "
        if rng.random() < 0.4:
            text += rng.choice(ORDINARY)
        records.append(Record(text.strip(), spans))
    for sentence in ORDINARY:
        records.append(Record(sentence, []))
    return records


def name_records(names: list[tuple[str, str]]) -> list[Record]:
    """Every name in every name template, with its gold span."""
    out = []
    for first, last in names:
        for template in NAME_TEMPLATES:
            text = (
                template.replace("{t}", "Ms.")
                .replace("{n}", f"{first} {last}")
                .replace("{first}", first)
                .replace("{last}", last)
            )
            if "{last}, {first}" in template:
                name = f"{last}, {first}"
            elif "{t} {last}" in template:
                name = last
            else:
                name = f"{first} {last}"
            start = text.index(name)
            out.append(Record(text, [("PERSON", start, start + len(name))]))
    return out


def _split(template: str) -> list[str]:
    out, buf, i = [], "", 0
    while i < len(template):
        if template[i] == "{":
            j = template.index("}", i)
            out.append(buf)
            out.append(template[i : j + 1])
            buf, i = "", j + 1
        else:
            buf += template[i]
            i += 1
    out.append(buf)
    return [c for c in out if c]


def score(records: list[Record], detect) -> dict:  # noqa: ANN001 - text -> [(entity, start, end)]
    """Recall per gold entity type (the value is fully covered by a detection of any type) and
    precision per detected type (the detection overlaps a gold span); plus untouched sentences."""
    from collections import Counter

    gold, hit, det, true_det = Counter(), Counter(), Counter(), Counter()
    clean_total = clean_ok = 0
    for record in records:
        found = detect(record.text)
        for entity, s, e in record.spans:
            gold[entity] += 1
            if any(fs <= s and fe >= e for _, fs, fe in found):
                hit[entity] += 1
            elif entity == "PERSON" and _tokens_covered(record.text, s, e, found):
                hit[entity] += 1
        for entity, fs, fe in found:
            det[entity] += 1
            if any(fs < e and fe > s for _, s, e in record.spans):
                true_det[entity] += 1
        if not record.spans:
            clean_total += 1
            clean_ok += not found
    return {
        "recall": {k: hit[k] / gold[k] for k in sorted(gold)},
        "support": dict(sorted(gold.items())),
        "precision": {k: true_det[k] / det[k] for k in sorted(det)},
        "detections": dict(sorted(det.items())),
        "ordinary_sentences_untouched": clean_ok / max(clean_total, 1),
    }


def _tokens_covered(text: str, s: int, e: int, found: list) -> bool:
    """A name counts as scrubbed when every token of it lies inside some detection."""
    import re

    for m in re.finditer(r"\S+", text[s:e]):
        ts, te = s + m.start(), s + m.end()
        if not any(fs <= ts and fe >= te for _, fs, fe in found):
            return False
    return True
