"""tasks.models: device and dtype choice (CUDA faked on a CPU box), trained folders of every kind
loaded and predicting on the CPU, the one generation core, and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.models import (
    CARD_FILE,
    ModelCard,
    ModelError,
    ModelSettings,
    TextClassifier,
    TextGenerator,
    encode_prompt,
    generate_batched,
    generate_from_ids,
    inference_dtype,
    load_base_model,
    load_encoder,
    load_predictor,
    load_trained,
    prompt_parts,
    resolve_device,
    write_labels,
)

pytestmark = pytest.mark.unit

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]
TEXTS = [
    "the applicant has a stable income and paid every loan on time",
    "several late payments and a high debt",
    "declined",
    "medium risk applicant with some missed payments and a new employer",
]
WORDS = "the a cat dog sat ran on under mat rug loan risk low high income debt paid late".split()


def fake_cuda(monkeypatch, available: bool, bf16: bool = True, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)


# ---------------------------------------------------------------- placement


def test_auto_picks_cuda_when_present_else_cpu(monkeypatch):
    fake_cuda(monkeypatch, available=False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    fake_cuda(monkeypatch, available=True, count=2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"  # asked for explicitly: honoured on a GPU box


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda_names_the_setting(monkeypatch, device):
    fake_cuda(monkeypatch, available=False)
    with pytest.raises(ModelError, match=r"model\.device.*CUDA is not available"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["cuda:2", "cuda:x", "tpu", "CPU"])
def test_unknown_or_missing_devices_are_errors(monkeypatch, device):
    fake_cuda(monkeypatch, available=True, count=2)
    with pytest.raises(ModelError, match=r"model\.device"):
        resolve_device(device)


def test_dtype_bf16_on_new_gpus_fp16_on_old_fp32_on_cpu(monkeypatch):
    fake_cuda(monkeypatch, available=True, bf16=True)
    assert inference_dtype("cuda") is torch.bfloat16
    assert inference_dtype("cuda:1") is torch.bfloat16
    assert inference_dtype("cpu") is torch.float32
    fake_cuda(monkeypatch, available=True, bf16=False)
    assert inference_dtype("cuda") is torch.float16
    assert inference_dtype("cpu") is torch.float32


def test_loading_for_cuda_without_cuda_fails_before_reading_weights(monkeypatch, tmp_path):
    fake_cuda(monkeypatch, available=False)
    ModelCard(base_model="missing-model").write(tmp_path)
    with pytest.raises(ModelError, match=r"model\.device"):
        load_trained(tmp_path, device="cuda")


# ---------------------------------------------------------------- trained classifiers


def _proba(tokenizer, model, texts: list[str]) -> np.ndarray:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits, -1).numpy()


def _save(tokenizer, model, out: Path) -> Path:
    out.mkdir()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_labels(out, LABELS)
    return out


@pytest.fixture(scope="module")
def classifier_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """A full-weights and a LoRA folder, each with the probabilities its model gave in memory."""
    from peft import LoraConfig, TaskType, get_peft_model

    root = tmp_path_factory.mktemp("classifiers")
    settings = ModelSettings(base_model=str(tiny_model_dir), max_length=32)
    out: dict[str, tuple[Path, np.ndarray]] = {}

    torch.manual_seed(1)
    tokenizer, model = load_base_model(settings, LABELS)
    with torch.no_grad():  # a random head gives ~uniform probabilities: sharpen it
        model.classifier.weight.mul_(100)
    model.eval()
    full = _save(tokenizer, model, root / "full")
    ModelCard.for_training(settings, "full").write(full)
    out["full"] = (full, _proba(tokenizer, model, TEXTS))

    torch.manual_seed(2)
    tokenizer, base = load_base_model(settings, LABELS)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"], modules_to_save=None
    )
    peft_model = get_peft_model(base, config)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter something to change
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
            if "modules_to_save" in name and name.endswith("classifier.weight"):
                param.mul_(100)
    peft_model.eval()
    lora = _save(tokenizer, peft_model, root / "lora")
    ModelCard.for_training(settings, "lora").write(lora)
    out["lora"] = (lora, _proba(tokenizer, peft_model, TEXTS))
    return out


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_trained_classifier_loads_on_cpu_and_predicts_as_in_memory(classifier_dirs, kind):
    folder, expected = classifier_dirs[kind]
    classifier = TextClassifier(folder, device="cpu")
    param = next(classifier.model.parameters())
    assert param.device.type == "cpu" and param.dtype is torch.float32
    assert not classifier.model.training
    np.testing.assert_allclose(classifier.predict_proba(TEXTS, batch_size=3), expected, atol=1e-5)
    assert classifier.predict(TEXTS) == [LABELS[i] for i in expected.argmax(-1)]
    assert classifier.predict_proba([]).shape == (0, len(LABELS))


def test_lora_adapter_is_applied_not_ignored(classifier_dirs, tiny_model_dir):
    """The adapter folder rebuilt on its base: not just the base's head with random weights."""
    folder, expected = classifier_dirs["lora"]
    card = ModelCard.read(folder)
    assert card.method == "lora" and card.base_model == str(tiny_model_dir)
    tokenizer, model = load_trained(folder, device="cpu")
    assert "Peft" not in type(model).__name__  # merged for base-model speed
    torch.manual_seed(2)
    _, untouched = load_base_model(ModelSettings(base_model=str(tiny_model_dir)), LABELS)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        adapted = model.bert(**batch).last_hidden_state
        plain = untouched.eval().bert(**batch).last_hidden_state
    assert (adapted - plain).abs().max() > 0.1  # the encoder carries the LoRA update


def test_int8_classifier_quantises_every_linear_layer_and_scores_close_to_float(classifier_dirs):
    """serving.quantize=int8: every linear layer's weights are int8 in the ONNX Runtime graph that
    answers from then on, and the scores stay close to the evaluated model's (a label can flip
    only where two scores are that close)."""
    folder, expected = classifier_dirs["lora"]
    classifier = TextClassifier(folder, device="cpu")
    linear = sum(isinstance(m, torch.nn.Linear) for m in classifier.model.modules())
    assert classifier.quantize_int8() == linear > 0
    proba = classifier.predict_proba(TEXTS, batch_size=3)
    assert proba.shape == expected.shape
    assert np.allclose(proba.sum(-1), 1.0, atol=1e-5)
    # quantised (the scores moved), yet within a hundredth of the float model's
    assert 0 < np.abs(proba - expected).max() < 0.01
    assert classifier.predict(TEXTS[:1]) == [classifier.labels[int(proba[0].argmax())]]


def test_load_predictor_picks_the_task(classifier_dirs, monkeypatch):
    folder, _ = classifier_dirs["full"]
    assert isinstance(load_predictor(folder, device="cpu"), TextClassifier)
    fake_cuda(monkeypatch, available=False)
    assert next(load_predictor(folder).model.parameters()).device.type == "cpu"  # auto


def test_encoder_embeds_on_cpu(tiny_model_dir):
    from tasks.evaluate import embed

    tokenizer, model = load_encoder(str(tiny_model_dir), device="cpu")
    assert next(model.parameters()).dtype is torch.float32 and not model.training
    vectors = embed(str(tiny_model_dir), TEXTS, batch_size=3, device="cpu")
    assert vectors.shape == (len(TEXTS), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="model.base_model"):
        load_encoder("/nonexistent/encoder", device="cpu")


# ---------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tests.helpers.tiny_models import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama")
    return build_tiny_llama(path, [" ".join(WORDS) + " : ."], hidden_size=32)


def _prompt_ids(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]
    return [tokenizer(t)["input_ids"] for t in texts]


def _greedy_one_by_one(model, tokenizer, prompts: list[list[int]], max_new_tokens: int):
    """The reference: no padding, no batching, no sorting."""
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        out.append(tokenizer.decode(generated[0, len(p) :], skip_special_tokens=True).strip())
    return out


def test_generation_core_batches_in_input_order(tiny_llama_dir):
    from tasks.evaluate import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_llama_dir, device="cpu")  # a folder without a card
    prompts = _prompt_ids(tokenizer, 11)
    reference = _greedy_one_by_one(model, tokenizer, prompts, 5)
    seen: list[tuple[int, int]] = []
    batched = generate_batched(
        model,
        tokenizer,
        prompts,
        5,
        batch_size=4,
        options={"eos_token_id": tokenizer.eos_token_id},
        progress=lambda done, total: seen.append((done, total)),
    )
    assert batched == reference
    assert seen == [(4, 11), (8, 11), (11, 11)]
    assert generate_from_ids(model, tokenizer, prompts, 5, batch_size=3) == reference
    assert any(reference)


def test_trained_generator_and_untuned_base_prompt_alike(tiny_llama_dir, tmp_path):
    settings = ModelSettings(
        base_model=str(tiny_llama_dir),
        task="generation",
        prompt_template="{input} :",
        max_new_tokens=4,
        max_length=24,
        device="cpu",
    )
    folder = Path(shutil.copytree(tiny_llama_dir, tmp_path / "trained"))
    ModelCard.for_training(settings, "full").write(folder)
    generator = TextGenerator(folder, device="cpu")
    texts = [" ".join(WORDS[i : i + 5]) for i in range(0, 15, 3)]
    answers = generator.generate(texts, batch_size=2)
    parts = prompt_parts(generator.tokenizer, settings)
    budget = settings.max_length - len(parts[0]) - len(parts[1])
    prompts = [encode_prompt(generator.tokenizer, parts, t, budget)[0] for t in texts]
    assert answers == _greedy_one_by_one(generator.model, generator.tokenizer, prompts, 4)
    assert TextGenerator.untuned(settings).generate(texts) == answers  # same weights, same prompt
    assert isinstance(load_predictor(folder, device="cpu"), TextGenerator)


# ---------------------------------------------------------------- the card


def test_card_round_trips_and_old_cards_still_read(tmp_path):
    settings = ModelSettings(
        base_model="some/model", task="generation", max_length=64, prompt_style="template"
    )
    card = ModelCard.for_training(settings, "qlora")
    card.merged = True
    card.write(tmp_path)
    again = ModelCard.read(tmp_path)
    assert again == card
    assert again.model_settings().model_dump(exclude={"device"}) == settings.model_dump(
        exclude={"device"}
    )
    old = tmp_path / "old"
    old.mkdir()
    (old / CARD_FILE).write_text(
        json.dumps({"base_model": "b", "method": "lora", "max_length": 32, "retired": 1})
    )
    card = ModelCard.read(old)
    assert (card.task, card.method, card.max_length, card.merged) == (
        "classification",
        "lora",
        32,
        False,
    )
    assert card.prompt_template == ModelSettings().prompt_template
    with pytest.raises(ModelError, match="no tunegate.json"):
        ModelCard.read(tmp_path / "nowhere")


def test_card_describes_folders_written_elsewhere(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    card = ModelCard.read_or_describe(plain, task="generation")
    assert (card.base_model, card.method, card.task) == (str(plain), "full", "generation")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "b/m"}))
    assert ModelCard.read_or_describe(adapter, task="generation").base_model == "b/m"
    assert ModelCard.read_or_describe(adapter, task="generation").method == "lora"
    ModelCard(base_model="x", method="full").write(adapter)  # a card wins over guessing
    assert ModelCard.read_or_describe(adapter, task="generation").base_model == "x"
