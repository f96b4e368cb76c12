"""Loaded models that predict: a classifier, a generator, and the loader that picks one.

A trained folder (written by `tasks.train`) holds the adapter or full weights, the tokenizer,
`tunegate.json` (which base model, task, method, prompt) and, for classification, `labels.json`.
`load_trained` rebuilds the model from them; these classes batch the inputs, move them to the
model's device and give back plain Python / numpy results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.models.card import ModelCard, ModelSettings, read_labels
from tasks.models.generation import encode_prompt, generate_from_ids, prompt_parts
from tasks.models.loading import fix_pad_token, load_trained, load_untuned, model_device


class TextClassifier:
    """A loaded classifier: `predict(texts)` gives labels, `predict_proba(texts)` probabilities."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        model_dir = Path(model_dir)
        card = ModelCard.read(model_dir)
        tokenizer, model = load_trained(model_dir, device, card)
        self._setup(tokenizer, model, read_labels(model_dir), card.max_length)

    def _setup(self, tokenizer: Any, model: Any, labels: list[str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.labels: list[str] = labels
        self.max_length: int = max_length

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The one batched classify path: evaluation, the adversarial search and serving."""
        import torch

        device = model_device(self.model)
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                logits = self.model(**batch).logits
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def quantize_int8(self) -> int:
        """Replace the linear layers by PyTorch's dynamic int8 ones (CPU only); returns how many
        were replaced. Scores change slightly, so a label can flip near a decision boundary."""
        import warnings

        import torch

        if model_device(self.model).type != "cpu":
            raise ValueError(
                "serving.quantize=int8 runs on CPU only; this model is on "
                f"{model_device(self.model)}: set serving.quantize: none (or model.device: cpu)"
            )
        before = sum(isinstance(m, torch.nn.Linear) for m in self.model.modules())
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated for torchao
            warnings.simplefilter("ignore")
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        return before - sum(type(m) is torch.nn.Linear for m in self.model.modules())

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        proba = self.predict_proba(texts, batch_size)
        return [self.labels[i] for i in proba.argmax(-1)]


class TextGenerator:
    """A loaded generation model: `generate(texts)` writes one answer per input text.

    The prompt is built exactly as in training (same template or chat template, same input
    budget), decoding is greedy, at most `max_new_tokens` (from training) per answer."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        model_dir = Path(model_dir)
        card = ModelCard.read(model_dir)
        tokenizer, model = load_trained(model_dir, device, card)
        self._setup(model, tokenizer, card.model_settings())

    @classmethod
    def untuned(cls, settings: ModelSettings) -> TextGenerator:
        """The base model as it is, prompted exactly as a fine-tuned one: the zero-shot baseline.
        It runs on `settings.device`."""
        tokenizer, model = load_untuned(settings, device=settings.device)
        generator = cls.__new__(cls)
        generator._setup(model, tokenizer, settings)
        return generator

    def _setup(self, model: Any, tokenizer: Any, settings: ModelSettings) -> None:
        self.model = model.eval()
        self.tokenizer = fix_pad_token(tokenizer)
        self.settings = settings
        self.parts = prompt_parts(tokenizer, settings)

    def generate(self, texts: list[str], batch_size: int = 16) -> list[str]:
        budget = self.settings.max_length - len(self.parts[0]) - len(self.parts[1])
        prompts = [encode_prompt(self.tokenizer, self.parts, str(t), budget)[0] for t in texts]
        return generate_from_ids(
            self.model, self.tokenizer, prompts, self.settings.max_new_tokens, batch_size
        )


def load_predictor(model_dir: Path, device: str = "auto") -> TextClassifier | TextGenerator:
    """The right loader for the folder's task."""
    if ModelCard.read(Path(model_dir)).task == "generation":
        return TextGenerator(Path(model_dir), device)
    return TextClassifier(Path(model_dir), device)
