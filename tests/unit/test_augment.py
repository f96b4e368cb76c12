"""The augmentation strategies, controls and the stage on files."""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path

import pandas as pd
import pytest

from tasks.augment import (
    AugmentError,
    AugmentSettings,
    CharNoiseSettings,
    EntitySwapSettings,
    ParaphraseSettings,
    SynonymSettings,
    WordEditSettings,
    augment_file,
    augment_frame,
    char_noise,
    class_targets,
    embedding_synonyms,
    entity_swap,
    near_duplicate_mask,
    sample_table,
    synonym_swap,
    word_edit,
)

pytestmark = pytest.mark.unit

TEXT = (
    "Notes on <PERSON_1>: $12,500 for solar panels, filed on 2024-03-05. The credit file is "
    "excellent with a long, clean history. Existing debt is heavy relative to income. "
    "They have never missed a scheduled payment. Contact <EMAIL_1> or <PERSON_1>."
)


def _frame(n: int = 60) -> pd.DataFrame:
    rows = []
    for i in range(n):
        label = ["low_risk", "medium_risk", "high_risk", "decline"][i % 4]
        if i % 10 == 0:
            label = "rare"
        rows.append(
            {
                "text": f"Application {i} from <PERSON_1> asks ${1000 + 500 * i:,} for a used car. "
                f"The credit history is fair and the repayment record shows occasional delays "
                f"number {i}.",
                "label": label,
                "_line": i + 1,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_char_noise_changes_text_keeps_placeholders_and_negations(seed):
    rng = random.Random(seed)
    out = char_noise(TEXT, rng, CharNoiseSettings(rate=0.3))
    assert out != TEXT
    assert out.count("<PERSON_1>") == 2 and "<EMAIL_1>" in out and " never " in out


@pytest.mark.parametrize("kind", ["typo", "keyboard", "casing", "punctuation"])
def test_each_char_noise_kind_changes_text(kind):
    out = char_noise(TEXT, random.Random(1), CharNoiseSettings(rate=0.3, kinds=[kind]))
    assert out != TEXT
    assert sorted(out.lower().split()) != sorted(TEXT.lower().split()) or kind == "casing"


@pytest.mark.parametrize("op", ["swap", "delete", "insert"])
def test_each_word_edit_changes_text_and_keeps_content_words(op):
    out = word_edit(TEXT, random.Random(2), WordEditSettings(rate=0.1, operations=[op]))
    assert out != TEXT
    content = {"excellent", "heavy", "never", "missed", "debt", "credit", "<PERSON_1>"}
    words = {w.strip(".,:").lower() if "<" not in w else w.strip(".,:") for w in out.split()}
    assert content <= words


def test_entity_swap_moves_amounts_and_dates_and_fakes_placeholders_consistently():
    rng = random.Random(3)
    kept = entity_swap(TEXT, rng, EntitySwapSettings())
    assert "$12,500" not in kept and "2024-03-05" not in kept
    assert kept.count("<PERSON_1>") == 2 and "<EMAIL_1>" in kept
    faked = entity_swap(TEXT, rng, EntitySwapSettings(swap_placeholders=True))
    assert "<PERSON_1>" not in faked and "<EMAIL_1>" not in faked and "@" in faked
    # the same placeholder becomes the same fake name both times
    name = faked.split("Notes on ")[1].split(":")[0]
    assert faked.endswith(f"or {name}.")
    # plain numbers can carry the label ("90 days past due"): never touched
    assert entity_swap("90 days past due.", rng, EntitySwapSettings()) == "90 days past due."


def _within(seconds: float, fn, *args):  # noqa: ANN001, ANN202
    """fn(*args) in a daemon thread: a hang fails the test instead of stalling the suite."""
    import threading

    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} did not return within {seconds} s"
    return out[0]


@pytest.mark.parametrize("text", ["charged £1 twice", "fee of $1.00", "£0 balance", "€1, €2"])
def test_entity_swap_of_a_one_unit_amount_ends_and_moves_it(text):
    """An amount with no other value within the spread once redrew forever (the retrain hung)."""
    for seed in range(5):
        out = _within(5, entity_swap, text, random.Random(seed), EntitySwapSettings())
        assert out != text


def test_augmenting_rows_of_one_pound_amounts_ends(tmp_path):
    frame = pd.DataFrame(
        {"text": [f"i was charged £1 on day {i}" for i in range(6)], "label": ["fee"] * 6}
    )
    settings = AugmentSettings(ratio=1.0, strategies=["entity_swap"])
    out, _ = _within(20, augment_frame, frame, settings)
    assert (out["source"] == "entity_swap").sum() == 6


def test_synonyms_come_from_the_model_embeddings_and_skip_protected_words(tiny_model_dir):
    settings = SynonymSettings(min_similarity=-1.0, top_k=2, protected_words=["credit"])
    words = {"credit", "history", "heavy", "debt", "income", "not", "the"}
    table = embedding_synonyms(str(tiny_model_dir), words, settings)
    assert table and "credit" not in table and "not" not in table and "the" not in table
    assert all(len(v) <= 2 and w not in v for w, v in table.items())
    out = synonym_swap(TEXT, random.Random(4), table, settings)
    assert out != TEXT and out.count("<PERSON_1>") == 2


def test_synonym_guard_rejects_opposites_and_inflections():
    from tasks.augment.synonyms import _is_contrast, _is_inflection

    assert _is_contrast("weak", "stronger") and _is_contrast("high", "low")
    assert _is_contrast("stable", "unstable") and not _is_contrast("excellent", "great")
    assert _is_inflection("loan", "loans") and not _is_inflection("large", "huge")


def test_every_strategy_keeps_the_label_of_its_source_row(tiny_model_dir):
    frame = _frame()
    for strategy in ("char_noise", "word_edit", "synonym", "entity_swap"):
        settings = AugmentSettings(
            ratio=1.0,
            max_per_example=1,
            strategies=[strategy],
            synonym=SynonymSettings(min_similarity=-1.0),
        )
        out, _ = augment_frame(frame, settings, base_model=str(tiny_model_dir))
        added = out[out.source != "original"]
        assert len(added) >= len(frame) // 2, strategy
        sources = frame.iloc[added["source_row"].astype(int)]
        assert (added["label"].to_numpy() == sources["label"].to_numpy()).all()
        assert (added["text"].to_numpy() != sources["text"].to_numpy()).all()


def test_class_ratios_balance_and_cap():
    labels = pd.Series(["a"] * 40 + ["b"] * 10)
    assert class_targets(labels, AugmentSettings(ratio=0.5)) == {"a": 20, "b": 5}
    assert class_targets(labels, AugmentSettings(ratio=0.5, class_ratios={"b": 2.0})) == {
        "a": 20,
        "b": 20,
    }
    balanced = class_targets(labels, AugmentSettings(ratio=0.0, balance_classes=True))
    assert balanced == {"a": 0, "b": 20}  # capped at max_per_example (2) per source row
    frame = pd.DataFrame(
        {"text": [f"debt is low {i} with $500" for i in range(50)], "label": labels}
    )
    out, _ = augment_frame(
        frame, AugmentSettings(ratio=0.0, balance_classes=True, max_per_example=3)
    )
    added = out[out.source != "original"]
    assert added.label.value_counts().to_dict() == {"b": 30}
    assert added["source_row"].value_counts().max() <= 3


def test_near_duplicates_of_held_out_texts_are_dropped():
    frame = _frame(20)
    settings = AugmentSettings(ratio=1.0, max_per_example=1, strategies=["entity_swap"])
    out, _ = augment_frame(frame, settings)
    held_out = out[out.source != "original"]["text"].head(5).tolist()
    mask = near_duplicate_mask(held_out + ["something else entirely"], held_out, 0.9)
    assert mask.tolist() == [True] * 5 + [False]
    filtered, stats = augment_frame(frame, settings, held_out=held_out)
    assert stats["near_duplicates_removed"] >= 5
    assert not set(held_out) & set(filtered.text)


def test_stage_is_seeded_and_leaves_val_and_test_untouched(tmp_path, tiny_model_dir):
    frame = _frame()
    train, val, test = (
        tmp_path / "train.parquet",
        tmp_path / "val.parquet",
        tmp_path / "test.parquet",
    )
    frame.iloc[:40].to_parquet(train)
    frame.iloc[40:50].to_parquet(val)
    frame.iloc[50:].to_parquet(test)
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (val, test)}
    settings = AugmentSettings(ratio=1.0, synonym=SynonymSettings(min_similarity=-1.0))
    first = augment_file(train, settings, tmp_path / "a.parquet", [val, test], str(tiny_model_dir))
    second = augment_file(train, settings, tmp_path / "b.parquet", [val, test], str(tiny_model_dir))
    other = augment_file(
        train, settings.model_copy(update={"seed": 99}), tmp_path / "c.parquet", [val, test]
    )
    a, b, c = (pd.read_parquet(tmp_path / f"{x}.parquet") for x in "abc")
    assert a.equals(b) and not a.equals(c)
    assert first.per_strategy == second.per_strategy and first.rows_added > 20
    assert set(first.per_strategy) == {"char_noise", "word_edit", "synonym", "entity_swap"}
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (val, test)} == digests
    assert not set(a.text) & (set(frame.iloc[40:].text))
    # provenance survives into the file the trainer reads
    assert set(a.source) == {"original", *first.per_strategy}
    assert (a[a.source == "original"].text.tolist()) == frame.iloc[:40].text.tolist()
    samples = sample_table(a)
    assert {s["strategy"] for s in samples} == set(first.per_strategy)
    assert all(s["original"] != s["augmented"] for s in samples)
    assert other.skipped_strategies == ["synonym"]  # no base model given


def test_paraphrase_without_a_model_is_skipped_and_logged(caplog):
    frame = _frame(20)
    settings = AugmentSettings(ratio=1.0, strategies=["paraphrase", "entity_swap"])
    with caplog.at_level(logging.INFO, logger="tasks.augment"):
        out, stats = augment_frame(frame, settings)
    assert stats["skipped_strategies"] == ["paraphrase"]
    assert "augment.paraphrase.model" in caplog.text
    assert set(out.source) == {"original", "entity_swap"}


def test_paraphrase_with_an_unloadable_model_names_the_setting(tmp_path):
    settings = AugmentSettings(
        strategies=["paraphrase"], paraphrase=ParaphraseSettings(model=str(tmp_path / "nope"))
    )
    with pytest.raises(AugmentError, match="augment.paraphrase.model"):
        augment_frame(_frame(8), settings)


def test_paraphrase_with_a_tiny_causal_lm(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    lm_dir: Path = tmp_path / "tiny-gpt2"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(lm_dir)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256)
    GPT2LMHeadModel(config).save_pretrained(lm_dir)
    frame = pd.DataFrame(
        {
            "text": [f"the credit file is poor and debt is heavy case {i}" for i in range(6)],
            "label": ["decline"] * 6,
        }
    )
    settings = AugmentSettings(
        ratio=1.0,
        max_per_example=1,
        strategies=["paraphrase"],
        paraphrase=ParaphraseSettings(model=str(lm_dir), max_new_tokens=12, prompt="{text}"),
    )
    out, _ = augment_frame(frame, settings)
    added = out[out.source == "paraphrase"]
    assert len(added) >= 1
    assert (added.label == "decline").all()
    assert not set(added.text) & set(frame.text)
