"""GPU check, in three steps (`benchmarks/gpu_check.sh` runs them in order; each prints its figures
as `<name>: <value>`):

- `throughput`: a ~1.1B-parameter Llama (TinyLlama-1.1B shape, random weights built from a config,
  nothing downloaded) trained for a few hundred steps with LoRA and with QLoRA through tunegate's
  own model loading (`tasks.train.load_model`: the same 4-bit NF4 BitsAndBytesConfig and
  prepare_model_for_kbit_training the stage uses): tokens/s, model FLOP utilisation and peak GPU
  memory per method; then packing on vs off (`tasks.train.data.generation_collator`) on
  variable-length examples: real (non-pad) tokens/s of each and their ratio.
- `flow`: `tunegate run` end to end with `model.task: generation` on a small random Llama, on the
  GPU: wall time, each stage's time the summary reports, and which processes held GPU memory
  (the flow process runs evaluation and the baseline; the training worker is its child).
- `serve`: `tunegate serve-model` on the model the flow registered, on the GPU: requests/s and p95
  latency at 8 and 64 concurrent clients (needs the model server; skipped with a line when the
  command does not exist yet).

`--cpu` runs every step at toy sizes on the CPU (fp32, no QLoRA, no MFU): it proves the script
runs on a machine without a GPU; its figures mean nothing.

MFU counts 6 x parameters (forward + backward, the usual convention, although LoRA skips the
frozen weights' gradients) + 12 x layers x hidden x sequence for attention, per token, against the
GPU's dense bf16 peak (a table below, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
                    "L4": 121.0, "RTX 4090": 165.0}  # fmt: skip
# TinyLlama-1.1B's shape; --cpu uses a toy one
SHAPE_1B = {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
            "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4}  # fmt: skip
SHAPE_TOY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip


def figure(name: str, value: float | str, unit: str = "") -> None:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}{(' ' + unit) if unit else ''}", flush=True)


def build_model(path: Path, shape: dict, device: str) -> int:
    """Random-weight Llama of `shape`, saved (bf16 on GPU) with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    config = LlamaConfig(**shape, max_position_embeddings=2048, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    # The specials take ids 0-2 (not added after the vocabulary, past the embedding's rows).
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, shape["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(path)
    return params


def _lora_model(method: str, path: Path, seq: int, device: str):  # noqa: ANN202
    from tasks.models import ModelSettings
    from tasks.train import LoraSettings, TrainSettings, load_model

    _, model = load_model(
        ModelSettings(base_model=str(path), task="generation", max_length=seq),
        LoraSettings(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        TrainSettings(method=method, precision="bf16" if device == "cuda" else "fp32",
                      gradient_checkpointing=True),
    )  # fmt: skip
    if method != "qlora":  # a 4-bit model is placed on the GPU when it loads
        model.to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model


def _step(model, optimizer, inputs: dict, device: str) -> float:  # noqa: ANN001
    import torch

    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run(method: str, path: Path, params: int, args: argparse.Namespace, peak: float | None):  # noqa: ANN201
    """Fixed-length batches: tokens/s, MFU and peak memory of one method."""
    import torch

    device, shape = args.device, args.shape
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = _lora_model(method, path, args.seq, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    warmup, losses, started = 3 if args.cpu else 10, [], 0.0
    for step in range(args.steps + warmup):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        ids = torch.randint(3, shape["vocab_size"], (args.batch, args.seq), device=device,
                            generator=gen)  # fmt: skip
        losses.append(_step(model, optimizer, {"input_ids": ids, "labels": ids}, device))
    _sync(device)
    seconds = time.perf_counter() - started
    tokens = args.steps * args.batch * args.seq
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    figure(f"{method}_tokens_per_s", tokens / seconds)
    if peak is not None:
        figure(f"{method}_mfu", (tokens * (6 * params + 12 * layers * hidden * args.seq))
               / seconds / (peak * 1e12))  # fmt: skip
    if device == "cuda":
        figure(f"{method}_peak_gpu_memory_gib", torch.cuda.max_memory_allocated() / 2**30)
    print(f"  {method}: {args.steps} steps in {seconds:.1f}s, loss {losses[warmup]:.3f} -> "
          f"{losses[-1]:.3f}", flush=True)  # fmt: skip
    del model, optimizer
    return tokens / seconds


def packing(path: Path, args: argparse.Namespace) -> float:
    """LoRA on variable-length examples (skewed: most short, a few near --seq), the same batches
    padded and packed: real tokens/s of each; the loss is masked on a random prompt share."""
    import torch
    from transformers import AutoTokenizer

    from tasks.train.data import generation_collator

    rng = random.Random(0)
    examples = []
    for _ in range(args.packing_examples):
        length = min(args.seq, 16 + int(rng.paretovariate(1.1) * 24))
        ids = [rng.randrange(3, args.shape["vocab_size"]) for _ in range(length)]
        cut = rng.randint(1, length - 1)
        examples.append({"input_ids": ids, "attention_mask": [1] * length,
                         "labels": [-100] * cut + ids[cut:]})  # fmt: skip
    tokens = sum(len(e["input_ids"]) for e in examples)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rates = {}
    for packed in (False, True):
        model = _lora_model("lora", path, args.seq, args.device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        collate = generation_collator(tokenizer, packed)
        batches = [collate(examples[i : i + args.batch])
                   for i in range(0, len(examples), args.batch)]  # fmt: skip
        moved = [{k: v.to(args.device) if hasattr(v, "to") else v for k, v in b.items()}
                 for b in batches]  # fmt: skip
        _step(model, optimizer, moved[0], args.device)  # warm-up
        _sync(args.device)
        started = time.perf_counter()
        for inputs in moved:
            _step(model, optimizer, inputs, args.device)
        _sync(args.device)
        rates[packed] = tokens / (time.perf_counter() - started)
        figure(f"packing_{'on' if packed else 'off'}_tokens_per_s", rates[packed])
        del model, optimizer
    print(f"  {len(examples)} examples, {tokens / len(examples):.0f} tokens on average, batch "
          f"{args.batch}, up to {args.seq} tokens", flush=True)  # fmt: skip
    figure("packing_speed_ratio_gpu", rates[True] / rates[False])
    return rates[True] / rates[False]


def throughput(args: argparse.Namespace) -> int:
    import torch

    peak = None
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak is None:
            print(f"gpu_check: unknown peak for '{name}'; pass --peak-tflops", file=sys.stderr)
            return 2
        print(f"GPU: {name} (dense bf16 peak {peak:.0f} TFLOP/s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama"
        params = build_model(path, args.shape, args.device)
        print(f"model: Llama, {params / 1e9:.3f}B parameters, random weights; batch {args.batch}"
              f" x {args.seq} tokens, LoRA r=16 on q/k/v/o, gradient checkpointing")  # fmt: skip
        rates = {m: run(m, path, params, args, peak) for m in args.methods.split(",")}
        if "lora" in rates and "qlora" in rates:
            figure("qlora_vs_lora_throughput", rates["qlora"] / rates["lora"])
        packing(path, args)
    return 0


class GpuSampler:
    """`nvidia-smi` every half second: the most GPU memory each process held (MiB)."""

    def __init__(self) -> None:
        self.peak: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory",
                     "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10, check=False,
                ).stdout  # fmt: skip
            except (OSError, subprocess.TimeoutExpired):
                return
            for line in out.splitlines():
                pid, _, mib = line.partition(",")
                if pid.strip().isdigit() and mib.strip().replace(".", "").isdigit():
                    key = int(pid)
                    self.peak[key] = max(self.peak.get(key, 0.0), float(mib))
            self.stop.wait(0.5)

    def __enter__(self) -> GpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        for child in map(int, children):
            out.add(child)
            todo.append(child)
    return out


def flow_overrides(work: Path, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of the flow step (the serve step reuses its MLflow store)."""
    return [
        f"data.path={work / 'notes.jsonl'}", "data.text_column=note",
        "data.target_column=summary", "data.id_column=ticket", "model.task=generation",
        f"model.base_model={work / 'llama'}", "model.max_length=96", "model.max_new_tokens=16",
        "train.method=lora", f"train.epochs={1 if args.cpu else 3}", "train.batch_size=16",
        "train.learning_rate=0.002", "train.generation_eval_samples=32",
        "evaluate.latency_samples=10", "evaluate.batch_size=32",
        "gate.min_rouge1=0.0", "gate.min_rouge1_margin_over_baseline=0.0",
        "gate.max_latency_s=600",
        f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        f"mlflow.artifact_location={work}/artifacts", "mlflow.registered_model=gpu-check",
        f"work_dir={work}/runs", f"feedback.store={work}/feedback",
    ]  # fmt: skip


def flow(args: argparse.Namespace) -> int:
    """`tunegate run` with model.task generation; wall time, stage times, GPU use per process."""
    from tests.helpers.tiny_models import build_tiny_llama
    from tunegate.demo_data.notes import summarization_rows

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    notes = summarization_rows(120 if args.cpu else 1200, seed=4)
    rows = [{"ticket": f"T-{i}", "note": r["text"], "summary": r["target"]}
            for i, r in enumerate(notes)]  # fmt: skip
    (work / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hidden, layers = (32, 2) if args.cpu else (512, 8)
    build_tiny_llama(work / "llama", [r["note"] for r in rows], hidden_size=hidden, layers=layers)
    summary = work / "summary.json"
    command = [sys.executable, "-m", "tunegate", "run", "--summary-json", str(summary)]
    for override in flow_overrides(work, args):
        command += ["--set", override]
    started = time.perf_counter()
    with GpuSampler() as gpu:
        proc = subprocess.Popen(command, cwd=ROOT)
        seen: set[int] = set()
        while proc.poll() is None:
            seen |= _descendants(proc.pid)
            time.sleep(0.5)
    figure("flow_wall_s", time.perf_counter() - started)
    if proc.returncode != 0:
        print(f"gpu_check: tunegate run failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    data = json.loads(summary.read_text())
    for key, value in _timings(data):
        figure(f"flow_stage_s.{key}", value)
    figure("flow_gate", str(data.get("gate", {}).get("passed")))
    flow_mib = gpu.peak.get(proc.pid, 0.0)
    child_mib = max((gpu.peak.get(p, 0.0) for p in seen), default=0.0)
    figure("flow_process_gpu_mib", flow_mib)  # evaluation, baseline, parity run here
    figure("flow_training_worker_gpu_mib", child_mib)
    figure("flow_eval_baseline_on_gpu", str(flow_mib > 0).lower())
    figure("flow_training_on_gpu", str(child_mib > 0).lower())
    return 0


def _timings(data: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Every number under a key naming seconds or timings in the run summary, flattened."""
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner = _timings(value, name + ".")
            timing = any(w in key.lower() for w in ("timing", "seconds", "stage"))
            out += inner if timing or prefix else [i for i in inner if "second" in i[0]]
        elif isinstance(value, int | float) and (
            prefix or "second" in key.lower() or key.lower().endswith("_s")
        ):
            out.append((name, float(value)))
    return [(k, v) for k, v in out if "second" in k or "timing" in k or k.endswith("_s")]


def serve(args: argparse.Namespace) -> int:
    """`tunegate serve-model` on the flow's registered model: req/s and p95 at 8 and 64 clients."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    work, port = args.work, 8765
    command = [sys.executable, "-m", "tunegate", "serve-model", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    for override in flow_overrides(work, args):
        command += ["--set", override]
    probe = subprocess.run([sys.executable, "-m", "tunegate", "serve-model", "--help"],
                           cwd=ROOT, capture_output=True, check=False)  # fmt: skip
    if probe.returncode != 0:
        print("serve: `tunegate serve-model` is not in this checkout yet; step skipped")
        return 0
    body = json.dumps({"inputs": ["note 3 : on monday the customer bob bought two red chairs"]})

    def request() -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        started = time.perf_counter()
        conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"POST /v1/predict answered {response.status}")
        return time.perf_counter() - started

    with GpuSampler() as gpu:
        # Its own process group: stopped with every process it started, whatever happens here.
        server = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        served = {server.pid}
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    request()
                    break
                except (OSError, RuntimeError, http.client.HTTPException):
                    if server.poll() is not None or time.monotonic() > deadline:
                        print("gpu_check: the model server did not answer", file=sys.stderr)
                        return 1
                    time.sleep(1)
            for clients in (8, 64):
                total = clients * (4 if args.cpu else 40)
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    latencies = sorted(pool.map(lambda _: request(), range(total)))
                figure(f"serve_c{clients}_requests_per_s", total / (time.perf_counter() - started))
                figure(f"serve_c{clients}_p95_s", latencies[int(0.95 * (len(latencies) - 1))])
                served |= _descendants(server.pid)
        finally:
            left = stop_group(server)
    figure("serve_on_gpu", str(any(gpu.peak.get(p, 0) > 0 for p in served)).lower())
    if left:
        print(f"gpu_check: processes of the model server still running: {left}", file=sys.stderr)
        return 1
    return 0


def stop_group(proc: subprocess.Popen, grace_s: float = 30.0) -> list[int]:
    """SIGTERM to `proc`'s process group, SIGKILL to what is left after `grace_s`; reap `proc`.
    Returns the group's processes still alive afterwards (none, unless one could not be killed)."""
    import signal

    group = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or it stays a zombie in the group
            if not _group_members(group):
                break
            time.sleep(0.2)
        if not _group_members(group):
            break
    proc.wait(timeout=10)
    return _group_members(group)


def _group_members(group: int) -> list[int]:
    """Live (not zombie) processes in process group `group`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["throughput", "flow", "serve"])
    parser.add_argument("--cpu", action="store_true", help="toy sizes on the CPU: proves it runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunegate-gpu-check"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--packing-examples", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--methods", default="lora,qlora")
    args = parser.parse_args()
    import torch

    args.device = "cpu" if args.cpu else "cuda"
    args.shape = SHAPE_TOY if args.cpu else SHAPE_1B
    if args.cpu:
        args.steps, args.batch, args.seq, args.packing_examples = 4, 4, 64, 32
        args.methods = "lora"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); run this on "
              "a GPU machine with a CUDA build of torch, or pass --cpu", file=sys.stderr)  # fmt: skip
        return 2
    return {"throughput": throughput, "flow": flow, "serve": serve}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
