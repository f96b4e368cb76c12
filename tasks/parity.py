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

A classifier is also run through the int8 serving path (`TextClassifier.quantize_int8`, ONNX
Runtime, CPU) on the same texts, except on a GPU machine. Its agreement does not gate; it is
registered with the version (`parity_int8_agreement`, `serve_int8`), and a server with
`serving.quantize: auto` (the default) serves the int8 path only for a version whose int8
agreement reached the same minimum.
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
from tasks.serving import INT8_SERVE_TAG

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
    int8_agreeing: int | None = None  # classification: the int8 serving path's agreeing labels

    @property
    def agreement(self) -> float:
        return self.agreeing / self.examples if self.examples else 1.0

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    @property
    def int8_agreement(self) -> float | None:
        if self.int8_agreeing is None:
            return None
        return self.int8_agreeing / self.examples if self.examples else 1.0

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
    int8 = None
    if task_name == "classification" and _gpu_machine():
        stage_logger(__name__).info(
            "parity: int8 serving path not measured on a GPU machine (it runs on CPU); "
            "serving.quantize: auto serves this version as none"
        )
    elif task_name == "classification":
        try:
            int8 = sum(agreeing(task_name, int8_answers(model_dir, texts), evaluated.predictions))
        except Exception as exc:  # noqa: BLE001 - informational: never fails the retrain
            stage_logger(__name__).warning(
                "parity: int8 serving path not measured (%s: %s); serving.quantize: auto "
                "serves this version as none",
                type(exc).__name__,
                str(exc)[:300],
            )
    return ParityResult(
        task=task_name,
        examples=len(agree),
        agreeing=sum(agree),
        min_agreement=min_agreement,
        int8_agreeing=int8,
    )


def _gpu_machine() -> bool:
    """A model evaluated on a GPU may be far too large to load again on CPU for the int8 check."""
    import torch

    return torch.cuda.is_available()


def int8_answers(model_dir: Path, texts: list[str]) -> list[str]:
    """The classifier's labels through the int8 serving path (`serving.quantize`), on CPU."""
    from tasks.models import TextClassifier

    classifier = TextClassifier(model_dir, device="cpu")
    classifier.quantize_int8()
    return classifier.predict(texts)


def int8_tags(int8_agreement: float | None, min_agreement: float) -> dict[str, str]:
    """The version tags `serving.quantize: auto` reads; none when int8 was not measured."""
    if int8_agreement is None:
        return {}
    return {
        "parity_int8_agreement": f"{int8_agreement:.4f}",
        INT8_SERVE_TAG: "true" if int8_agreement >= min_agreement else "false",
    }


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
        update={
            "checks": [*decision.checks, check],
            "passed": decision.passed and check.passed,
            "int8_agreement": parity.int8_agreement,
        }
    )


@task(name="parity")
def parity_task(
    model_dir: Path, test_path: Path, evaluated: EvalResult, min_agreement: float, work_dir: Path
) -> ParityResult:
    result = check_parity(model_dir, test_path, evaluated, min_agreement, work_dir)
    log = stage_logger(__name__)
    (log.info if result.passed else log.error)("parity: %s", result.detail)
    if result.int8_agreement is not None:
        log.info(
            "parity: int8 serving path: %d of %d labels agree (%.1f%%); serving.quantize: auto "
            "serves it %s",
            result.int8_agreeing,
            result.examples,
            100 * result.int8_agreement,
            "(at least evaluate.parity_min_agreement)"
            if result.int8_agreement >= min_agreement
            else "not (below evaluate.parity_min_agreement)",
        )
    return result
