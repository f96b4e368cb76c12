"""`tunegate augment IN OUT [--config FILE]`: the stage alone."""

from __future__ import annotations

import pandas as pd
import pytest

from tunegate.cli import main

pytestmark = pytest.mark.unit


def _rows(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "narrative": [
                f"Case {i + offset}: <PERSON_1> asks $2,{i:03d} for a car. The credit file is poor."
                for i in range(n)
            ],
            "risk_label": ["decline", "low_risk"] * (n // 2),
        }
    )


def test_augment_command_writes_tagged_rows_reproducibly(tmp_path, tiny_model_dir, capsys):
    train, held, out = tmp_path / "train.jsonl", tmp_path / "val.jsonl", tmp_path / "out.jsonl"
    _rows(20).to_json(train, orient="records", lines=True)
    pd.DataFrame({"narrative": [f"Another note {i} about savings." for i in range(4)]}).to_json(
        held, orient="records", lines=True
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        "data: {path: x.jsonl, text_column: narrative, label_column: risk_label}\n"
        f"model: {{base_model: {tiny_model_dir}}}\n"
        "augment: {ratio: 1.0, seed: 3, synonym: {min_similarity: -1.0}}\n"
    )
    args = ["augment", str(train), str(out), "--config", str(config), "--held-out", str(held)]
    assert main(args) == 0
    written = pd.read_json(out, lines=True)
    assert set(written.source) > {"original"}
    assert (written[written.source == "original"].text == _rows(20).narrative).all()
    assert "augmented" in capsys.readouterr().out
    first = written.copy()
    assert main(args) == 0
    assert pd.read_json(out, lines=True).equals(first)


def test_augment_command_refuses_a_bad_key_with_exit_2(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    _rows(4).to_json(train, orient="records", lines=True)
    code = main(["augment", str(train), str(tmp_path / "o.parquet"), "--set", "augment.ratoi=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "config error" in err and "ratoi" in err and "Traceback" not in err
