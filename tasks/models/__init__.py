"""Models: which base model, where it loads from and runs, what a trained folder holds, prompting,
generation and prediction.

The bottom of the model stack: training, evaluation, the baseline, augmentation, the adversarial
search and the MLflow pyfunc all load and describe models through this package, so it imports no
other stage. `card` (settings, `tunegate.json`) -> `embedded` (base models shipped in packages;
a GGUF file converted once into the cache) -> `loading` (base models, trained folders,
device and dtype) -> `generation` (prompts, the one batched generation core) -> `predict`
(`TextClassifier`, `TextGenerator`).
"""

from tasks.models.card import (
    CARD_FILE,
    LABELS_FILE,
    PROMPT_SLOT,
    ModelCard,
    ModelError,
    ModelSettings,
    read_labels,
    write_labels,
)
from tasks.models.generation import (
    encode_prompt,
    generate_batched,
    generate_from_ids,
    prompt_parts,
)
from tasks.models.loading import (
    EMBEDDED_MODELS,
    WEIGHT_FILES,
    fix_pad_token,
    inference_dtype,
    load_base_model,
    load_encoder,
    load_trained,
    load_untuned,
    model_device,
    place,
    resolve_base_model,
    resolve_device,
)
from tasks.models.predict import TextClassifier, TextGenerator, load_predictor

__all__ = [
    "CARD_FILE",
    "EMBEDDED_MODELS",
    "LABELS_FILE",
    "PROMPT_SLOT",
    "WEIGHT_FILES",
    "ModelCard",
    "ModelError",
    "ModelSettings",
    "TextClassifier",
    "TextGenerator",
    "encode_prompt",
    "fix_pad_token",
    "generate_batched",
    "generate_from_ids",
    "inference_dtype",
    "load_base_model",
    "load_encoder",
    "load_predictor",
    "load_trained",
    "load_untuned",
    "model_device",
    "place",
    "prompt_parts",
    "read_labels",
    "resolve_base_model",
    "resolve_device",
    "write_labels",
]
