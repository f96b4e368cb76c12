"""Serving: the MLflow pyfunc around a trained model folder, and the model server's settings.

Registered versions store the folder as the `model_dir` artifact; loading goes through
`tasks.models.load_predictor`, so the adapter is applied to the base model named in
`tunegate.json` (a version stores megabytes, not the base weights) and the model runs on CUDA
when the serving machine has it. The class path `tasks.serving.TunegatePyfunc` is recorded in
every registered version: keep it.

`ServingSettings` is the `serving` section read by `tunegate serve-model`
(`deployments/model_server/`); `prediction_log_url` is the one place that resolves where the
prediction log lives, for the server that writes it and the monitor that reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import mlflow.pyfunc
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.models import TextGenerator, load_predictor

# The version tag the parity run writes (tasks.parity.int8_tags) and serving.quantize: auto reads.
INT8_SERVE_TAG = "serve_int8"


class ServingSettings(BaseModel):
    """The model server (`tunegate serve-model`)."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(
        default="champion",
        min_length=1,
        description="Registry alias to serve (`models:/<mlflow.registered_model>@<alias>`), "
        "e.g. 'challenger' for a shadow server.",
    )
    quantize: Literal["auto", "none", "int8"] = Field(
        default="auto",
        description="int8: a classifier loaded on CPU answers through ONNX Runtime with int8 "
        "weights (per output channel; activations quantised per batch), about 2.7x the float "
        "model's texts/s; its labels may differ from the evaluated model's on a few inputs. "
        "auto: int8 for a version whose parity run measured its int8 labels agreeing with the "
        "evaluated ones on at least evaluate.parity_min_agreement of the test split (version "
        "tag serve_int8), else the evaluated weights as they are (none). int8 is refused for "
        "generation models and on a GPU; auto serves those as none.",
    )
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    scrub_inputs: bool = Field(
        default=True,
        description="Scrub inputs with the PII stage before the model sees them (training only "
        "saw scrubbed text). The prediction log is scrubbed either way.",
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Most inputs the model runs on in one dynamic batch."
    )
    max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        description="How long the first request of a batch waits for others to join (ms).",
    )
    max_inputs: int = Field(
        default=256, ge=1, description="Most inputs in one request; more is refused with 413."
    )
    max_input_chars: int = Field(
        default=20_000, ge=1, description="Longest accepted input text (characters); else 422."
    )
    low_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Classification: a prediction whose score is below this is counted as "
        "low-confidence in /metrics.",
    )
    reload_interval_s: float = Field(
        default=30.0, gt=0, description="How often the alias is polled for a new version (s)."
    )
    follow_events: bool = Field(
        default=True,
        description="Also reload at once on the Prefect event `tunegate.champion.moved` when a "
        "Prefect API is configured (polling works without it).",
    )
    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API for the champion event and the feedback event; default: the "
        "environment's PREFECT_API_URL.",
    )
    log_url: str | None = Field(
        default=None,
        description="Folder or fsspec URL of the prediction log; default <work_dir>/predictions.",
    )
    log_sample_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of predictions written to the log as the monitor's sample.",
    )
    log_unsampled: bool = Field(
        default=False,
        description="Also write the predictions outside the sample (with sampled: false), so "
        "feedback reaching any replica finds any prediction id; on with several replicas.",
    )
    log_flush_s: float = Field(
        default=1.0, gt=0, description="Flush the buffered prediction log at least this often (s)."
    )
    log_flush_records: int = Field(
        default=500, ge=1, description="Flush the prediction log once this many records wait."
    )
    feedback_window_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long a prediction id accepts feedback after the answer (s).",
    )
    feedback_max_ids: int = Field(
        default=200_000,
        ge=1,
        description="Most recent predictions kept in memory for feedback (oldest forgotten "
        "first; the log is searched after that).",
    )


FLAGS_FOLDER = "flags"  # <feedback.store>/flags: a store of its own, never merged into training


def flags_store_url(feedback_store: str) -> str:
    """Where `/v1/feedback` keeps "wrong" flags without a label: beside the corrections, read by
    the monitor (live accuracy) but never by a retrain, since a flag is not a training row."""
    return f"{feedback_store.rstrip('/')}/{FLAGS_FOLDER}"


def prediction_log_url(settings: ServingSettings, work_dir: Path) -> str:
    """`serving.log_url`, else `<work_dir>/predictions` (absolute, so replicas and the monitor
    started from another directory agree)."""
    if settings.log_url:
        return settings.log_url
    return str((Path(work_dir) / "predictions").resolve())


class TunegatePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: a DataFrame with a `text` column in; out, `label` and `score` columns for
    a classifier, an `output` column for a generation model."""

    def load_context(self, context) -> None:  # noqa: ANN001 - mlflow's PythonModelContext
        self.classifier = load_predictor(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:  # noqa: ANN001
        texts = (
            model_input["text"].astype(str).tolist()
            if isinstance(model_input, pd.DataFrame)
            else [str(t) for t in model_input]
        )
        if isinstance(self.classifier, TextGenerator):
            return pd.DataFrame({"output": self.classifier.generate(texts)})
        proba = self.classifier.predict_proba(texts)
        return pd.DataFrame(
            {
                "label": [self.classifier.labels[i] for i in proba.argmax(-1)],
                "score": proba.max(-1) if len(proba) else [],
            }
        )
