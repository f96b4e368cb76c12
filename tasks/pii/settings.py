"""What the PII stage scrubs, and how: the settings that `pii:` in the YAML config holds.

Kept free of Presidio and spaCy so that reading a config does not load the detectors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENTITY_TYPES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "DATE_OF_BIRTH",
    "STREET_ADDRESS",
    "ACCOUNT_NUMBER",
    "LOAN_NUMBER",
    "MEDICAL_RECORD_NUMBER",
]

PLACEHOLDER_NAMES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "SSN",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "DATE_OF_BIRTH": "DOB",
    "STREET_ADDRESS": "ADDRESS",
    "ACCOUNT_NUMBER": "ACCOUNT",
    "LOAN_NUMBER": "LOAN",
    "MEDICAL_RECORD_NUMBER": "MRN",
}


class Operator(StrEnum):
    """What replaces a detected value."""

    placeholder = "placeholder"  # <EMAIL_1>, consistent within a record
    mask = "mask"  # every letter and digit becomes '*', separators stay
    hash = "hash"  # <EMAIL_3fa9c01b2e>: salted sha256, the same value everywhere
    drop_row = "drop_row"  # the whole row is quarantined (scrubbed) instead of kept


class PIISettings(BaseModel):
    """Which entities to scrub, how, and how sure a detector must be."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Scrub PII before training and logging.")
    entities: list[str] = Field(
        default_factory=lambda: list(ENTITY_TYPES), description="Entity types to scrub."
    )
    score_threshold: float = Field(
        default=0.3, ge=0, le=1, description="Lowest detector score that counts as a hit."
    )
    operators: dict[str, Operator] = Field(
        default_factory=dict,
        description="Per entity type: placeholder, mask, hash or drop_row (others: placeholder).",
    )
    salt_secret_block: str | None = Field(
        default=None,
        description="Prefect Secret block holding the hash operator's salt, when the "
        "TUNEGATE_PII_SALT variable is not set (the salt itself is never a config key).",
    )
    residual_action: Literal["quarantine", "fail"] = Field(
        default="quarantine",
        description="A residual hit after scrubbing quarantines the row or fails the stage.",
    )
    residual_score_threshold: float = Field(
        default=0.1, ge=0, le=1, description="Threshold of the residual scan (stricter pass)."
    )
    account_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\b(?:account|acct)\.?\s*(?:number|no\.?|#|num)?[:#]?\s{0,2})"
            r"(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{5,24}\b",
        ],
        description="Regexes (case-insensitive) for account numbers.",
    )
    loan_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\bloan\s*(?:number|no\.?|#|id|ref)[:#]?\s{0,2})(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,24}\b",
            r"\bLN-?\d{6,12}\b",
        ],
        description="Regexes (case-insensitive) for loan numbers.",
    )
    medical_record_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?<=\b(?:MRN|medical record\s*(?:number|no\.?|#)?)[:#]?\s{0,2})(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,20}\b",
        ],
        description="Regexes (case-insensitive) for medical-record numbers.",
    )
    processes: int = Field(
        default=2, ge=1, le=16, description="Worker processes for batches of 2,000+ records."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_salt_in_config(cls, value: object) -> object:
        if isinstance(value, dict) and "hash_salt" in value:
            raise ValueError(
                "pii.hash_salt: no longer a config key (config values travel in Prefect and "
                "MLflow parameters); remove it and export TUNEGATE_PII_SALT, or set "
                "pii.salt_secret_block to a Prefect Secret block's name"
            )
        return value

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ENTITY_TYPES)}")
        return value

    @field_validator("operators")
    @classmethod
    def _known_operator_keys(cls, value: dict[str, Operator]) -> dict[str, Operator]:
        unknown = sorted(set(value) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ENTITY_TYPES)}")
        return value

    @field_validator("account_patterns", "loan_patterns", "medical_record_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        import regex

        for pattern in value:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex ({exc})") from None
        return value

    def operator(self, entity: str) -> Operator:
        return self.operators.get(entity, Operator.placeholder)
