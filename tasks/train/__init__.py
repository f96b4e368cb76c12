"""Fine-tune a base model for classification or generation: LoRA, QLoRA or all weights.

A `TrainJob` (data paths, labels, model / lora / train settings, output folder) goes in, a
`TrainResult` comes out. The modules, in the order a run passes through them:

- `settings`: `LoraSettings`, `TrainSettings`, `TrainJob`, `TrainResult`, `TrainingError`.
- `launch`: the parent side. `train_task` / `run_training` write the job as `spec.json`, start
  the worker (one process, `torchrun` or `accelerate launch`), forward its logs, and turn a crash
  or an out-of-memory kill into one line naming the settings to change.
- `worker`: the child, `python -m tasks.train.worker SPEC.json`; runs `fit.fit`. With
  `run_training(..., preload=True)` (search trials) it is forked instead from a forkserver that
  imported `preload` (torch, transformers, peft) once.
- `fit`: transformers' `Trainer` loop; `data` builds the datasets (generation: the loss masked on
  the prompt, targets never cut silently), `model` loads and wraps the model (4-bit for qlora,
  peft) and saves it, `metrics` scores validation, `history` holds checkpoints, the overfitting
  warning and the curves.

The output folder: `model/` (the adapter in peft layout or the full weights, the tokenizer,
`tunegate.json`, for classification `labels.json`, optionally `merged/`), `history.json`,
`result.json`. This package imports `fit` (torch, transformers) only in the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it; imported on first access (PEP 562).
_EXPORTS = {
    "last_complete_checkpoint": "history",
    "overfitting_message": "history",
    "plot_history": "history",
    "launch_command": "launch",
    "run_training": "launch",
    "train_task": "launch",
    "write_spec": "launch",
    "check_runtime": "model",
    "load_model": "model",
    "precision_flags": "model",
    "OOM_HINT": "settings",
    "LoraSettings": "settings",
    "TrainingError": "settings",
    "TrainJob": "settings",
    "TrainResult": "settings",
    "TrainSettings": "settings",
    "TruncationReport": "settings",
}

if TYPE_CHECKING:
    from tasks.train.history import last_complete_checkpoint, overfitting_message, plot_history
    from tasks.train.launch import launch_command, run_training, train_task, write_spec
    from tasks.train.model import check_runtime, load_model, precision_flags
    from tasks.train.settings import (
        OOM_HINT,
        LoraSettings,
        TrainingError,
        TrainJob,
        TrainResult,
        TrainSettings,
        TruncationReport,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tasks.train' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"tasks.train.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "LoraSettings",
    "OOM_HINT",
    "TrainJob",
    "TrainResult",
    "TrainSettings",
    "TrainingError",
    "TruncationReport",
    "check_runtime",
    "last_complete_checkpoint",
    "launch_command",
    "load_model",
    "overfitting_message",
    "plot_history",
    "precision_flags",
    "run_training",
    "train_task",
    "write_spec",
]
