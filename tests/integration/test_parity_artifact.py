"""Parity on a real served artifact: the pyfunc, saved and loaded as MLflow serves it, agrees with
the evaluated model for the true folder and not when its adapter is swapped for another's."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tasks.evaluate import EvaluateSettings, evaluate_candidate
from tasks.models import ModelSettings
from tasks.parity import check_parity
from tasks.train import LoraSettings, TrainJob, TrainSettings, load_model
from tasks.train.model import save_model
from tests.helpers.tiny_models import build_tiny_llama
from tunegate.demo_data.loans import generate

pytestmark = pytest.mark.integration

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]


def _adapter(base, root, name: str, seed: int):
    """A LoRA classifier folder with random adapter and head weights (no training needed to
    tell two adapters apart)."""
    import torch

    job = TrainJob(
        train_path=root / "test.parquet",
        val_path=root / "test.parquet",
        labels=LABELS,
        model=ModelSettings(base_model=str(base), max_length=48),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        train=TrainSettings(),
        out_dir=root / name,
    )
    torch.manual_seed(seed)
    tokenizer, model = load_model(job.model, job.lora, job.train, job.labels)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_(0, 0.5)
    return save_model(model, tokenizer, job)


def test_parity_passes_for_the_true_artifact_and_fails_for_a_swapped_adapter(tmp_path, monkeypatch):
    rows = [
        {"text": r["narrative"], "label": r["risk_label"]}
        for r in generate(n=80, seed=3)
        if r["narrative"] and r["risk_label"] in LABELS
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "test.parquet")
    base = build_tiny_llama(tmp_path / "llama", [r["text"] for r in rows], hidden_size=32)
    true_dir = _adapter(base, tmp_path, "a", seed=1)
    other_dir = _adapter(base, tmp_path, "b", seed=2)
    evaluated = evaluate_candidate(
        true_dir, tmp_path / "test.parquet", EvaluateSettings(latency_samples=1), "cpu"
    )
    assert len(set(evaluated.predictions)) > 1  # a head that tells examples apart

    parity = check_parity(true_dir, tmp_path / "test.parquet", evaluated, 0.995, tmp_path / "p")
    print("true artifact:", parity.detail)
    assert parity.passed and parity.agreement == 1.0 and parity.examples == len(rows)
    print("int8 serving path:", parity.int8_agreeing, "of", parity.examples)
    assert parity.int8_agreeing is not None and parity.int8_agreement > 0.9

    def broken(model_dir, texts):  # noqa: ANN001, ANN202 - an int8 path that cannot run
        raise RuntimeError("no int8 kernel here")

    monkeypatch.setattr("tasks.parity.int8_answers", broken)
    parity = check_parity(true_dir, tmp_path / "test.parquet", evaluated, 0.995, tmp_path / "p")
    assert parity.passed and parity.int8_agreeing is None  # not measured; auto serves none
    monkeypatch.undo()

    swapped = tmp_path / "swapped"
    shutil.copytree(true_dir, swapped)
    shutil.copy(other_dir / "adapter_model.safetensors", swapped / "adapter_model.safetensors")
    parity = check_parity(swapped, tmp_path / "test.parquet", evaluated, 0.995, tmp_path / "p")
    print("swapped adapter:", parity.detail)
    assert not parity.passed
    assert f"of {len(rows)} served labels agree" in parity.detail
    assert parity.agreement < 0.9
    assert not (tmp_path / "p" / "served-model").exists()  # the weights' copy is not kept
