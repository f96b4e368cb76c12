"""Loaded models that predict: a classifier, a generator, and the loader that picks one.

A trained folder (written by `tasks.train`) holds the adapter or full weights, the tokenizer,
`tunegate.json` (which base model, task, method, prompt) and, for classification, `labels.json`.
`load_trained` rebuilds the model from them; these classes batch the inputs, move them to the
model's device and give back plain Python / numpy results.
"""

from __future__ import annotations

from collections.abc import Iterator
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
        self._session: Any = None  # an ONNX Runtime session once quantize_int8() ran
        self._session_inputs: list[str] = []  # the tokenizer outputs that session takes

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The one batched classify path: evaluation, the adversarial search and serving."""
        if self._session is not None:
            return self._predict_proba_onnx(texts, batch_size)
        import torch

        device = model_device(self.model)
        out = []
        with torch.inference_mode():
            for batch in self._batches(texts, batch_size, "pt"):
                logits = self.model(**batch.to(device)).logits
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def _batches(self, texts: list[str], batch_size: int, tensors: str) -> Iterator[Any]:
        """The tokenised batches both paths score: truncated to the card's max_length."""
        for start in range(0, len(texts), batch_size):
            yield self.tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors=tensors,
            )

    def quantize_int8(self) -> int:
        """Serve through ONNX Runtime with int8 weights (CPU only); returns how many weight
        matrices were quantised.

        The loaded model is exported to ONNX, its MatMul weights quantised per output channel
        (`onnxruntime.quantization.quantize_dynamic`; activations are quantised per batch), and
        `predict_proba` runs that graph from then on, with the same tokenisation. Scores change
        slightly, so a label can flip near a decision boundary."""
        import tempfile

        import torch

        if model_device(self.model).type != "cpu":
            raise ValueError(
                "serving.quantize=int8 runs on CPU only; this model is on "
                f"{model_device(self.model)}: set serving.quantize: none (or model.device: cpu)"
            )
        with tempfile.TemporaryDirectory(prefix="tunegate-int8-") as tmp:
            session, quantized = _int8_session(self, Path(tmp), torch.get_num_threads())
        self._session = session
        self._session_inputs = [i.name for i in session.get_inputs()]
        return quantized

    def _predict_proba_onnx(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        for batch in self._batches(texts, batch_size, "np"):
            inputs = {n: batch[n].astype(np.int64) for n in self._session_inputs}
            (logits,) = self._session.run(None, inputs)
            logits = logits - logits.max(-1, keepdims=True)
            exp = np.exp(logits)
            out.append(exp / exp.sum(-1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        proba = self.predict_proba(texts, batch_size)
        return [self.labels[i] for i in proba.argmax(-1)]


def _int8_session(classifier: TextClassifier, folder: Path, threads: int) -> tuple[Any, int]:
    """(an ONNX Runtime session of the classifier with int8 weights, quantised matrices)."""
    import warnings

    import onnx
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    example = classifier.tokenizer(
        ["an example input", "a second, longer example input"], padding=True, return_tensors="pt"
    )
    names = list(example.keys())

    class Logits(torch.nn.Module):  # positional inputs in `names` order -> logits
        def __init__(self, model: Any) -> None:  # noqa: ANN401
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                Logits(classifier.model.eval()),
                tuple(example[n] for n in names),
                str(folder / "float.onnx"),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
        quantize_dynamic(
            folder / "float.onnx",
            folder / "int8.onnx",
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    except Exception as exc:  # noqa: BLE001 - named below; the float model keeps serving
        raise ValueError(
            f"serving.quantize=int8: this model could not be exported to ONNX "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "set serving.quantize: none"
        ) from None
    graph = onnx.load(str(folder / "int8.onnx")).graph
    quantized = sum(
        t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2 for t in graph.initializer
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: a server's request threads need the cores
    # between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(folder / "int8.onnx"), options, providers=["CPUExecutionProvider"]
    )
    return session, quantized


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
