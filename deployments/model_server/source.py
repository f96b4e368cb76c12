"""Which model is served: the version behind the alias, loaded beside the one in use, swapped.

`RegistrySource` resolves `models:/<name>@<alias>` to a version number and loads that version's
model folder through `tasks.models.load_predictor` on `model.device`, exactly as evaluation
does. `ModelHolder` keeps the current `Served` model; a batch takes its reference once when it
starts, so a swap never changes the model under a running batch, and the old model is freed
when its last batch is done. Tests use an in-memory source with the same two methods.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("tunegate.model_server")


class NoModel(Exception):
    """Nothing is served yet (the alias does not exist, or its version did not load)."""


@dataclass
class Served:
    """One loaded version. `answer(texts)` gives per text `{"label", "score"}` (classification)
    or `{"output"}` (generation)."""

    name: str
    version: str
    task: str
    labels: list[str]
    answer: Callable[[list[str]], list[dict]]
    loaded_at: float = 0.0
    extra: dict = field(default_factory=dict)


class ModelSource(Protocol):
    def current_version(self) -> str | None: ...

    def load(self, version: str) -> Served: ...


def answer_function(predictor: object) -> tuple[str, list[str], Callable[[list[str]], list[dict]]]:
    """(task, labels, answer) of a loaded `TextClassifier` / `TextGenerator`."""
    from tasks.models import TextGenerator

    if isinstance(predictor, TextGenerator):
        return "generation", [], lambda texts: [{"output": o} for o in predictor.generate(texts)]
    labels = list(predictor.labels)

    def classify(texts: list[str]) -> list[dict]:
        proba = predictor.predict_proba(texts)
        best = proba.argmax(-1)
        return [
            {"label": labels[i], "score": float(p[i])} for i, p in zip(best, proba, strict=True)
        ]

    return "classification", labels, classify


class RegistrySource:
    """The MLflow registry: alias -> version, version -> loaded model on `device`."""

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        alias: str,
        device: str = "auto",
        quantize: str = "none",
    ) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.alias = alias
        self.device = device
        self.quantize = quantize

    def current_version(self) -> str | None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            found = MlflowClient(self.tracking_uri).get_model_version_by_alias(
                self.name, self.alias
            )
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(found.version)

    def load(self, version: str) -> Served:
        """Download the version into a temporary folder, load it, remove the folder (the weights
        are in memory by then)."""
        import time

        import mlflow.artifacts
        from mlflow.tracking import MlflowClient

        from tasks.models import TextClassifier, load_predictor

        tmp = Path(tempfile.mkdtemp(prefix="tunegate-serve-"))
        try:
            # A `models:/` URI would be resolved against the process's default registry, not
            # this one (download_artifacts ignores registry_uri for it): resolve it here.
            client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=client.get_model_version_download_uri(self.name, version),
                    dst_path=str(tmp),
                    tracking_uri=self.tracking_uri,
                )
            )
            found = sorted(p.parent for p in local.rglob("tunegate.json"))
            if not found:
                raise NoModel(
                    f"models:/{self.name}/{version} holds no tunegate model folder "
                    "(tunegate.json); register it with `tunegate run`"
                )
            predictor = load_predictor(found[0], self.device)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        extra = {"quantize": self._quantize_mode(client, version, predictor)}
        if extra["quantize"] == "int8":
            if not isinstance(predictor, TextClassifier):
                raise ValueError(
                    f"serving.quantize=int8 applies to classifiers; models:/{self.name}/"
                    f"{version} is a generation model: set serving.quantize: none"
                )
            extra["quantized_layers"] = predictor.quantize_int8()
        task, labels, answer = answer_function(predictor)
        return Served(self.name, version, task, labels, answer, loaded_at=time.time(), extra=extra)

    def _quantize_mode(self, client: Any, version: str, predictor: object) -> str:  # noqa: ANN401
        """`serving.quantize`, with auto resolved: int8 where this version's parity run found
        its int8 labels agreeing enough (tag `serve_int8`) and it is a classifier on CPU."""
        from tasks.models import TextClassifier, model_device
        from tasks.serving import INT8_SERVE_TAG

        if self.quantize != "auto":
            return self.quantize
        tags = client.get_model_version(self.name, version).tags or {}
        cpu_classifier = (
            isinstance(predictor, TextClassifier) and model_device(predictor.model).type == "cpu"
        )
        return "int8" if cpu_classifier and tags.get(INT8_SERVE_TAG) == "true" else "none"


class ModelHolder:
    """The current model; replaced whole, never changed in place."""

    def __init__(self) -> None:
        self._current: Served | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Served | None:
        return self._current

    def swap(self, served: Served) -> Served | None:
        with self._lock:
            old, self._current = self._current, served
        return old
