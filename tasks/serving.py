"""Load a trained model folder and predict; the MLflow pyfunc wrapper around it.

A model folder (written by `tasks.train`) holds the adapter or full weights, the tokenizer,
`tunegate.json` (which base model, task, method, prompt) and, for classification, `labels.json`.
The adapter is applied to the base model named there, so a registered version stores megabytes,
not the base weights; a folder with `merged/` (train.merge_adapter) loads on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.pyfunc
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tasks.train import ModelSettings


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
        if meta.get("merged"):
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir / "merged")
        elif meta["method"] in ("lora", "qlora"):
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


class TextGenerator:
    """A loaded generation model: `generate(texts)` writes one answer per input text.

    The prompt is built exactly as in training (same template or chat template, same input
    budget), decoding is greedy, at most `max_new_tokens` (from training) per answer."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tasks.train import ModelSettings, resolve_base_model

        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "tunegate.json").read_text())
        settings = ModelSettings(
            base_model=meta["base_model"],
            task="generation",
            max_length=meta["max_length"],
            prompt_style=meta["prompt_style"],
            prompt_template=meta["prompt_template"],
            max_new_tokens=meta["max_new_tokens"],
        )
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if meta.get("merged"):
            model = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
        elif meta["method"] in ("lora", "qlora"):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(resolve_base_model(meta["base_model"]))
            model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(model_dir)
        self._setup(model, tokenizer, settings)

    @classmethod
    def untuned(cls, settings: ModelSettings) -> TextGenerator:
        """The base model as it is, prompted exactly as a fine-tuned one: the zero-shot baseline."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tasks.train import resolve_base_model

        path = resolve_base_model(settings.base_model)
        generator = cls.__new__(cls)
        generator._setup(
            AutoModelForCausalLM.from_pretrained(path),
            AutoTokenizer.from_pretrained(path),
            settings,
        )
        return generator

    def _setup(self, model, tokenizer, settings: ModelSettings) -> None:  # noqa: ANN001
        from tasks.train import prompt_parts

        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.parts = prompt_parts(tokenizer, settings)

    def generate(self, texts: list[str], batch_size: int = 16) -> list[str]:
        from tasks.train import encode_prompt, generate_texts

        budget = self.settings.max_length - len(self.parts[0]) - len(self.parts[1])
        prompts = [encode_prompt(self.tokenizer, self.parts, str(t), budget)[0] for t in texts]
        return generate_texts(
            self.model, self.tokenizer, prompts, self.settings.max_new_tokens, batch_size
        )


def load_predictor(model_dir: Path) -> TextClassifier | TextGenerator:
    """The right loader for the folder's task."""
    meta = json.loads((Path(model_dir) / "tunegate.json").read_text())
    if meta.get("task", "classification") == "generation":
        return TextGenerator(Path(model_dir))
    return TextClassifier(Path(model_dir))


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
