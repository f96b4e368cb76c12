"""Parity before registration: what will be served answers as the model that was evaluated.

The evaluation scores the trained folder loaded in-process; a server loads the registered pyfunc
(`tasks.serving.TunegatePyfunc` around a copy of the folder), which resolves the base model named
in the card, applies the adapter (or the merged weights) and places the model itself. A merged,
re-quantised or mis-copied adapter can answer differently without any error. So before a
candidate that passed its gate is registered, the pyfunc is saved and loaded exactly as MLflow
serves it (`mlflow.pyfunc.save_model` then `mlflow.pyfunc.load_model`), run on the test split,
and compared example by example with the evaluated predictions:

- classification: an example agrees when the served label equals the evaluated label;
- generation: an example agrees when the served greedy output and the evaluated output are equal
  after folding case and whitespace, or their ROUGE-L F-measure (`rouge_score`, stemmed, the
  evaluation's scorer; the evaluated output as reference) is at least `GENERATION_MATCH_ROUGE_L`.

The share of agreeing examples must reach `evaluate.parity_min_agreement`; otherwise the gate
gains a failed `parity` check with the numbers, and the candidate is registered as failed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from pydantic import BaseModel

from tasks import stage_logger
from tasks.evaluate import EvalResult, compute_rouge, normalise_answer, read_table
from tasks.gate import Check, GateDecision
from tasks.models import ModelCard

# Greedy decoding of the same weights gives the same words; 0.9 still lets a merged or dequantised
# model differ in the last word or two of a long answer, and rejects a different model, whose
# answers share far fewer words in order.
GENERATION_MATCH_ROUGE_L = 0.9


class ParityResult(BaseModel):
    """How the served artifact's answers compare with the evaluated ones on the test split."""

    task: str
    examples: int
    agreeing: int
    min_agreement: float

    @property
    def agreement(self) -> float:
        return self.agreeing / self.examples if self.examples else 1.0

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    @property
    def detail(self) -> str:
        what = "labels" if self.task == "classification" else "outputs"
        return (
            f"{self.agreeing} of {self.examples} served {what} agree with the evaluated model "
            f"({self.agreement:.1%}; need evaluate.parity_min_agreement={self.min_agreement})"
        )


def agreeing(task: str, served: list[str], evaluated: list[str]) -> list[bool]:
    """Per example: does the served answer agree with the evaluated one (see the module doc)."""
    if len(served) != len(evaluated):
        raise ValueError(f"parity: {len(served)} served answers for {len(evaluated)} evaluated")
    if task == "classification":
        return [s == e for s, e in zip(served, evaluated, strict=True)]
    rouge_l = compute_rouge(served, evaluated)["rougeL"]
    return [
        normalise_answer(s) == normalise_answer(e) or r >= GENERATION_MATCH_ROUGE_L
        for s, e, r in zip(served, evaluated, rouge_l, strict=True)
    ]


def served_answers(model_dir: Path, texts: list[str], work_dir: Path) -> list[str]:
    """The pyfunc saved and loaded as MLflow serves it, run on `texts`."""
    import mlflow.pyfunc
    import pandas as pd

    from tasks.registry import PIP_REQUIREMENTS
    from tasks.serving import TunegatePyfunc

    path = Path(work_dir) / "served-model"
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=TunegatePyfunc(),
        artifacts={"model_dir": str(model_dir)},
        pip_requirements=PIP_REQUIREMENTS,
    )
    try:
        frame = mlflow.pyfunc.load_model(str(path)).predict(pd.DataFrame({"text": texts}))
    finally:
        shutil.rmtree(path, ignore_errors=True)  # a copy of the weights: not kept
    column = "label" if "label" in frame.columns else "output"
    return [str(v) for v in frame[column]]


def check_parity(
    model_dir: Path, test_path: Path, evaluated: EvalResult, min_agreement: float, work_dir: Path
) -> ParityResult:
    task_name = ModelCard.read(Path(model_dir)).task
    texts = read_table(test_path)["text"].astype(str).tolist()
    if len(texts) != len(evaluated.predictions):
        raise ValueError(
            f"parity: {test_path} has {len(texts)} rows but the evaluation kept "
            f"{len(evaluated.predictions)} predictions; evaluate the same split"
        )
    agree = agreeing(task_name, served_answers(model_dir, texts, work_dir), evaluated.predictions)
    return ParityResult(
        task=task_name, examples=len(agree), agreeing=sum(agree), min_agreement=min_agreement
    )


def with_parity(decision: GateDecision, parity: ParityResult) -> GateDecision:
    """The gate's decision with a `parity` check added; a failed check fails the gate."""
    check = Check(
        name="parity",
        passed=parity.passed,
        detail=parity.detail,
        value=parity.agreement,
        target=parity.min_agreement,
    )
    return decision.model_copy(
        update={"checks": [*decision.checks, check], "passed": decision.passed and check.passed}
    )


@task(name="parity")
def parity_task(
    model_dir: Path, test_path: Path, evaluated: EvalResult, min_agreement: float, work_dir: Path
) -> ParityResult:
    result = check_parity(model_dir, test_path, evaluated, min_agreement, work_dir)
    log = stage_logger(__name__)
    (log.info if result.passed else log.error)("parity: %s", result.detail)
    return result
