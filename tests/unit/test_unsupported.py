"""Unsupported details: numbers, amounts, dates and names in an answer that its input lacks."""

import pytest

from tasks.evaluate import generation_metrics
from tasks.unsupported import extract_details, highlight, measure_unsupported, unsupported_details

pytestmark = pytest.mark.unit

SOURCE = (
    "<PERSON_1> has two late payments in 2019 and asks for a 15-year fixed mortgage of "
    "$240,000 at 4.5%. Works at Riverside Hospital since March."
)


def _missing(answer: str, source: str = SOURCE) -> list[str]:
    return [d.text for d in unsupported_details(answer, source)[1]]


def test_the_issue_example_flags_the_invented_amount_only():
    # the untuned model's answer from the issue: the year is in the input, the amount is not
    assert _missing("A 2019 late payment of $500,000.") == ["$500,000"]


@pytest.mark.parametrize(
    "answer, missing",
    [
        ("Rate 4.5%, amount $240,000, term 15 years.", []),  # each number kind supported
        ("Amount 240000 at 4.50 percent.", []),  # commas, $ and trailing zeros normalised
        ("A $240k loan.", []),  # k suffix
        ("2 late payments.", []),  # the input's number word supports the digit
        ("Rate 5.5%.", ["5.5%"]),  # a percentage
        ("Filed in 2021.", ["2021"]),  # a year
        ("Due in June.", ["June"]),  # a month name is a date
        ("Filed with Wells Fargo.", ["Wells Fargo"]),  # a name mid-sentence
        ("Works at riverside hospital.", []),  # lower case: not a name
        ("Employer: Riverside Hospital.", []),  # a name the input has, case folded
        ("Co-signer <PERSON_2> and <PERSON_1>.", ["<PERSON_2>"]),  # placeholders exactly
        ("The Smith account is fine.", ["Smith"]),  # sentence start: leading common word dropped
        ("Risk flags: none. Next step: approve.", []),  # sentence-initial headers are no names
        ("1. Rate 4.5%. 2) Paid in 2020.", ["2020"]),  # list numbers are not details
    ],
)
def test_each_kind_and_normalisation(answer, missing):
    assert _missing(answer) == missing


def test_placeholder_digits_are_not_numbers():
    details = extract_details("Ask <PERSON_12> about it.")
    assert [(d.kind, d.normal) for d in details] == [("placeholder", "<PERSON_12>")]


def test_rate_and_answer_share_over_a_set():
    report = measure_unsupported(
        ["A 2019 late payment of $500,000.", "No details here.", "Score 700, rate 4.5%."],
        [SOURCE, SOURCE, SOURCE],
    )
    # details: 2 + 0 + 2; unsupported: $500,000 and 700
    assert report.details == [2, 0, 2] and report.unsupported == [1, 0, 1]
    assert report.rate == pytest.approx(2 / 4)
    assert report.answer_share == pytest.approx(2 / 3)
    assert report.spans == [["$500,000"], [], ["700"]]


def test_no_details_is_zero_and_lengths_must_match():
    assert measure_unsupported(["fine", "ok"], ["a", "b"]).metrics() == {
        "unsupported_rate": 0.0,
        "unsupported_answer_share": 0.0,
    }
    assert measure_unsupported([], []).rate == 0.0
    with pytest.raises(ValueError, match="one per answer"):
        measure_unsupported(["a"], [])


def test_highlight_marks_each_unsupported_span():
    assert highlight("Paid $500,000 in 2019.", ["$500,000"]) == "Paid **$500,000** in 2019."


def test_generation_metrics_report_the_rate_when_given_the_inputs():
    result = generation_metrics(["a 2019 payment of $9"], ["x"], [SOURCE])
    assert result.metrics["unsupported_rate"] == pytest.approx(0.5)
    assert result.unsupported_spans == [["$9"]]
    assert "unsupported_rate" not in generation_metrics(["a"], ["a"]).metrics


def test_report_shows_the_rate_per_system_and_examples_in_bold(tmp_path):
    from tasks.report import write_report

    sources = [SOURCE, SOURCE]
    baseline = generation_metrics(["A 2019 payment of $500,000.", "Fine."], ["r", "r"], sources)
    candidate = generation_metrics(["Two late payments in 2019.", "Fine."], ["r", "r"], sources)
    text = write_report(candidate, baseline, None, tmp_path / "evaluation.md").read_text()
    section = text.split("## Unsupported details")[1]
    assert "| candidate | 0.0000 | 0.0000 |" in section
    assert "| baseline | 0.5000 | 0.5000 | 1.00 |" in section  # 1 of 2 details, 1 of 2 answers
    assert "A 2019 payment of **$500,000**." in section
    assert "Riverside" not in text  # answers only: no input text in the report
