"""PII precision on ordinary text, and recall per entity type, before and after issue 18.

Precision: sentences with no personal data, built from a generator the detector was NOT tuned
on: Faker's company, bank, currency, country, region, city, card-provider, job, language and
colour providers (ten locales) in hand-written customer-message templates (banking intents:
"which cards and currencies do you support?"), plus months and weekdays. Figure: rows altered
(any detection) per 1,000 of these PII-free rows, overall and per kind of filler.
Recall: the team's set (`tests/data/pii_testset.py` plus its second hand-written name list) and
the held-out set of issue 13 (`tests/data/pii_heldout.py`: lower-case surnames, uncommon
street types), per entity type.

BEFORE runs the same measurement in a subprocess on `tasks/` of `--before-ref` (the commit the
issue-18 branch started from), unpacked with `git archive` into a temporary folder.

    python benchmarks/pii_precision.py            # ~2 minutes on 2 cores; writes the .txt
    python benchmarks/pii_precision.py --rows 300 # quick check

These are counts, not timings: the figures do not depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_REF = "9f1fe4b"  # main when issue 18 started
LOCALES = [
    "en_US",
    "en_GB",
    "en_AU",
    "en_CA",
    "en_IE",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
]

# Hand-written templates; {x} is a filler of the template's kind.
TEMPLATES = {
    "company": [
        "My salary from {x} has not arrived yet.",
        "Why did {x} charge me twice?",
        "I want to dispute a payment to {x}.",
        "Is {x} a trusted merchant?",
        "The refund from {x} is still pending after a week.",
        "can I set up a direct debit to {x}",
    ],
    "bank": [
        "How do I transfer money from {x} to this account?",
        "My old account at {x} is closed.",
        "Do you accept cheques drawn on {x}?",
    ],
    "currency": [
        "Which currencies do you support? I need {x}.",
        "Can I hold {x} in my wallet?",
        "What is the exchange rate for {x} today?",
        "Why was I charged in {x}?",
        "I want to exchange {x} before my trip.",
        "{x} is not listed in the app.",
    ],
    "country": [
        "Can I use my card in {x}?",
        "Do you ship cards to {x}?",
        "I am moving to {x} next year, will my account still work?",
        "Is {x} one of the supported countries?",
        "Top up from a bank in {x} failed.",
    ],
    "region": [
        "Is the card accepted in {x}?",
        "I live in {x}, can I open an account?",
        "Transfers within {x} are free?",
    ],
    "city": [
        "I am in {x} for a week and the ATM kept my card.",
        "Can I withdraw cash in {x}?",
        "The payment in {x} was declined.",
        "Is there a branch in {x}?",
    ],
    "card": [
        "Can I pay with {x}?",
        "Do you support {x} cards?",
        "My {x} was declined at the shop.",
        "I want to link my {x} card to the app.",
        "Is {x} accepted for top ups?",
    ],
    "job": [
        "I work as a {x}, which account suits me?",
        "Do I need proof of income as a {x}?",
    ],
    "language": [
        "Is the app available in {x}?",
        "Can support answer in {x}?",
    ],
    "colour": [
        "Can I order the card in {x}?",
        "Is the {x} card design still available?",
    ],
    "calendar": [
        "My rent is due every {x}, can I schedule it?",
        "The transfer I made on {x} is missing.",
        "Why was I charged in {x}?",
        "Statements for {x} are not in the app.",
    ],
}


def _fillers(fake, kind: str, rng: random.Random) -> str | None:
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
        if kind == "card":
            return fake.credit_card_provider()
        if kind == "job":
            job = fake.job()
            return job.title() if rng.random() < 0.5 else job
        if kind == "language":
            return fake.language_name()
        if kind == "colour":
            return fake.color_name()
        if kind == "calendar":
            return rng.choice([fake.month_name(), fake.day_of_week()])
    except (AttributeError, NotImplementedError):  # the locale has no such provider
        return None
    raise ValueError(kind)


def precision_rows(n: int, seed: int = 181) -> list[tuple[str, str]]:
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
        # English templates: the English-speaking locales more often than the others
        fake = fakers[rng.randrange(5)] if rng.random() < 0.6 else rng.choice(fakers)
        value = _fillers(fake, kind, rng)
        if not value:
            continue
        template = rng.choice(TEMPLATES[kind])
        text = template.replace("{x}", value)
        out.append((kind, text[0].upper() + text[1:]))
    return out


def measure(rows: int) -> dict:
    """Figures for the `tasks` package on sys.path (this checkout, or BEFORE's)."""
    from tasks.pii import PIISettings, get_scrubber
    from tests.data import pii_heldout
    from tests.data.pii_testset import HOLDOUT_NAMES, build, name_records, score

    scrubber = get_scrubber(PIISettings())

    def detect(text: str) -> list:
        return [(r.entity_type, r.start, r.end) for r in scrubber.analyze(text)]

    altered: Counter = Counter()
    total: Counter = Counter()
    examples: dict[str, list[str]] = {}
    for kind, text in precision_rows(rows):
        total[kind] += 1
        found = detect(text)
        if found:
            altered[kind] += 1
            examples.setdefault(kind, []).append(
                " | ".join(f"{e}:{text[s:t]}" for e, s, t in found)
            )
    team = score(build() + name_records(HOLDOUT_NAMES), detect)
    heldout = score(pii_heldout.build(), detect)
    return {
        "rows": sum(total.values()),
        "altered": sum(altered.values()),
        "per_1000": 1000 * sum(altered.values()) / max(sum(total.values()), 1),
        "by_kind": {k: [altered[k], total[k]] for k in sorted(total)},
        "examples": {k: v[:4] for k, v in sorted(examples.items())},
        "recall_team": team["recall"],
        "support_team": team["support"],
        "recall_heldout": heldout["recall"],
        "support_heldout": heldout["support"],
    }


def measure_before(ref: str, rows: int) -> dict:
    """`measure` in a subprocess on `tasks/` as of `ref` (this checkout's tests/ and script)."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "tasks"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="pii-before-") as tmp:
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}"}
        out = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--rows", str(rows)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(before: dict, after: dict, ref: str) -> str:
    lines = [
        f"PII precision on {after['rows']} PII-free rows (Faker fillers in hand-written "
        f"templates) and recall per entity type; before = tasks/ at {ref}, after = this checkout",
        "",
        f"{'rows altered per 1,000 PII-free rows':<44}{before['per_1000']:>8.1f}{after['per_1000']:>8.1f}",
        f"{'  by filler kind (altered/rows)':<44}{'before':>8}{'after':>8}",
    ]
    for kind, (n, total) in after["by_kind"].items():
        b = before["by_kind"].get(kind, [0, total])[0]
        lines.append(f"{'    ' + kind + f' ({total})':<44}{b:>8}{n:>8}")
    for name in ("team", "heldout"):
        title = {"team": "recall, team set", "heldout": "recall, held-out set (issue 13)"}[name]
        lines += ["", f"{title:<44}{'before':>8}{'after':>8}{'n':>6}"]
        for entity, n in after[f"support_{name}"].items():
            b = before[f"recall_{name}"].get(entity, 0.0)
            a = after[f"recall_{name}"][entity]
            lines.append(f"{'  ' + entity:<44}{b:>8.3f}{a:>8.3f}{n:>6}")
    lines += ["", "still altered after (first few per kind):"]
    for kind, shown in after["examples"].items():
        lines += [f"  {kind}: {e}" for e in shown]
    lines += ["", f"pii_rows_altered_per_1000: {after['per_1000']:.1f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("PII_PRECISION_ROWS", 3000)))
    parser.add_argument("--before-ref", default=BEFORE_REF)
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".txt"))
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.rows)))
        return
    sys.path.insert(0, str(REPO))
    after = measure(args.rows)
    before = measure_before(args.before_ref, args.rows)
    text = report(before, after, args.before_ref)
    print(text)
    if args.rows >= 3000:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
