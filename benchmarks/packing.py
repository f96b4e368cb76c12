"""Packed vs padded generation training: examples/s on variable-length SFT data, same batches.

A random-weight Llama (built from a config, nothing downloaded) is trained on the same
variable-length prompt/target examples (built by tunegate's `generation_examples`: the loss masked
on the prompt) with the same batches, once padded (`DataCollatorForSeq2Seq`) and once packed
(`train.packing`: `tasks.train.data.generation_collator(packed=True)`), forward + backward + AdamW,
float32 on CPU (or bf16 autocast on CUDA). Runs are interleaved, fastest of `--repeats` kept.
Also reports the padding share of the padded batches and the first step's loss under both
(they must agree: packing changes the cost, not the result).

    PYTHONPATH=. python benchmarks/packing.py | tee benchmarks/packing.txt   # ~4 min, 2 cores
    PYTHONPATH=. python benchmarks/packing.py --quick                         # ~30 s, proves it runs

Last line: `packing_speed_ratio: <packed examples/s / padded examples/s>`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def examples(tokenizer, count: int, max_length: int, seed: int) -> list[dict]:  # noqa: ANN001
    """Notes of skewed length (most short, a few near `max_length`), as SFT data usually is."""
    import pandas as pd

    from tasks.models import ModelSettings, prompt_parts
    from tasks.train.data import generation_examples
    from tunegate.demo_data.notes import summarization_rows

    rng = random.Random(seed)
    rows = summarization_rows(count, seed=seed)
    texts = []
    for row in rows:
        words = row["text"].split()
        repeat = min(int(rng.paretovariate(1.2)), 12)
        texts.append(" ".join((words * repeat)[: rng.randint(6, len(words) * repeat)]))
    frame = pd.DataFrame({"text": texts, "target": [r["target"] for r in rows]})
    parts = prompt_parts(tokenizer, ModelSettings(task="generation"))
    return generation_examples(frame, tokenizer, parts, max_length)[0]


def train_rate(model_path: Path, data: list[dict], batch: int, packed: bool, device: str):  # noqa: ANN201
    """(examples/s, first loss) for one pass over `data` in fixed batches."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.train.data import generation_collator

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collate = generation_collator(tokenizer, packed)
    batches = [collate(data[i : i + batch]) for i in range(0, len(data), batch)]
    first = None
    started = time.perf_counter()
    for inputs in batches:
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        first = float(loss.detach()) if first is None else first
    if device == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - started), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run that proves it works")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args()
    if args.quick:
        args.examples, args.hidden, args.layers, args.repeats = 64, 64, 2, 1
    import torch
    from transformers import AutoTokenizer

    from tests.helpers.tiny_models import build_tiny_llama
    from tunegate.demo_data.notes import summarization_rows

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        words = [r["text"] for r in summarization_rows(200, seed=0)]
        path = build_tiny_llama(
            Path(tmp) / "llama", words, hidden_size=args.hidden, layers=args.layers
        )
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        config.max_position_embeddings = max(args.max_length, 256)
        config.save_pretrained(path)
        data = examples(AutoTokenizer.from_pretrained(path), args.examples, args.max_length, 1)
        lengths = [len(e["input_ids"]) for e in data]
        padded_tokens = sum(
            args.batch * max(lengths[i : i + args.batch])
            if i + args.batch <= len(lengths)
            else len(lengths[i:]) * max(lengths[i:])
            for i in range(0, len(lengths), args.batch)
        )
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"device {device}, torch {torch.__version__}")  # fmt: skip
        print(f"data: {len(data)} examples, {min(lengths)}-{max(lengths)} tokens (mean "
              f"{sum(lengths) / len(lengths):.0f}), batch {args.batch}; padding is "
              f"{1 - sum(lengths) / padded_tokens:.0%} of the padded batches' tokens")  # fmt: skip
        print(f"model: random Llama {args.layers} layers x {args.hidden}, float32, AdamW, all "
              "weights trained")  # fmt: skip
        rates: dict[str, list[float]] = {"padded": [], "packed": []}
        firsts = {}
        for i in range(args.repeats):
            for name in ("padded", "packed"):
                rate, firsts[name] = train_rate(path, data, args.batch, name == "packed", device)
                rates[name].append(rate)
            print(f"repeat {i}: padded {rates['padded'][-1]:.1f} ex/s, packed "
                  f"{rates['packed'][-1]:.1f} ex/s")  # fmt: skip
    best = {k: max(v) for k, v in rates.items()}
    gap = abs(firsts["packed"] - firsts["padded"]) / firsts["padded"]
    print(f"first-step loss: padded {firsts['padded']:.6f}, packed {firsts['packed']:.6f} "
          f"(relative difference {gap:.1e})")  # fmt: skip
    print(f"fastest: padded {best['padded']:.1f} examples/s, packed {best['packed']:.1f} "
          "examples/s")  # fmt: skip
    print(f"packing_speed_ratio: {best['packed'] / best['padded']:.2f}")


if __name__ == "__main__":
    main()
