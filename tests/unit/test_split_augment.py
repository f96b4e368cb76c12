import pandas as pd
import pytest

from tasks.augment import (
    AugmentSettings,
    CharNoiseSettings,
    EntitySwapSettings,
    augment_frame,
    char_noise,
    entity_swap,
)
from tasks.split import SplitSettings, dataset_version, split_frame

pytestmark = pytest.mark.unit


def _frame(n=200):
    return pd.DataFrame(
        {
            "text": [f"text number {i} costs $1,500" for i in range(n)],
            "label": ["abcd"[i % 4] for i in range(n)],
        }
    )


def test_split_is_stratified_disjoint_and_seeded():
    frame = _frame()
    s = SplitSettings(method="stratified", val_fraction=0.1, test_fraction=0.2, seed=1)
    train, val, test, _ = split_frame(frame, s)
    assert len(train) + len(val) + len(test) == len(frame)
    assert set(train.text).isdisjoint(test.text) and set(train.text).isdisjoint(val.text)
    assert test.label.value_counts().to_dict() == {"a": 10, "b": 10, "c": 10, "d": 10}
    again = split_frame(frame, s)[2]
    assert again.text.tolist() == test.text.tolist()


def test_hash_split_keeps_every_row_in_its_split_when_rows_are_added():
    frame = _frame(2000)
    s = SplitSettings(val_fraction=0.1, test_fraction=0.15, seed=1)
    train, val, test, _ = split_frame(frame.iloc[:1500], s)
    assert len(train) + len(val) + len(test) == 1500
    assert set(train.text).isdisjoint(test.text) and set(val.text).isdisjoint(test.text)
    assert abs(len(test) - 225) < 45 and abs(len(val) - 150) < 40  # ~15% / ~10%
    assert set(test.label) == set(val.label) == set("abcd")
    train2, val2, test2, _ = split_frame(frame, s)  # 500 new rows (feedback)
    assert set(test.text) <= set(test2.text) and set(val.text) <= set(val2.text)
    assert set(train.text).isdisjoint(set(test2.text) | set(val2.text))
    assert test2.text.tolist() == split_frame(frame, s)[2].text.tolist()
    other = split_frame(frame, s.model_copy(update={"seed": 2}))[2]
    assert set(other.text) != set(test2.text)


def test_hash_split_gives_a_tiny_class_a_held_out_row():
    frame = pd.concat(
        [_frame(200), pd.DataFrame({"text": [f"rare {i}" for i in range(4)], "label": ["z"] * 4})]
    )
    train, val, test, _ = split_frame(frame, SplitSettings(seed=3))
    for part in (train, val, test):
        assert "z" in set(part.label)


def test_explicit_test_frame_wins_and_leaks_are_removed():
    frame = _frame()
    test = frame.iloc[:8].assign(text=lambda f: f.text.str.upper())
    train, val, got_test, leaked = split_frame(frame, SplitSettings(), test)
    assert leaked == 8
    assert got_test.text.tolist() == test.text.tolist()
    assert len(train) + len(val) == len(frame) - 8


def test_dataset_version_changes_with_content_and_settings():
    frame = _frame()
    v = dataset_version([frame], SplitSettings())
    assert v == dataset_version([frame.copy()], SplitSettings())
    assert v != dataset_version([frame.iloc[1:]], SplitSettings())
    assert v != dataset_version([frame], SplitSettings(seed=99))


def test_strategies_change_text_and_keep_placeholders(rng):
    text = (
        "Notes on <PERSON_1>: $12,500 for solar panels. Existing debt is heavy relative to income."
    )
    noisy = char_noise(text, rng, CharNoiseSettings(rate=0.3))
    assert noisy != text and "<PERSON_1>" in noisy
    swapped = entity_swap(text, rng, EntitySwapSettings())
    assert swapped != text and "$12,500" not in swapped and "<PERSON_1>" in swapped


def test_augmentation_keeps_labels_tags_provenance_and_is_seeded():
    frame = _frame(40)
    s = AugmentSettings(ratio=1.0, seed=5, strategies=["char_noise", "entity_swap"])
    out, _ = augment_frame(frame, s)
    added = out[out.source != "original"]
    assert len(added) > 20
    assert set(added.source) <= {"char_noise", "entity_swap"}
    originals = dict(zip(frame.text, frame.label, strict=True))
    # every augmented row keeps exactly the label of the source row it was made from
    sources = added.source_row.astype(int)
    assert added.label.tolist() == frame.label.iloc[sources].tolist()
    assert set(sources) <= set(range(len(frame)))
    # ratio 1.0 doubles every class: as many new rows per class as it had
    assert added.label.value_counts().to_dict() == {"a": 10, "b": 10, "c": 10, "d": 10}
    assert (
        out[out.source == "original"].text.map(originals) == out[out.source == "original"].label
    ).all()
    assert out.equals(augment_frame(frame, s)[0])
    assert len(augment_frame(frame, AugmentSettings(enabled=False))[0]) == len(frame)


def test_leakage_exact_duplicates_removed_and_near_duplicates_reported():
    import pandas as pd

    from tasks.split import near_duplicates, remove_exact_leakage

    base = "the applicant has a stable income and a clean credit file with no missed payments"
    train = pd.DataFrame(
        {"text": [base + " ref 1", "Completely different words here about a car", "X  y"]}
    )
    held = pd.DataFrame({"text": [base + " ref 2", "nothing in common at all today", "x Y"]})
    kept, removed = remove_exact_leakage(train, [held])
    assert removed == 1 and "X  y" not in kept["text"].tolist()
    pairs = near_duplicates(kept, held, threshold=0.7)
    assert pairs == [(0, 0)]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_near_duplicate_search_finds_what_scoring_every_pair_finds(threshold):
    """The band-sharing filter before scoring loses no pair: the index's answer equals the best
    match by signature agreement over every training row that shares a band with the text
    (LSH's candidates; ties: the lowest index)."""
    import numpy as np

    from tasks.split import MinHashIndex, minhash_signatures

    rng = np.random.default_rng(3)
    words = "loan card rate fee late payment income debt home car bank limit".split()

    def sentence() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(6, 14))))

    train = [sentence() for _ in range(400)]
    held = [  # near copies of training rows (a word changed or added) and fresh sentences
        *(t.replace(t.split()[int(rng.integers(0, 3))], "branch", 1) for t in train[:60]),
        *(t + " today" for t in train[60:90]),
        *(sentence() for _ in range(60)),
    ]
    index = MinHashIndex(train)
    train_sig, held_sig = minhash_signatures(train), minhash_signatures(held)
    expected = []
    rows = train_sig.shape[1] // index.bands
    for i, sig in enumerate(held_sig):
        equal = (train_sig == sig).reshape(len(train), index.bands, rows)
        candidate = equal.all(axis=2).any(axis=1)
        agreement = np.where(candidate, equal.mean(axis=(1, 2)), -1.0)
        best = int(np.argmax(agreement))  # the first of the highest: the lowest index
        if agreement[best] >= threshold:
            expected.append((i, best))
    found = index.best_matches(held, threshold)
    assert found == expected
    assert len(found) >= {0.5: 60, 0.8: 20, 0.95: 1}[threshold]  # the near copies are found
