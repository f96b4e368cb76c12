"""The MLflow pyfunc around a trained model folder.

Registered versions store the folder as the `model_dir` artifact; loading goes through
`tasks.models.load_predictor`, so the adapter is applied to the base model named in
`tunegate.json` (a version stores megabytes, not the base weights) and the model runs on CUDA
when the serving machine has it. The class path `tasks.serving.TunegatePyfunc` is recorded in
every registered version: keep it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from tasks.models import TextGenerator, load_predictor


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
