"""Unsupported details: the specifics in a generated answer that appear nowhere in its input.

ROUGE rewards words shared with the reference; it does not see an answer that reads well and
invents "a 2019 late payment of $500,000". This check does: it pulls the specifics out of an
answer (numbers, amounts, percentages, years, month names, capitalised names and the PII
placeholders such as `<PERSON_1>`) and counts those the input does not contain.

- Numbers are compared by value: `$1,200`, `1200` and `1,200.00` are one detail; `4.5%` is
  4.5; `15-year` is 15; `$50k` is 50000. The input's number words count too (`two late
  payments` supports `2`, `twice` supports 2), so an answer may write digits for them.
- Month names are dates; a capitalised word or run of words that does not start a sentence is
  a name (`Wells Fargo`, `Chapter 7`'s `Chapter`); at a sentence start only a run of two or
  more words counts, less a leading common word (`The Smith account` -> `Smith`). Names and
  months are supported when the input contains them, case folded, as whole words.
- Number words in the answer are not details by themselves (`one of the flags`), nor are list
  numbers (`1. The loan...`, `2) ...` at a sentence or line start).

Rate: unsupported details / all details over a set of answers (0 when no answer has any);
answer share: the answers with at least one. Plain functions, no model, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

Kind = Literal["number", "date", "name", "placeholder"]

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
_NUMBER = re.compile(r"(?<![\w.])\$?\d+(?:,\d{3})*(?:\.\d+)?(?:\s?[kK]\b)?%?")
_ENUMERATOR = re.compile(r"[.)](?:\s|$)")
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
).split()
_WORD = r"[A-Z](?:[\w'&.-]*[\w&])?"  # a capitalised word, without trailing punctuation
_NAME = re.compile(_WORD + r"(?:\s+(?:" + _WORD + r"|\d+\b))*")
_COMMON = set(
    "a an the this that these those it its he she they their his her we our you your i "
    "in on at for of to by with from and or but if as no not all any each every some one "
    "risk risks flags flag rules rule clauses clause next step action review summary note "
    "notes applicant application borrower customer loan mortgage however also please".split()
)
_WORDS = {
    "zero": 0,
    "one": 1,
    "once": 1,
    "single": 1,
    "two": 2,
    "twice": 2,
    "three": 3,
    "thrice": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_SENTENCE_END = ".!?:;)\n-*\u2022"


@dataclass(frozen=True)
class Detail:
    """One specific in a text: where it is, what kind, and the form it is compared in."""

    text: str
    start: int
    kind: Kind
    normal: str


def _number_value(raw: str) -> str | None:
    """`$1,200.00` -> '1200', `4.50%` -> '4.5', `50k` -> '50000'."""
    text = raw.replace("$", "").replace(",", "").replace("%", "").strip()
    scale = 1
    if text[-1:] in "kK":
        text, scale = text[:-1].strip(), 1000
    try:
        value = Decimal(text) * scale
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _sentence_start(text: str, index: int) -> bool:
    before = text[:index].rstrip()
    return not before or before[-1] in _SENTENCE_END


def extract_details(text: str) -> list[Detail]:
    """Every specific in `text`, in order of appearance (see the module docstring)."""
    details: list[Detail] = []
    for match in _PLACEHOLDER.finditer(text):
        details.append(Detail(match.group(), match.start(), "placeholder", match.group()))
    # placeholders blanked (same length) so their digits and capitals are not read again
    rest = _PLACEHOLDER.sub(lambda m: " " * len(m.group()), text)
    for match in _NUMBER.finditer(rest):
        if _sentence_start(rest, match.start()) and _ENUMERATOR.match(rest, match.end()):
            continue  # `1. The loan...`: a list item's number, not a specific
        value = _number_value(match.group())
        if value is not None:
            details.append(Detail(match.group().strip(), match.start(), "number", value))
    for match in _NAME.finditer(rest):
        words = match.group().split()
        start = match.start()
        while words and words[-1].isdigit():  # `Chapter 7`: the 7 is a number already
            words.pop()
        if _sentence_start(rest, start):
            if len(words) < 2:
                words = []
            elif words[0].lower() in _COMMON:
                start = rest.index(words[1], start)
                words = words[1:]
        for word in list(words):  # months are dates, common words are not names
            if word.lower().strip(".") in _MONTHS:
                at = rest.index(word, start)
                details.append(Detail(word, at, "date", word.lower().strip(".")))
        kept = [w for w in words if w.lower().strip(".") not in _MONTHS]
        while kept and kept[0].lower() in _COMMON:
            kept.pop(0)
        if kept and not (len(kept) == 1 and kept[0] == "I"):
            name = " ".join(kept)
            details.append(Detail(name, rest.index(kept[0], start), "name", name.lower()))
    return sorted(details, key=lambda d: d.start)


def _support(source: str) -> tuple[set[str], str]:
    """The input's numbers (number words included) and its case-folded text."""
    numbers = {d.normal for d in extract_details(source) if d.kind == "number"}
    for word in re.findall(r"[A-Za-z]+", source):
        if word.lower() in _WORDS:
            numbers.add(str(_WORDS[word.lower()]))
    return numbers, " ".join(source.lower().split())


def _contains(folded: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", folded) is not None


def unsupported_details(answer: str, source: str) -> tuple[list[Detail], list[Detail]]:
    """(every detail of `answer`, those of them `source` does not contain)."""
    details = extract_details(answer)
    numbers, folded = _support(source)
    missing = []
    for detail in details:
        if detail.kind == "number":
            supported = detail.normal in numbers
        elif detail.kind == "placeholder":
            supported = detail.normal in source
        else:
            supported = _contains(folded, detail.normal)
        if not supported:
            missing.append(detail)
    return details, missing


@dataclass
class UnsupportedReport:
    """Unsupported details over a set of answers, with each answer's unsupported spans."""

    rate: float  # unsupported details / all details (0 when there are none)
    answer_share: float  # answers with at least one unsupported detail / answers
    details: list[int]  # per answer: details found
    unsupported: list[int]  # per answer: of them unsupported
    spans: list[list[str]]  # per answer: the unsupported details as written

    def metrics(self) -> dict[str, float]:
        return {"unsupported_rate": self.rate, "unsupported_answer_share": self.answer_share}


def measure_unsupported(answers: list[str], sources: list[str]) -> UnsupportedReport:
    """Unsupported details of each answer against its own input (same order, same length)."""
    if len(answers) != len(sources):
        raise ValueError(f"{len(answers)} answers but {len(sources)} inputs: pass one per answer")
    found, missing, spans = [], [], []
    for answer, source in zip(answers, sources, strict=True):
        details, unsupported = unsupported_details(answer, source)
        found.append(len(details))
        missing.append(len(unsupported))
        spans.append([d.text for d in unsupported])
    total = sum(found)
    return UnsupportedReport(
        rate=sum(missing) / total if total else 0.0,
        answer_share=sum(1 for m in missing if m) / len(answers) if answers else 0.0,
        details=found,
        unsupported=missing,
        spans=spans,
    )


def highlight(answer: str, spans: list[str], mark: str = "**") -> str:
    """`answer` with each unsupported span wrapped in `mark` (the report's bold)."""
    out = answer
    for span in sorted(set(spans), key=len, reverse=True):
        out = re.sub(
            r"(?<![\w*])" + re.escape(span) + r"(?![\w*])", lambda m: mark + m.group() + mark, out
        )
    return out
