"""GPU check: a ~1.1B-parameter Llama (TinyLlama-1.1B shape, random weights built from a config,
nothing downloaded) trained for a few hundred steps with LoRA and with QLoRA through tunegate's
own model loading (`tasks.train.load_model`: the same 4-bit NF4 BitsAndBytesConfig and
prepare_model_for_kbit_training the stage uses). Prints tokens/s, model FLOP utilisation and peak
GPU memory per method. Refuses to run without CUDA.

MFU counts 6 x parameters (forward + backward, the usual convention, although LoRA skips the
frozen weights' gradients) + 12 x layers x hidden x sequence for attention, per token, against the
GPU's dense bf16 peak (a table below, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
                    "L4": 121.0, "RTX 4090": 165.0}  # fmt: skip


def build_model(path: Path) -> int:
    """Random-weight Llama at TinyLlama-1.1B's shape, saved in bf16 with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
        num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
        torch_dtype="bfloat16", pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    vocab = {f"w{i}": i for i in range(32000)}
    vocab.update({"<pad>": 0, "<s>": 1, "</s>": 2})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(path)
    return params


def run(method: str, path: Path, params: int, steps: int, batch: int, seq: int, peak: float):
    import torch

    from tasks.models import ModelSettings
    from tasks.train import LoraSettings, TrainSettings, load_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    _, model = load_model(
        ModelSettings(base_model=str(path), task="generation", max_length=seq),
        LoraSettings(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        TrainSettings(method=method, precision="bf16", gradient_checkpointing=True),
    )
    if method != "qlora":  # a 4-bit model is placed on the GPU when it loads
        model.to("cuda")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    gen = torch.Generator(device="cuda").manual_seed(0)
    warmup, losses = 10, []
    started = None
    for step in range(steps + warmup):
        if step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        ids = torch.randint(3, 32000, (batch, seq), device="cuda", generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = steps * batch * seq
    flops_per_token = 6 * params + 12 * 22 * 2048 * seq
    mfu = tokens * flops_per_token / seconds / (peak * 1e12)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"{method:5s}: {tokens / seconds:,.0f} tokens/s, MFU {mfu:.1%}, peak GPU memory "
        f"{peak_gb:.1f} GiB, {steps} steps in {seconds:.1f}s, loss {losses[warmup]:.3f} -> "
        f"{losses[-1]:.3f}",
        flush=True,
    )
    del model, optimizer
    return tokens / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--methods", default="lora,qlora")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); run this on "
              "a GPU machine with a CUDA build of torch", file=sys.stderr)  # fmt: skip
        return 2
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak is None:
        print(f"gpu_check: unknown peak for '{name}'; pass --peak-tflops", file=sys.stderr)
        return 2
    print(f"GPU: {name} (dense bf16 peak {peak:.0f} TFLOP/s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama-1b"
        params = build_model(path)
        print(f"model: Llama, {params / 1e9:.2f}B parameters, random weights; batch {args.batch}"
              f" x {args.seq} tokens, LoRA r=16 on q/k/v/o, gradient checkpointing")  # fmt: skip
        rates = {m: run(m, path, params, args.steps, args.batch, args.seq, peak)
                 for m in args.methods.split(",")}  # fmt: skip
    if "lora" in rates and "qlora" in rates:
        print(f"qlora_vs_lora_throughput: {rates['qlora'] / rates['lora']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
