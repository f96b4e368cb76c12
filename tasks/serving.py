"""Load a trained model folder and predict; the MLflow pyfunc wrapper around it.

A model folder (written by `tasks.train`) holds the adapter or full weights, the tokenizer,
`tunegate.json` (which base model, task, method, prompt) and, for classification, `labels.json`.
The adapter is applied to the base model named there, so a registered version stores megabytes,
not the base weights; a folder with `merged/` (train.merge_adapter) loads on its own.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from tasks.models import (
    ModelCard,
    ModelSettings,
    encode_prompt,
    generate_from_ids,
    prompt_parts,
    read_labels,
    resolve_base_model,
)


class TextClassifier:
    """A loaded classifier: `predict(texts)` gives labels, `predict_proba(texts)` probabilities."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        card = ModelCard.read(model_dir)
        self.labels: list[str] = read_labels(model_dir)
        self.max_length: int = card.max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if card.merged:
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir / "merged")
        elif card.method in ("lora", "qlora"):
            from peft import PeftModel

            base = AutoModelForSequenceClassification.from_pretrained(
                resolve_base_model(card.base_model),
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

        model_dir = Path(model_dir)
        card = ModelCard.read(model_dir)
        settings = card.model_settings()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if card.merged:
            model = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
        elif card.method in ("lora", "qlora"):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(resolve_base_model(card.base_model))
            model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(model_dir)
        self._setup(model, tokenizer, settings)

    @classmethod
    def untuned(cls, settings: ModelSettings) -> TextGenerator:
        """The base model as it is, prompted exactly as a fine-tuned one: the zero-shot baseline."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_base_model(settings.base_model)
        generator = cls.__new__(cls)
        generator._setup(
            AutoModelForCausalLM.from_pretrained(path),
            AutoTokenizer.from_pretrained(path),
            settings,
        )
        return generator

    def _setup(self, model, tokenizer, settings: ModelSettings) -> None:  # noqa: ANN001
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.parts = prompt_parts(tokenizer, settings)

    def generate(self, texts: list[str], batch_size: int = 16) -> list[str]:
        budget = self.settings.max_length - len(self.parts[0]) - len(self.parts[1])
        prompts = [encode_prompt(self.tokenizer, self.parts, str(t), budget)[0] for t in texts]
        return generate_from_ids(
            self.model, self.tokenizer, prompts, self.settings.max_new_tokens, batch_size
        )


def load_predictor(model_dir: Path) -> TextClassifier | TextGenerator:
    """The right loader for the folder's task."""
    if ModelCard.read(Path(model_dir)).task == "generation":
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
