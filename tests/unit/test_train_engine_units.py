"""Plain functions of the training engine: prompt building, loss masking, truncation counts,
overfitting warning, and the clear errors raised before anything trains."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from tasks.models import ModelError, ModelSettings, prompt_parts, resolve_base_model
from tasks.train import (
    LoraSettings,
    TrainingError,
    TrainSettings,
    _failure_message,
    check_runtime,
    compute_rouge,
    generation_examples,
    launch_command,
    load_model,
    overfitting_message,
)
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


def test_prompt_template_needs_one_input_slot():
    with pytest.raises(ValueError, match="exactly once"):
        ModelSettings(prompt_template="no slot here")


def test_rouge_is_one_for_identical_and_zero_for_disjoint_text():
    assert compute_rouge(["bob bought chairs"], ["bob bought chairs"])["rouge_l"] == 1.0
    assert compute_rouge(["alice"], ["bob bought chairs"])["rouge_l"] == 0.0


def test_overfitting_warning_after_a_widening_gap():
    steady = [{"loss": 1.0}, {"eval_loss": 1.1}] * 5
    assert overfitting_message(steady, 3) is None
    widening = []
    for i in range(5):
        widening += [{"loss": 1.0 - 0.1 * i}, {"eval_loss": 1.0 + 0.1 * i}]
    message = overfitting_message(widening, 3)
    assert message and "train.epochs" in message


def test_refuses_what_this_machine_cannot_run(monkeypatch):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="train.precision: fp16 needs a CUDA GPU"):
            check_runtime(TrainSettings(precision="fp16"))
    import tasks.train as train

    real = train.importlib.util.find_spec
    monkeypatch.setattr(
        train.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(TrainingError, match="train.method: qlora needs 4-bit loading"):
        check_runtime(TrainSettings(method="qlora"))


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
    assert launch_command(tmp_path / "s.json", TrainSettings())[1:3] == ["-m", "tasks.train_worker"]
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
