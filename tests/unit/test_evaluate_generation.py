"""Generation metrics: ROUGE identical to rouge-score's own, batched left-padded generation on a
tiny random Llama, and the paired bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

from tasks.evaluate import (
    DecodingSettings,
    EvaluateSettings,
    classification_metrics,
    compute_rouge,
    evaluate_generation,
    evaluate_generator,
    generate_texts,
    generation_metrics,
    load_causal_lm,
)
from tasks.intervals import paired_bootstrap
from tasks.report import write_report

pytestmark = pytest.mark.unit

WORDS = "the a cat dog sat ran on under mat rug loan risk low high income debt paid late".split()

FIXED = [
    ("The cats were sitting on the mat.", "The cat sat on the mat."),
    ("Income is high and debts are paid.", "High income; debt paid on time."),
    ("", "Nothing generated here."),
    ("Applicant declined: late payments.", "Applicant declined: late payments."),
    ("first line\nsecond line about loans", "second line about loans\nfirst line"),
    ("Risk LOW", "risk low"),
]


def test_rouge_identical_to_rouge_score_on_a_fixed_set():
    predictions = [p for p, _ in FIXED]
    references = [r for _, r in FIXED]
    ours = compute_rouge(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for i, (p, r) in enumerate(FIXED):
        theirs = scorer.score(r, p)
        for key in ours:
            assert ours[key][i] == theirs[key].fmeasure  # identical, not approximately
    # stemming is on: "cats" matches "cat"; 5 shared unigrams (the x2, cat, on, mat) of 7 / 6
    assert ours["rouge1"][0] == pytest.approx(10 / 13)
    # a hand-computed case: 3 of 6 reference unigrams, all 3 predicted ones right
    assert compute_rouge(["the cat sat"], ["the cat sat on the mat"])["rouge1"][0] == pytest.approx(
        2 / 3
    )


def test_generation_metrics_exact_match_and_length():
    result = generation_metrics([p for p, _ in FIXED], [r for _, r in FIXED])
    # exact match folds case and whitespace only: rows 4 and 6 match
    assert result.per_example["exact_match"] == [0, 0, 0, 1, 0, 1]
    assert result.metrics["exact_match"] == pytest.approx(2 / 6)
    assert result.metrics["mean_output_words"] == pytest.approx(
        np.mean([len(p.split()) for p, _ in FIXED])
    )
    assert set(result.metrics) >= {"rouge1", "rouge2", "rougeL", "rougeLsum"}


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tests.helpers.tiny_models import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama")
    return build_tiny_llama(path, [" ".join(WORDS) + " : ."], hidden_size=32)


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_llama_dir):
    model, tokenizer = load_causal_lm(tiny_llama_dir)
    prompts = _prompts(12)
    greedy = DecodingSettings(max_new_tokens=6, batch_size=5)
    batched = generate_texts(model, tokenizer, prompts, greedy)
    single = generate_texts(model, tokenizer, prompts, greedy.model_copy(update={"batch_size": 1}))
    assert tokenizer.padding_side == "left"
    assert batched == single  # padding changes nothing: masks and positions are right
    assert any(batched)  # the random model does say something (special tokens are dropped)


def test_evaluate_generation_on_a_model_folder(tiny_llama_dir, tmp_path):
    prompts = _prompts(8, seed=1)
    test_path = tmp_path / "test.jsonl"
    pd.DataFrame({"text": prompts, "summary": [p.split()[0] for p in prompts]}).to_json(
        test_path, orient="records", lines=True
    )
    settings = EvaluateSettings(
        latency_samples=3,
        prompt_template="{text} :",
        decoding=DecodingSettings(max_new_tokens=4, batch_size=4),
    )
    seen = []
    result = evaluate_generation(
        tiny_llama_dir, test_path, settings, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (8, 8)
    assert len(result.predictions) == 8 and result.references[0] == prompts[0].split()[0]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match", "mean_output_words"):
        assert key in result.metrics
    assert result.metrics["latency_p95_s"] >= result.metrics["latency_p50_s"] > 0
    # the numbers are the mean of the per-example scores kept for the bootstrap
    assert result.metrics["rouge1"] == pytest.approx(np.mean(result.per_example["rouge1"]))

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="prompt/target or text/summary"):
        evaluate_generation(tiny_llama_dir, bad, settings)


def test_paired_bootstrap_classification():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    truth = list(rng.choice(labels, size=300))
    good = [t if rng.random() < 0.9 else "a" for t in truth]
    poor = [t if rng.random() < 0.5 else "b" for t in truth]
    cand = classification_metrics(truth, good, labels)
    other = classification_metrics(truth, poor, labels)
    iv = paired_bootstrap(cand, other, "f1_macro", 500, 0.95)
    expected = f1_score(truth, good, average="macro") - f1_score(truth, poor, average="macro")
    assert iv.delta == pytest.approx(expected)
    assert 0 < iv.low < iv.delta < iv.high
    same = paired_bootstrap(cand, cand, "f1_macro", 200, 0.95)
    assert same.low == same.high == same.delta == 0
    flipped = paired_bootstrap(other, cand, "accuracy", 500, 0.9)
    assert flipped.high < 0


def test_paired_bootstrap_generation_and_report(tmp_path):
    refs = ["the cat sat on the mat"] * 40
    cand = generation_metrics(["the cat sat on the mat"] * 30 + ["dog"] * 10, refs)
    base = generation_metrics(["the dog"] * 40, refs)
    iv = paired_bootstrap(cand, base, "rouge1", 300, 0.95)
    assert iv.delta == pytest.approx(cand.metrics["rouge1"] - base.metrics["rouge1"])
    assert iv.low > 0
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(cand, generation_metrics(["x"], ["y"]), "rouge1", 10, 0.95)
    report = write_report(cand, base, None, tmp_path / "r.md", intervals={"baseline": iv})
    text = report.read_text()
    assert "| rouge1 |" in text and "baseline" in text and f"{iv.low:+.4f}" in text


def test_zero_shot_generation_baseline_is_cached(tiny_llama_dir, tmp_path):
    """The untuned base model, prompted as training prompts; cached per model settings."""
    from tasks.evaluate import cached_generation_baseline
    from tasks.models import ModelSettings

    test_path = tmp_path / "test.parquet"
    pd.DataFrame({"text": _prompts(4, seed=2), "target": ["cat"] * 4}).to_parquet(test_path)
    settings = EvaluateSettings(latency_samples=1)
    model = ModelSettings(
        base_model=str(tiny_llama_dir),
        task="generation",
        prompt_template="{input} :",
        max_new_tokens=3,
    )
    first, cached = cached_generation_baseline(tmp_path / "cache", model, "v1", test_path, settings)
    assert not cached and len(first.predictions) == 4
    assert all(len(p.split()) <= 3 for p in first.predictions)
    assert first.references == ["cat"] * 4 and "latency_p95_s" in first.metrics
    again, cached = cached_generation_baseline(tmp_path / "cache", model, "v1", test_path, settings)
    assert cached and again.predictions == first.predictions
    other = model.model_copy(update={"max_new_tokens": 2})
    assert not cached_generation_baseline(tmp_path / "cache", other, "v1", test_path, settings)[1]
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"text": ["a"], "summary": ["b"]}).to_parquet(bad)
    with pytest.raises(ValueError, match="expected text, target"):
        evaluate_generator(lambda texts: texts, bad, settings)
