"""What a run leaves behind while it trains: checkpoints, the loss history, and its curves.

The worker appends every log line to `history.jsonl` (the parent forwards it as it comes) and
writes `history.json` at the end; `checkpoints/checkpoint-N` let a killed run resume.
"""

from __future__ import annotations

import json
from pathlib import Path

HISTORY_STREAM = "history.jsonl"


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer state was written (the last file a save writes)."""
    if not checkpoint_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def overfitting_message(history: list[dict], patience: int) -> str | None:
    """A warning when eval_loss minus the latest train loss grew `patience` evaluations in a row."""
    gaps: list[float] = []
    last_train = None
    for entry in history:
        if "loss" in entry:
            last_train = entry["loss"]
        if "eval_loss" in entry and last_train is not None:
            gaps.append(entry["eval_loss"] - last_train)
    if len(gaps) <= patience:
        return None
    recent = gaps[-(patience + 1) :]
    if all(b > a for a, b in zip(recent, recent[1:], strict=False)) and recent[-1] > 0:
        return (
            f"possible overfitting: the validation-train loss gap widened {patience} evaluations "
            f"in a row (now {recent[-1]:.3f}); consider fewer train.epochs, a lower "
            "train.learning_rate or more data"
        )
    return None


def plot_history(history_path: Path, out_path: Path) -> Path:
    """Training loss per step and validation loss / metric per evaluation, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(history_path.read_text())
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="val loss")
        metric = next((m for m in ("eval_f1_macro", "eval_rouge_l") if m in evals[-1]), None)
        if metric:
            ax2 = ax.twinx()
            points = [(h["step"], h[metric]) for h in evals if metric in h]
            ax2.plot(*zip(*points, strict=True), "s--", color="green")
            ax2.set_ylabel("val " + metric.removeprefix("eval_"), color="green")
            ax2.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
