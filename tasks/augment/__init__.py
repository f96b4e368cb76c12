"""Augment the training split with label-preserving rewrites, each tagged with its strategy.

Strategies (each with its own settings section under `augment`):
- `char_noise`: typos, keyboard slips, casing and punctuation noise, the way real notes arrive;
- `word_edit`: swap neighbouring words, delete filler words, insert filler words;
- `synonym`: whole words replaced with nearest neighbours in the base model's own input-embedding
  space (offline, no lexicon download), with guards against antonyms and inflections;
- `entity_swap`: money amounts and dates replaced with other realistic values, and (optionally)
  PII placeholders (`<PERSON_1>`) replaced consistently with fake values from Faker -- never with
  the scrubbed originals, which this stage never sees;
- `paraphrase`: a configured transformers model rewrites the text; skipped (logged) when none is
  configured.
The label of every new row is its source row's label. Only the training split is augmented, and
new rows that are near-duplicates of a validation or test text are dropped, so nothing leaks into
evaluation. The `source` column says where a row came from (`original` or the strategy name).

Layout: `settings` (the config section, result and error), `strategies` (char noise, word
edits, entity swaps), `synonyms` (embedding neighbours), `paraphrase` (the model rewriter) and
`frame` (planning rows per class, near-duplicate removal, the file and the Prefect task).
"""

from tasks.augment.frame import (
    augment_file,
    augment_frame,
    augment_task,
    class_targets,
    near_duplicate_mask,
    sample_table,
)
from tasks.augment.paraphrase import Paraphraser
from tasks.augment.settings import (
    STRATEGIES,
    AugmentError,
    AugmentResult,
    AugmentSettings,
    CharNoiseSettings,
    EntitySwapSettings,
    ParaphraseSettings,
    Strategy,
    SynonymSettings,
    WordEditSettings,
)
from tasks.augment.strategies import char_noise, entity_swap, word_edit
from tasks.augment.synonyms import embedding_synonyms, synonym_swap

__all__ = [
    "STRATEGIES",
    "AugmentError",
    "AugmentResult",
    "AugmentSettings",
    "CharNoiseSettings",
    "EntitySwapSettings",
    "ParaphraseSettings",
    "Paraphraser",
    "Strategy",
    "SynonymSettings",
    "WordEditSettings",
    "augment_file",
    "augment_frame",
    "augment_task",
    "char_noise",
    "class_targets",
    "embedding_synonyms",
    "entity_swap",
    "near_duplicate_mask",
    "sample_table",
    "synonym_swap",
    "word_edit",
]
