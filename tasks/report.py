"""The evaluation report and the tables around it: markdown, the comparison plot, gate targets.

Moved out of `tasks.evaluate` so that computing metrics and presenting them are read apart:
the flow records these through `flows.record`; nothing here reads a model or a data file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.evaluate import EvalResult
from tasks.gate import CLASS_F1_PREFIX, GateDecision, GateSettings, Interval
from tasks.unsupported import highlight


def md(text: object) -> str:
    """A user string (a label, a metric name holding one) as one markdown table cell or list
    item: a `|` or a line break in a label would otherwise end the cell or the row."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").splitlines())


def plot_text(text: str, limit: int = 40) -> str:
    """A label as matplotlib draws it literally: `$` pairs would start math mode (and a bad
    formula raises), long labels are cut with an ellipsis."""
    short = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return short.replace("$", r"\$")


def table_keys(result: EvalResult) -> list[str]:
    """Rows of a metrics table: every metric but per-class entries (the headline metrics per
    task, which the gate and registry use, are `tasks.metrics.HEADLINES`)."""
    return [k for k in result.metrics if "/" not in k]


def plot_comparison(
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
    out_path: Path,
    intervals: dict[str, Interval] | None = None,
) -> Path:
    """Bars of quality metrics (0..1) for candidate, baseline and champion side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k for k in table_keys(candidate) if not k.startswith("latency") and k != "mean_output_words"
    ]
    systems = [
        (name, r)
        for name, r in (("candidate", candidate), ("baseline", baseline), ("champion", champion))
        if r is not None
    ]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(keys)), 4))
    for i, (name, result) in enumerate(systems):
        xs = np.arange(len(keys)) + i * width
        ax.bar(xs, [result.metrics.get(k, 0.0) for k in keys], width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(systems) - 1) / 2, keys, rotation=20)
    ax.set_ylim(0, 1)
    title = "Test split"
    for name, interval in (intervals or {}).items():
        title += f" | vs {name}: {interval.delta:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def cell(result: EvalResult | None, key: str) -> str:
    return f"{result.metrics[key]:.4f}" if result is not None and key in result.metrics else "-"


def write_report(
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
    out_path: Path,
    decision: GateDecision | None = None,
    intervals: dict[str, Interval] | None = None,
    adversarial: dict[str, EvalResult] | None = None,
    plots: list[str] | None = None,
    production: dict[str, EvalResult] | None = None,
) -> Path:
    """The evaluation report: metrics side by side with targets, intervals, gate, slices, plots.

    `production`: candidate and champion on the held-out corrections of served predictions."""
    targets = gate_targets(decision) if decision is not None else {}
    rows = ["| metric | candidate | baseline | champion | target |", "|---|---|---|---|---|"]
    for key in table_keys(candidate):
        cells = [cell(r, key) for r in (candidate, baseline, champion)]
        rows.append(f"| {md(key)} | " + " | ".join(cells) + f" | {targets.get(key, '')} |")
    if candidate.per_class:
        rows += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for label, m in candidate.per_class.items():
            rows.append(
                f"| {md(label)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
                f"| {int(m['support'])} |"
            )
    if intervals:
        rows += [
            "",
            "## Paired bootstrap: candidate minus ...",
            "",
            "| vs | metric | delta | low | high | examples |",
            "|---|---|---|---|---|---|",
        ]
        for name, iv in intervals.items():
            rows.append(
                f"| {name} | {iv.metric} | {iv.delta:+.4f} | {iv.low:+.4f} | {iv.high:+.4f} "
                f"| {iv.n} |"
            )
    if adversarial:
        rows += ["", "## Adversarial slice", "", "| metric | " + " | ".join(adversarial) + " |"]
        rows.append("|---|" + "---|" * len(adversarial))
        first = next(iter(adversarial.values()))
        for key in table_keys(first):
            rows.append(
                f"| {key} | " + " | ".join(cell(r, key) for r in adversarial.values()) + " |"
            )
    if production:
        n = len(next(iter(production.values())).references)
        rows += _slice_rows(
            f"Production corrections ({n} held-out rows with a prediction_id)", production
        )
    rows += unsupported_rows({"candidate": candidate, "baseline": baseline, "champion": champion})
    if decision is not None:
        verdict = "PASSED" if decision.passed else "FAILED"
        rows += ["", f"## Gate: {verdict}", ""] + [f"- {md(r)}" for r in decision.reasons]
    if plots:
        rows += [""] + [f"![{Path(p).stem}](../plots/{Path(p).name})" for p in plots]
    out_path.write_text("# Evaluation on the test split\n\n" + "\n".join(rows) + "\n")
    return out_path


EXAMPLES = 5  # answers shown per system in the unsupported-details section


def unsupported_rows(systems: dict[str, EvalResult | None]) -> list[str]:
    """Generation: the unsupported-detail rate per system and a few answers with their
    unsupported details in bold. Answers only (the model's output on scrubbed inputs): no
    input text goes into the report."""
    measured = {
        name: r for name, r in systems.items() if r is not None and "unsupported_rate" in r.metrics
    }
    if not measured:
        return []
    rows = [
        "",
        "## Unsupported details",
        "",
        "Numbers, amounts, dates and names in an answer that its input does not contain.",
        "",
        "| system | unsupported rate | answers with any | details per answer |",
        "|---|---|---|---|",
    ]
    for name, r in measured.items():
        found = r.per_example.get("details", [])
        per_answer = f"{sum(found) / len(found):.2f}" if found else "-"
        rows.append(
            f"| {name} | {r.metrics['unsupported_rate']:.4f} "
            f"| {r.metrics['unsupported_answer_share']:.4f} | {per_answer} |"
        )
    for name, r in measured.items():
        shown = [i for i, spans in enumerate(r.unsupported_spans) if spans][:EXAMPLES]
        if not shown:
            continue
        rows += ["", f"{name}, answers with unsupported details (bold):", ""]
        rows += [f"- {md(highlight(r.predictions[i], r.unsupported_spans[i]))}" for i in shown]
    return rows


def _slice_rows(title: str, systems: dict[str, EvalResult]) -> list[str]:
    first = next(iter(systems.values()))
    rows = ["", f"## {title}", "", "| metric | " + " | ".join(systems) + " |"]
    rows.append("|---|" + "---|" * len(systems))
    for key in table_keys(first):
        rows.append(f"| {key} | " + " | ".join(cell(r, key) for r in systems.values()) + " |")
    return rows


def gate_targets(
    decision: GateDecision, settings: GateSettings | None = None, keys: list[str] | None = None
) -> dict[str, str]:
    """metric -> the target the gate applied to it (with `settings`: per-class floors too)."""
    out: dict[str, str] = {}
    for check in decision.checks:
        if check.target is None:
            continue
        if check.name == "absolute_target":
            out[decision.metric] = f">= {check.target:.4f}"
        elif check.name == "latency_p95":
            out["latency_p95_s"] = f"<= {check.target:.2f}"
        elif check.name == "unsupported_details":
            out["unsupported_rate"] = f"<= {check.target:.4f}"
    if settings is not None and decision.task == "classification":
        for key in keys or []:
            if key.startswith(CLASS_F1_PREFIX):
                label = key.removeprefix(CLASS_F1_PREFIX)
                out[key] = f">= {settings.class_min_f1.get(label, settings.min_class_f1):.4f}"
    return out


def save_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def plot_confusion(result: EvalResult, out_path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(result.confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    shown = [plot_text(label) for label in result.labels]
    ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right")
    ax.set_yticks(range(len(shown)), shown)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
