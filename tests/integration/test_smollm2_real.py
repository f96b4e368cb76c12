"""The real SmolLM2-135M-Instruct (the embedded `smollm2-135m-instruct`, no random stand-in):
converted from its GGUF file once per machine, it answers as the GGUF model did, a LoRA adapter
trains on it through the training worker, and the trained folder generates text.

Cost (estimated for 2 idle cores from the measured step and load costs): about 35 s for the
one-time conversion (cached in ~/.cache/tunegate, or $TUNEGATE_CACHE, for later sessions), then
about a minute for loading, 4 LoRA steps with 2 evaluations, and generation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from tasks.models import ModelCard, ModelSettings, TextGenerator, resolve_base_model
from tasks.models.embedded import read_record
from tasks.train import LoraSettings, TrainJob, TrainSettings, run_training

pytestmark = pytest.mark.integration

SMOL = "smollm2-135m-instruct"


def loan_summaries(n: int, seed: int) -> list[dict]:
    """Short loan notes and the one-line summary the model is taught to write."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        amount, months = rng.choice([5000, 8000, 12000, 20000]), rng.choice([12, 24, 36, 48])
        missed, purpose = rng.randint(0, 3), rng.choice(["a car", "a kitchen", "a new roof"])
        text = (
            f"Loan note: the applicant asks for {amount} over {months} months to pay for "
            f"{purpose}. They missed {missed} payments last year and work full time."
        )
        rows.append({"text": text, "target": f"LOAN {amount} / {months} months / {missed} missed"})
    return rows


@pytest.fixture(scope="module")
def smol_dir() -> Path:
    """The converted folder (the conversion runs here the first time on a machine)."""
    return Path(resolve_base_model(SMOL))


def test_converted_model_answers_as_the_gguf_model_did(smol_dir):
    """Loaded through the shared loader and prompted by the generation code (chat template,
    left padding, batch of two), the converted model writes the GGUF model's greedy answers."""
    record = read_record(smol_dir)
    assert record["parameters"] == 134_515_008 and len(record["checks"]) == 2
    tokens = record["max_new_tokens"]
    settings = ModelSettings(
        base_model=SMOL, task="generation", max_length=256, max_new_tokens=tokens, device="cpu"
    )
    generator = TextGenerator.untuned(settings)
    assert generator.tokenizer.chat_template and generator.tokenizer.pad_token is not None
    answers = generator.generate([c["prompt"] for c in record["checks"]], batch_size=2)
    assert answers == [c["greedy"].strip() for c in record["checks"]]


def test_lora_trains_on_the_real_model_and_generates(smol_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(loan_summaries(16, seed=1)).to_parquet(data / "train.parquet")
    pd.DataFrame(loan_summaries(4, seed=2)).to_parquet(data / "val.parquet")
    job = TrainJob(
        train_path=data / "train.parquet",
        val_path=data / "val.parquet",
        model=ModelSettings(base_model=SMOL, task="generation", max_length=96, max_new_tokens=16),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        train=TrainSettings(
            epochs=1,
            batch_size=4,
            learning_rate=3e-3,
            warmup_fraction=0.0,
            lr_scheduler="constant",
            generation_eval_samples=2,
            logging_steps=1,
        ),
        out_dir=tmp_path / "out",
    )
    result = run_training(job)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    evals = [h for h in history if "eval_loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    print(
        f"smollm2 LoRA: {result.steps} steps in {result.seconds:.1f} s, train loss "
        f"{losses[0]:.3f} -> {losses[-1]:.3f}, val loss {evals[0]['eval_loss']:.3f} -> "
        f"{evals[-1]['eval_loss']:.3f}"
    )
    assert result.steps == 4
    assert evals[0]["step"] == 0 and evals[-1]["eval_loss"] < 0.8 * evals[0]["eval_loss"]

    # the adapter names its base by the embedded name, which resolves on another machine
    adapter = json.loads((result.model_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == SMOL
    assert ModelCard.read(result.model_dir).base_model == SMOL

    notes = [r["text"] for r in loan_summaries(2, seed=3)]
    outputs = TextGenerator(result.model_dir, device="cpu").generate(notes)
    print("smollm2 answers:", outputs)
    assert len(outputs) == 2 and all(isinstance(o, str) and o.strip() for o in outputs)
