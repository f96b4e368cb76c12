"""Generation evaluation of 1,000 examples on one tiny random Llama: batched vs batch size 1.

Both runs go through the same code the flow uses (`tasks.evaluate.generate_texts` with
left padding, then `generation_metrics`: ROUGE with rouge-score, exact match, length), greedy
decoding, same prompts, same model. Reported: examples per second for each and their ratio,
and whether the batched outputs are identical to the one-at-a-time outputs.

    PYTHONPATH=. python benchmarks/eval_batching.py | tee benchmarks/eval_batching.txt
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.evaluate import (  # noqa: E402
    DecodingSettings,
    generate_texts,
    generation_metrics,
    load_causal_lm,
)
from tests.helpers.tiny_models import build_tiny_llama  # noqa: E402

N_EXAMPLES = 1000
THREADS = 1  # tiny matrices: more threads only add synchronisation (and fight other jobs)
BATCH_SIZE = 32
MAX_NEW_TOKENS = 16
WORDS = (
    "the a applicant income debt loan paid late early high low risk score bureau file "
    "employer salary rent mortgage card balance limit missed payment history stable years"
).split()


def run(model, tokenizer, prompts, targets, batch_size: int) -> tuple[float, list[str], dict]:
    decoding = DecodingSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    generate_texts(model, tokenizer, prompts[:4], decoding)  # warm-up
    started = time.perf_counter()
    last = [started]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(f"  batch {batch_size}: {done}/{total}", file=sys.stderr, flush=True)

    predictions = generate_texts(model, tokenizer, prompts, decoding, progress)
    metrics = generation_metrics(predictions, targets).metrics
    return time.perf_counter() - started, predictions, metrics


def main() -> None:
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    prompts, targets = [], []
    for _ in range(N_EXAMPLES):
        words = list(rng.choice(WORDS, size=int(rng.integers(6, 40))))
        prompts.append(" ".join(words) + " :")
        targets.append(" ".join(words[:5]))
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_llama(Path(tmp), [" ".join(WORDS) + " : ."])
        model, tokenizer = load_causal_lm(Path(tmp), device="cpu")  # the numbers are CPU numbers
        params = sum(p.numel() for p in model.parameters())
        print(f"model: tiny random Llama, {params:,} parameters, 2 layers, hidden 64")
        print(
            f"machine: {platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, CPU"
        )
        print(
            f"examples: {N_EXAMPLES}, prompts 6-40 words, greedy, max_new_tokens {MAX_NEW_TOKENS}"
        )
        one_s, one_pred, one_metrics = run(model, tokenizer, prompts, targets, 1)
        many_s, many_pred, many_metrics = run(model, tokenizer, prompts, targets, BATCH_SIZE)
    one_rate, many_rate = N_EXAMPLES / one_s, N_EXAMPLES / many_s
    same = sum(a == b for a, b in zip(one_pred, many_pred, strict=True))
    print(f"batch size 1:  {one_s:8.2f} s  {one_rate:8.1f} examples/s")
    print(f"batch size {BATCH_SIZE}: {many_s:8.2f} s  {many_rate:8.1f} examples/s")
    print(f"identical outputs batched vs one at a time: {same}/{N_EXAMPLES}")
    print(
        f"rouge1 batch 1 {one_metrics['rouge1']:.4f}, batch {BATCH_SIZE} {many_metrics['rouge1']:.4f}"
    )
    print(f"eval_batch_speedup: {many_rate / one_rate:.2f}")


if __name__ == "__main__":
    main()
