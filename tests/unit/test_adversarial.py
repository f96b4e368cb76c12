"""Greedy adversarial search against a tiny real model, and the robustness slice."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from tasks.adversarial import (
    AdversarialSettings,
    HeadPredictor,
    Perturber,
    build_adversarial,
    greedy_attack,
    robust_metrics,
)

pytestmark = pytest.mark.unit

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]


@pytest.fixture(scope="module")
def tiny_predictor(tiny_model_dir, tmp_path_factory):
    """The tiny BERT's tokenizer with weights from a fixed seed, so the search is repeatable."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("seeded-tiny-bert")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    config = BertConfig.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    predictor = HeadPredictor(str(path), LABELS, max_length=64, seed=0)
    # a random head puts every text in one class; centre its logits on the demo texts so the
    # classes split and some texts sit near a decision boundary, as in a half-trained model
    texts = _rows(60)["text"].tolist()
    batch = predictor.tokenizer(
        texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    with torch.no_grad():
        logits = predictor.model(**batch).logits
        predictor.model.classifier.bias -= logits.median(0).values
    return predictor


def _rows(n: int, predictor: HeadPredictor | None = None) -> pd.DataFrame:
    """Demo narratives. A random model is right by chance only, and only right answers can be
    flipped: with `predictor`, its own predictions stand in as the true labels."""
    from tunegate.demo_data.loans import generate

    rows = [r for r in generate(n=n + 10, seed=5, defect_rate=0) if r["narrative"]][:n]
    texts = [r["narrative"] for r in rows]
    labels = [r["risk_label"] for r in rows]
    if predictor is not None:
        labels = [LABELS[i] for i in predictor.predict_proba(texts).argmax(-1)]
    return pd.DataFrame({"text": texts, "label": labels})


def test_perturbations_change_the_text_and_keep_placeholders():
    import random

    perturber = Perturber(AdversarialSettings())
    text = "Notes on <PERSON_1>: $5,000. The credit file is poor. Debt is heavy."
    rng = random.Random(0)
    for _ in range(30):
        new, op = perturber.propose(text, rng)
        assert "<PERSON_1>" in new and op in {"char", "word", "distractor", "negation"}
    assert any(perturber.propose(text, rng)[0] != text for _ in range(5))


def test_greedy_search_flips_a_tiny_model_and_keeps_true_labels(tiny_predictor):
    frame = _rows(40, tiny_predictor)
    settings = AdversarialSettings(candidates_per_step=12, max_steps=4, seed=1)
    attacked = greedy_attack(frame.text.tolist(), frame.label.tolist(), tiny_predictor, settings)
    assert len(attacked) == len(frame)
    assert attacked.label.tolist() == frame.label.tolist()  # true labels, never predictions
    flipped = attacked[attacked.flipped]
    assert len(flipped) >= 1
    assert (flipped.pred_before == flipped.label).all()
    assert (flipped.pred_after != flipped.label).all()
    assert (flipped.text != flipped.original).all()
    # the reported prediction is what the model really says about the perturbed text
    assert tiny_predictor.predict_proba(flipped.text.tolist()).argmax(-1).tolist() == [
        LABELS.index(p) for p in flipped.pred_after
    ]
    again = greedy_attack(frame.text.tolist(), frame.label.tolist(), tiny_predictor, settings)
    assert again.equals(attacked)


def test_build_adversarial_adds_flips_to_training_and_writes_the_robust_slice(
    tmp_path, tiny_predictor
):
    frame = _rows(40, tiny_predictor)
    train = frame.assign(source="original")
    train = pd.concat(
        [train, train.head(3).assign(text=lambda f: f.text + " Also", source="word_edit")]
    )
    train_path, test_path = tmp_path / "train.parquet", tmp_path / "test.parquet"
    train.to_parquet(train_path, index=False)
    frame.iloc[25:].to_parquet(test_path, index=False)
    digest = hashlib.sha256(test_path.read_bytes()).hexdigest()
    result = build_adversarial(
        train_path,
        test_path,
        tiny_predictor,
        "base model with head",
        # the same search as the test above, which flips at least one of these rows
        AdversarialSettings(candidates_per_step=12, max_steps=4, seed=1),
        tmp_path / "adv",
    )
    assert hashlib.sha256(test_path.read_bytes()).hexdigest() == digest
    combined = pd.read_parquet(result.train_path)
    added = combined[combined.source == "adversarial"]
    assert len(added) == result.train_flipped >= 1
    # provenance of the augmented rows survives beside the adversarial ones
    assert {"original", "word_edit", "adversarial"} <= set(combined.source)
    assert len(combined) == len(train) + len(added)
    originals = dict(zip(frame.text, frame.label, strict=True))
    assert set(added.label) <= set(LABELS)
    robust = pd.read_parquet(result.robust_test_path)
    assert len(robust) == 15 and robust.label.tolist() == frame.iloc[25:].label.tolist()
    assert all(originals[o] == lbl for o, lbl in zip(robust.original, robust.label, strict=True))
    metrics = robust_metrics(
        lambda texts: [LABELS[i] for i in tiny_predictor.predict_proba(texts).argmax(-1)],
        result.robust_test_path,
        LABELS,
    )
    # the slice's recorded predictions are the model's own on the perturbed texts, so the
    # robust metrics are exactly the scores of `pred_after`
    assert metrics["robust_examples"] == 15
    assert metrics["robust_accuracy"] == pytest.approx((robust.pred_after == robust.label).mean())
    assert metrics["robust_f1_macro"] == pytest.approx(
        f1_score(robust.label, robust.pred_after, labels=LABELS, average="macro", zero_division=0)
    )


def test_robust_metrics_of_known_predictors(tmp_path):
    path = tmp_path / "robust.parquet"
    pd.DataFrame(
        {"text": ["w", "x", "y", "z"], "label": ["low_risk", "low_risk", "decline", "decline"]}
    ).to_parquet(path)
    truth = dict(zip("wxyz", ["low_risk", "low_risk", "decline", "decline"], strict=True))
    labels = ["low_risk", "decline"]
    perfect = robust_metrics(lambda texts: [truth[t] for t in texts], path, labels)
    assert perfect == {"robust_f1_macro": 1.0, "robust_accuracy": 1.0, "robust_examples": 4.0}
    constant = robust_metrics(lambda texts: ["low_risk"] * len(texts), path, labels)
    # low_risk: precision 1/2, recall 1 -> F1 2/3; decline: never predicted -> F1 0
    assert constant["robust_accuracy"] == 0.5
    assert constant["robust_f1_macro"] == pytest.approx(1 / 3)
