"""Model-based paraphrase: a seq2seq or causal LM rewrites texts, sampled."""

from __future__ import annotations

from tasks.augment.settings import AugmentError, ParaphraseSettings
from tasks.augment.strategies import PLACEHOLDER
from tasks.models import place, resolve_base_model, resolve_device
from tasks.progress import Progress


class Paraphraser:
    """A seq2seq or causal LM that rewrites texts; rejects rewrites that drop placeholders."""

    def __init__(self, settings: ParaphraseSettings, seed: int) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        self.settings = settings
        source = resolve_base_model(str(settings.model))
        try:
            config = AutoConfig.from_pretrained(source)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.seq2seq = bool(config.is_encoder_decoder)
            loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
            self.model = loader.from_pretrained(source).eval()
        except (OSError, ValueError) as exc:
            raise AugmentError(
                f"augment.paraphrase.model '{settings.model}' could not be loaded offline: "
                f"{str(exc).splitlines()[0]}; set it to a local model directory or null"
            ) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._torch = torch
        torch.manual_seed(seed)
        self.model = place(self.model, resolve_device("auto"))

    def __call__(self, texts: list[str]) -> list[str | None]:
        out: list[str | None] = []
        s = self.settings
        progress = Progress("augment-paraphrase", total=len(texts))
        for start in range(0, len(texts), s.batch_size):
            batch = texts[start : start + s.batch_size]
            prompts = [s.prompt.format(text=t) for t in batch]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            with self._torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=s.temperature,
                    top_p=0.95,
                    max_new_tokens=s.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            if not self.seq2seq:
                generated = generated[:, enc["input_ids"].shape[1] :]
            for source, ids in zip(batch, generated, strict=True):
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                text = text.split("\n")[0].strip()
                out.append(text if _acceptable_paraphrase(source, text) else None)
            progress.advance(len(batch))
        progress.done()
        return out


def _acceptable_paraphrase(source: str, text: str) -> bool:
    if not text or text == source or not 0.5 <= len(text) / max(len(source), 1) <= 2.0:
        return False
    return sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(text))
