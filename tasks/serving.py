"""Load a trained classifier folder and predict; the MLflow pyfunc wrapper around it.

A model folder (written by `tasks.train`) holds the adapter or full weights, the tokenizer,
`labels.json` and `tunegate.json` (which base model, which method). The adapter is applied to the
base model named there, so a registered version stores megabytes, not the base weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd


class TextClassifier:
    """A loaded classifier: `predict(texts)` gives labels, `predict_proba(texts)` probabilities."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tasks.train import resolve_base_model

        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "tunegate.json").read_text())
        self.labels: list[str] = json.loads((model_dir / "labels.json").read_text())
        self.max_length: int = meta["max_length"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if meta["method"] == "lora":
            from peft import PeftModel

            base = AutoModelForSequenceClassification.from_pretrained(
                resolve_base_model(meta["base_model"]),
                num_labels=len(self.labels),
                id2label=dict(enumerate(self.labels)),
                label2id={label: i for i, label in enumerate(self.labels)},
            )
            if base.config.pad_token_id is None:
                base.config.pad_token_id = self.tokenizer.pad_token_id
            self.model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
        else:
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.model.eval()
        self._torch = torch

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                logits = self.model(**batch).logits
                out.append(self._torch.softmax(logits, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        proba = self.predict_proba(texts, batch_size)
        return [self.labels[i] for i in proba.argmax(-1)]


class TunegatePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: a DataFrame with a `text` column in, `label` and `score` columns out."""

    def load_context(self, context) -> None:  # noqa: ANN001 - mlflow's PythonModelContext
        self.classifier = TextClassifier(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:  # noqa: ANN001
        texts = (
            model_input["text"].astype(str).tolist()
            if isinstance(model_input, pd.DataFrame)
            else [str(t) for t in model_input]
        )
        proba = self.classifier.predict_proba(texts)
        return pd.DataFrame(
            {
                "label": [self.classifier.labels[i] for i in proba.argmax(-1)],
                "score": proba.max(-1) if len(proba) else [],
            }
        )
