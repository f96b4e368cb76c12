"""What differs between task types, behind one interface chosen once per run.

The retrain flow never asks which task it runs: it calls `kind_for(config)` once and then the
kind's methods. A kind decides which extra data stages apply to the training split
(augmentation and adversarial examples are classification-only: a perturbed input would no
longer match its generation target), which labels training gets, how the baseline is measured,
how candidate and champion are scored (and the robustness slice), which plots the report adds,
and which metric is its headline (`tasks.metrics.HEADLINE`).

A third task type: a class here with these methods, its row in `KINDS`, its headline metrics in
`tasks.metrics.HEADLINES`, its gate targets in `tasks.gate.GateSettings` and its name in
`ModelSettings.task`. The flow stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flows.config import RetrainConfig
from flows.timing import timed
from tasks import stage_logger
from tasks.adversarial import AdversarialResult, adversarial_task, robust_metrics
from tasks.augment import AugmentResult, augment_task
from tasks.evaluate import (
    EvalResult,
    baseline_task,
    evaluate_candidate_task,
    evaluate_classifier_on,
    evaluate_generation_task,
    evaluate_generator,
    evaluate_predictions,
    generation_baseline_task,
)
from tasks.metrics import HEADLINE
from tasks.models import TextClassifier, TextGenerator
from tasks.registry import Champion
from tasks.report import plot_confusion
from tasks.split import SplitResult

Predict = Callable[[list[str]], list[str]]


@dataclass
class TrainingData:
    """The training split as training will read it, and what was added to it."""

    train_path: Path
    robust_path: Path | None = None  # the test split's hardest perturbations
    augmented: AugmentResult | None = None
    adversarial: AdversarialResult | None = None

    @property
    def rows_augmented(self) -> int:
        return self.augmented.rows_added if self.augmented is not None else 0

    @property
    def rows_adversarial(self) -> int:
        return self.adversarial.train_flipped if self.adversarial is not None else 0


@dataclass
class Scores:
    """Candidate and champion on the test split, and on the adversarial file if configured."""

    candidate: EvalResult
    champion: EvalResult | None = None
    adversarial: dict[str, EvalResult] = field(default_factory=dict)


class TaskKind(Protocol):
    """The task-specific steps of a retrain; see the module docstring."""

    name: str

    @property
    def headline(self) -> str:
        """The metric the gate decides on and the bootstrap compares (`tasks.metrics`)."""
        return HEADLINE[self.name]

    def train_labels(self, labels: list[str]) -> list[str] | None: ...

    def prepare_training(
        self,
        config: RetrainConfig,
        splits: SplitResult,
        labels: list[str],
        champion: Champion,
        run_dir: Path,
    ) -> TrainingData: ...

    def baseline(
        self, config: RetrainConfig, splits: SplitResult, labels: list[str]
    ) -> EvalResult: ...

    def score(
        self,
        config: RetrainConfig,
        model_dir: Path,
        splits: SplitResult,
        training: TrainingData,
        labels: list[str],
        champion: Champion,
    ) -> Scores: ...

    def plots(self, candidate: EvalResult, run_dir: Path) -> list[Path]: ...


def _cache_dir(config: RetrainConfig) -> Path:
    return Path(config.work_dir) / "cache"


class ClassificationKind(TaskKind):
    """Labels in, labels out: augmentation, adversarial examples, a few-shot baseline, macro-F1."""

    name = "classification"

    def train_labels(self, labels: list[str]) -> list[str] | None:
        return labels

    def prepare_training(
        self,
        config: RetrainConfig,
        splits: SplitResult,
        labels: list[str],
        champion: Champion,
        run_dir: Path,
    ) -> TrainingData:
        """Augment the training split (near-duplicates of val/test dropped), then add the
        adversarial flips found against the champion (else the base model with its head)."""
        with timed("augment"):
            augmented = augment_task(
                splits.train_path,
                config.augment,
                run_dir,
                [splits.val_path, splits.test_path],
                config.model.base_model,
            )
        data = TrainingData(train_path=augmented.train_path, augmented=augmented)
        if not config.adversarial.enabled:
            return data
        with timed("adversarial"):
            adversarial = adversarial_task(
                data.train_path,
                splits.test_path,
                champion.model_dir,
                config.model.base_model,
                labels,
                config.model.max_length,
                config.adversarial,
                run_dir / "adversarial",
                config.model.device,
            )
        data.train_path, data.robust_path = adversarial.train_path, adversarial.robust_test_path
        data.adversarial = adversarial
        return data

    def baseline(self, config: RetrainConfig, splits: SplitResult, labels: list[str]) -> EvalResult:
        """The untuned base model with a few-shot head, cached per dataset version."""
        return baseline_task(
            _cache_dir(config),
            config.model.base_model,
            splits.dataset_version,
            splits.train_path,
            splits.test_path,
            labels,
            config.evaluate,
            config.split.seed,
            config.model.device,
        )

    def score(
        self,
        config: RetrainConfig,
        model_dir: Path,
        splits: SplitResult,
        training: TrainingData,
        labels: list[str],
        champion: Champion,
    ) -> Scores:
        """Clean test metrics, plus the robustness slice and the adversarial file when present."""
        scores = Scores(
            evaluate_candidate_task(
                model_dir, splits.test_path, config.evaluate, config.model.device
            )
        )
        predictors: dict[str, Predict] = {}
        if champion.model_dir is not None:
            predictors["champion"] = TextClassifier(champion.model_dir, config.model.device).predict
            scores.champion = evaluate_predictions(predictors["champion"], splits.test_path, labels)
        adversarial_path = config.evaluate.adversarial_path
        if training.robust_path is None and adversarial_path is None:
            return scores
        predictors = {
            "candidate": TextClassifier(model_dir, config.model.device).predict,
            **predictors,
        }
        if training.robust_path is not None:
            for name, result in (("candidate", scores.candidate), ("champion", scores.champion)):
                if result is not None:
                    result.metrics.update(
                        robust_metrics(predictors[name], training.robust_path, labels)
                    )
        if adversarial_path is not None:
            scores.adversarial = {
                name: evaluate_classifier_on(predict, adversarial_path, labels)
                for name, predict in predictors.items()
            }
        return scores

    def plots(self, candidate: EvalResult, run_dir: Path) -> list[Path]:
        return [
            plot_confusion(candidate, run_dir / "confusion_matrix.png", "Candidate (test split)")
        ]


class GenerationKind(TaskKind):
    """Prompt in, text out: no augmentation, a zero-shot baseline, ROUGE-1."""

    name = "generation"

    def train_labels(self, labels: list[str]) -> list[str] | None:
        return None

    def prepare_training(
        self,
        config: RetrainConfig,
        splits: SplitResult,
        labels: list[str],
        champion: Champion,
        run_dir: Path,
    ) -> TrainingData:
        stage_logger(__name__).info("generation: augmentation and adversarial examples are skipped")
        return TrainingData(train_path=splits.train_path)

    def baseline(self, config: RetrainConfig, splits: SplitResult, labels: list[str]) -> EvalResult:
        """The untuned base model prompted exactly as the fine-tuned one, cached per version."""
        return generation_baseline_task(
            _cache_dir(config),
            config.model,
            splits.dataset_version,
            splits.test_path,
            config.evaluate,
        )

    def score(
        self,
        config: RetrainConfig,
        model_dir: Path,
        splits: SplitResult,
        training: TrainingData,
        labels: list[str],
        champion: Champion,
    ) -> Scores:
        scores = Scores(
            evaluate_generation_task(
                model_dir, splits.test_path, config.evaluate, config.model.device
            )
        )
        if champion.model_dir is not None:
            scores.champion = evaluate_generator(
                TextGenerator(champion.model_dir, config.model.device).generate,
                splits.test_path,
                config.evaluate,
            )
        return scores

    def plots(self, candidate: EvalResult, run_dir: Path) -> list[Path]:
        return []


KINDS: dict[str, type[TaskKind]] = {
    "classification": ClassificationKind,
    "generation": GenerationKind,
}


def kind_for(config: RetrainConfig) -> TaskKind:
    """The one place the run's task type is looked at."""
    return KINDS[config.model.task]()
