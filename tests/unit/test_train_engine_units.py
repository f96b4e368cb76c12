"""Plain functions of the training engine: prompt building, loss masking, truncation counts,
overfitting warning, and the clear errors raised before anything trains."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from tasks.models import ModelCard, ModelError, ModelSettings, prompt_parts, resolve_base_model
from tasks.train import (
    LoraSettings,
    TrainingError,
    TrainSettings,
    check_runtime,
    launch_command,
    load_model,
    overfitting_message,
)
from tasks.train.data import generation_examples
from tasks.train.launch import _failure_message
from tasks.train.metrics import mean_rouge
from tests.helpers.tiny_models import build_tiny_llama
from tunegate.demo_data.notes import summarization_rows

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    rows = summarization_rows(50, seed=0)
    return build_tiny_llama(tmp_path_factory.mktemp("llama"), [r["text"] for r in rows])


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_loss_is_masked_on_the_prompt_and_targets_are_never_cut(tiny_llama):
    tok = _tokenizer(tiny_llama)
    parts = prompt_parts(tok, ModelSettings(task="generation"))
    frame = pd.DataFrame(
        {
            "text": ["the customer bob bought two red chairs", "bob " * 40, "bob"],
            "target": ["bob bought chairs", "bob", "bob " * 40],
        }
    )
    rows, report = generation_examples(frame, tok, parts, max_length=24)
    assert report.examples == 3
    assert report.prompt_truncated == 1  # the long input was cut to fit
    assert report.dropped_target_too_long == 1  # the long target was dropped, not cut
    assert len(rows) == 2
    first = rows[0]
    target = tok("bob bought chairs", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labelled = [t for t in first["labels"] if t != -100]
    assert labelled == target
    assert first["input_ids"][-len(target) :] == target
    assert first["labels"][: len(first["labels"]) - len(target)] == [-100] * (
        len(first["labels"]) - len(target)
    )
    assert all(len(r["input_ids"]) <= 24 for r in rows)


def test_chat_template_is_used_when_the_tokenizer_has_one(tmp_path):
    template = "{% for m in messages %}user : {{ m['content'] }} assistant :{% endfor %}"
    path = build_tiny_llama(tmp_path / "chat", ["hello there"], chat_template=template)
    tok = _tokenizer(path)
    head, tail = prompt_parts(tok, ModelSettings(task="generation"))
    assert tok.decode(head).strip() == "user :"
    assert tok.decode(tail).strip() == "assistant :"
    with pytest.raises(ModelError, match="no chat template"):
        prompt_parts(
            _tokenizer(build_tiny_llama(tmp_path / "plain", ["hi"])),
            ModelSettings(task="generation", prompt_style="chat"),
        )


def test_system_prompt_goes_into_the_chat_prompt_and_the_card(tmp_path):
    template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
    path = build_tiny_llama(tmp_path / "sys", ["review it system user"], chat_template=template)
    settings = ModelSettings(task="generation", system_prompt="review it")
    head, _ = prompt_parts(_tokenizer(path), settings)
    assert _tokenizer(path).decode(head).split() == ["system", ":", "review", "it", "user", ":"]
    # the trained folder's card keeps it, so serving prompts as training did
    card = ModelCard.for_training(settings, "lora")
    assert card.model_settings().system_prompt == "review it"


def test_prompt_template_needs_one_input_slot():
    with pytest.raises(ValueError, match="exactly once"):
        ModelSettings(prompt_template="no slot here")


def test_rouge_is_one_for_identical_and_zero_for_disjoint_text():
    assert mean_rouge(["bob bought chairs"], ["bob bought chairs"])["rouge_l"] == 1.0
    assert mean_rouge(["alice"], ["bob bought chairs"])["rouge_l"] == 0.0


def test_overfitting_warning_after_a_widening_gap():
    steady = [{"loss": 1.0}, {"eval_loss": 1.1}] * 5
    assert overfitting_message(steady, 3) is None
    widening = []
    for i in range(5):
        widening += [{"loss": 1.0 - 0.1 * i}, {"eval_loss": 1.0 + 0.1 * i}]
    message = overfitting_message(widening, 3)
    assert message and "train.epochs" in message


def test_refuses_what_this_machine_cannot_run(monkeypatch):
    import importlib.util

    import torch

    # both sides of the CUDA checks, whatever this machine has
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="train.precision: fp16 needs a CUDA GPU"):
        check_runtime(TrainSettings(precision="fp16"))
    check_runtime(TrainSettings(precision="bf16"))  # bf16 runs on a CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    check_runtime(TrainSettings(precision="fp16"))
    with pytest.raises(TrainingError, match="train.precision: this GPU does not support bf16"):
        check_runtime(TrainSettings(precision="bf16"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_runtime(TrainSettings(precision="bf16"))

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(TrainingError, match="train.method: qlora needs 4-bit loading"):
        check_runtime(TrainSettings(method="qlora"))


def test_auto_precision_is_bf16_on_a_gpu_that_has_it_fp16_on_older_fp32_on_cpu(monkeypatch):
    import torch

    from tasks.train import precision_flags

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision_flags(TrainSettings()) == {"bf16": False, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision_flags(TrainSettings()) == {"bf16": False, "fp16": True}  # + loss scaler
    assert precision_flags(TrainSettings(precision="fp16")) == {"bf16": False, "fp16": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision_flags(TrainSettings()) == {"bf16": True, "fp16": False}


def test_unknown_models_and_unsupported_tasks_fail_with_the_key(tmp_path, tiny_llama):
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        resolve_base_model(str(tmp_path / "noweights"))
    with pytest.raises(ModelError, match="could not be loaded offline"):
        load_model(
            ModelSettings(base_model=str(tmp_path / "missing")), LoraSettings(), TrainSettings()
        )
    from transformers import ViTConfig, ViTModel

    vit = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, image_size=32, patch_size=16)).save_pretrained(vit)  # fmt: skip
    with pytest.raises(ModelError, match="model.task: 'vit' models do not support generation"):
        load_model(
            ModelSettings(base_model=str(vit), task="generation"), LoraSettings(), TrainSettings()
        )


def test_qlora_loads_the_base_in_4bit_nf4(tiny_llama):
    import bitsandbytes as bnb

    _, model = load_model(
        ModelSettings(base_model=str(tiny_llama), task="generation"),
        LoraSettings(r=4),
        TrainSettings(method="qlora"),
    )
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and quantized[0].weight.quant_type == "nf4"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_failures_name_the_settings_to_change(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("boom\n")
    (tmp_path / "error.json").write_text(json.dumps({"kind": "oom", "message": "x"}))
    assert "train.batch_size" in _failure_message(tmp_path, 3, log)
    (tmp_path / "error.json").unlink()
    killed = _failure_message(tmp_path, -signal.SIGKILL, log)
    assert "out-of-memory killer" in killed and "model.max_length" in killed
    assert "exit 1" in _failure_message(tmp_path, 1, log)


def test_launch_uses_torchrun_or_accelerate_for_several_processes(tmp_path):
    assert launch_command(tmp_path / "s.json", TrainSettings())[1:3] == ["-m", "tasks.train.worker"]
    torchrun = launch_command(tmp_path / "s.json", TrainSettings(num_processes=2))
    assert "torch.distributed.run" in torchrun and "2" in torchrun
    config = tmp_path / "ddp.yaml"
    config.write_text("distributed_type: MULTI_GPU\n")
    accel = launch_command(
        tmp_path / "s.json", TrainSettings(num_processes=4, accelerate_config=config)
    )
    assert "accelerate.commands.launch" in accel and str(config) in accel


@pytest.mark.parametrize(
    "name, kind",
    [("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP"), ("deepspeed-zero3.yaml", "DEEPSPEED")],
)
def test_shipped_accelerate_configs_parse(name, kind):
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / name
    assert ClusterConfig.from_yaml_file(str(path)).distributed_type.value == kind


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed"])
def test_distributed_strategy_launches_accelerate_with_the_shipped_config(strategy, tmp_path):
    from tasks.train import TrainSettings, launch_command

    command = launch_command(
        tmp_path / "spec.json", TrainSettings(distributed=strategy, num_processes=4)
    )
    config = Path(command[command.index("--config_file") + 1])
    assert "accelerate.commands.launch" in command
    assert config.is_file() and config.parent.name == "accelerate"
    assert command[command.index("--num_processes") + 1] == "4"


def test_the_spec_the_worker_reads_is_the_job(tmp_path):
    from tasks.train import TrainJob, write_spec

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result.json").write_text("{}")  # a stale result of an earlier attempt
    job = TrainJob(
        train_path=Path("train.parquet"),
        val_path=Path("val.parquet"),
        labels=["a", "b"],
        model=ModelSettings(max_length=64),
        lora=LoraSettings(r=4),
        train=TrainSettings(epochs=2, work_pool="gpu"),
        out_dir=tmp_path / "out",
    )
    spec = write_spec(job)
    assert not (tmp_path / "out" / "result.json").exists()
    read = TrainJob.model_validate_json(spec.read_text())
    assert read.train_path == Path("train.parquet").resolve() and read.train_path.is_absolute()
    assert read.model_copy(update={"train_path": job.train_path, "val_path": job.val_path}) == job
    assert set(json.loads(spec.read_text())) == {
        "train_path", "val_path", "labels", "model", "lora", "train", "out_dir", "trial"
    }  # fmt: skip


def test_remote_training_hands_back_the_whole_result(tmp_path):
    from flows.train_remote import local_result, remote_result
    from tasks.train import TrainResult, TruncationReport

    trained = TrainResult(
        model_dir=Path("/pool/tmp/out/model"),
        task="generation",
        metric="rouge_l",
        best_metric=0.61,
        best_val_f1=0.0,
        final_eval_loss=1.25,
        final_train_loss=0.5,
        epochs_run=3.0,
        steps=42,
        seconds=12.5,
        examples_per_second=99.0,
        resumed_from_step=12,
        truncation={"train": TruncationReport(examples=10, prompt_truncated=2)},
        overfitting_warning="possible overfitting: ...",
        peak_rss_mb=512.0,
        num_processes=2,
        runtime={"device": "NVIDIA H200", "precision": "bf16", "packing": "true"},
    )
    assert set(trained.model_fields_set) == set(TrainResult.model_fields)  # every field set
    remote = remote_result(trained, "s3://bucket/runs/r1/train")
    assert remote.model_url == "s3://bucket/runs/r1/train/model"
    back = local_result(remote.model_dump_json(), tmp_path / "train")
    assert back.model_dir == tmp_path / "train" / "model"
    assert back.model_copy(update={"model_dir": trained.model_dir}) == trained
    assert type(back) is TrainResult


def _variable_length_examples(tok, count: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = summarization_rows(count, seed=seed)
    frame = pd.DataFrame(
        {
            "text": [" ".join(r["text"].split()[: rng.randint(2, 24)]) for r in rows],
            "target": [r["target"] for r in rows],
        }
    )
    parts = prompt_parts(tok, ModelSettings(task="generation"))
    return generation_examples(frame, tok, parts, max_length=64)[0]


def test_packing_gives_the_loss_and_updates_of_padding_without_pad_tokens(tiny_llama):
    """Same examples, same batches: packed and padded losses agree step after step (float32),
    and a packed batch holds exactly the examples' tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.train.data import generation_collator

    tok = _tokenizer(tiny_llama)
    examples = _variable_length_examples(tok, 24)
    assert len({len(e["input_ids"]) for e in examples}) > 5  # variable length
    padded, packed = generation_collator(tok, packed=False), generation_collator(tok, packed=True)
    models, optimizers = [], []
    for _ in range(2):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
        model.config.use_cache = True  # the default of causal LMs: packing must not rely on it
        models.append(model)
        optimizers.append(torch.optim.AdamW(model.parameters(), lr=1e-2))
    for start in range(0, len(examples), 6):
        batch = examples[start : start + 6]
        flat = packed(batch)
        assert flat["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in batch))
        losses = []
        for model, optimizer, collate in zip(models, optimizers, (padded, packed), strict=True):
            loss = model(**collate(batch)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        assert abs(losses[1] - losses[0]) / losses[0] < 1e-3, losses


def test_packing_is_on_for_generation_where_supported_and_refused_elsewhere(tiny_llama):
    from tasks.train.model import packing_supported, use_packing

    _, model = load_model(
        ModelSettings(base_model=str(tiny_llama), task="generation"),
        LoraSettings(r=2),
        TrainSettings(),
    )
    assert packing_supported(model)  # through the peft wrapper
    assert use_packing(TrainSettings(), "generation", model) is True
    assert use_packing(TrainSettings(packing=False), "generation", model) is False
    assert use_packing(TrainSettings(), "classification", model) is False
    with pytest.raises(TrainingError, match="train.packing: classification"):
        use_packing(TrainSettings(packing=True), "classification", model)
