"""One typed config for the retrain flow, composed of each stage's own settings.

Loaded from YAML, overridden with dotted `--set key=value` pairs whose values parse as YAML, and
validated once, before any work starts. Every problem is reported on one line that names the key
(`train.epochs: Input should be a valid number`) or the path; `ConfigError` carries it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.adversarial import AdversarialSettings
from tasks.augment import AugmentSettings
from tasks.evaluate import EvaluateSettings
from tasks.feedback import FeedbackSettings, WebhookSettings
from tasks.gate import GateSettings
from tasks.load import SUPPORTED_SUFFIXES, DataSettings
from tasks.metrics import name_key
from tasks.models import ModelSettings
from tasks.monitor import MonitorSettings
from tasks.pii import PIISettings
from tasks.registry import MLflowSettings
from tasks.review.settings import ReviewSettings
from tasks.search import SearchSettings
from tasks.serving import ServingSettings
from tasks.split import SplitSettings
from tasks.storage import StorageSettings
from tasks.train import LoraSettings, TrainSettings
from tasks.validate import ValidateSettings


class RetrainConfig(BaseModel):
    """Everything one retrain needs. Defaults live in the stage settings models."""

    model_config = ConfigDict(extra="forbid")

    data: DataSettings
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    pii: PIISettings = Field(default_factory=PIISettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    adversarial: AdversarialSettings = Field(default_factory=AdversarialSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    work_dir: Path = Field(
        default=Path(".tunegate/runs"), description="Folder for each run's files."
    )

    @model_validator(mode="after")
    def _files_exist(self) -> RetrainConfig:
        for key, path in (("data.path", self.data.path), ("data.test_path", self.data.test_path)):
            if path is None:
                continue
            if not Path(path).is_file():
                raise ValueError(f"{key}: file not found: {path}")
            if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ValueError(
                    f"{key}: unsupported file type '{Path(path).suffix}'; use .jsonl, .csv or .parquet"
                )
        return self

    @model_validator(mode="after")
    def _task_matches_data(self) -> RetrainConfig:
        if self.model.task == "generation" and not self.data.target_column:
            raise ValueError(
                "data.target_column: required with model.task: generation (the column holding "
                "the text to write, e.g. summary)"
            )
        if self.model.task == "classification" and self.data.target_column:
            raise ValueError(
                "data.target_column: set, but model.task is classification; set "
                "model.task: generation, or remove data.target_column to train on data.label_column"
            )
        return self

    @model_validator(mode="after")
    def _remote_training_needs_a_store(self) -> RetrainConfig:
        if self.train.work_pool and not self.storage.url:
            raise ValueError(
                "storage.url: required when train.work_pool is set (a store every worker "
                "reaches, e.g. s3://bucket/tunegate)"
            )
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for MLflow params (the PII salt is not a key: it is read from
        the environment or a Prefect Secret block, see tasks.pii.salt)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            # a dict keyed by user strings (labels in gate.class_min_f1, columns in
            # validate.regexes) is one JSON param: its keys are no safe part of a param name
            if isinstance(value, dict) and any(k != name_key(k) for k in value):
                out[prefix] = json.dumps(value, ensure_ascii=False, sort_keys=True)
            elif isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json", by_alias=True))
        return out


S = TypeVar("S", bound=BaseModel)


class ConfigError(Exception):
    """The config cannot be used; the message is one line naming the key or file."""


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=1")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(keys)}: '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def _first_error(exc: ValidationError) -> str:
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]).replace("validate_", "validate")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Configuration')"
        messages.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(messages)


def _read_raw(path: Path | None, overrides: list[str] | None) -> dict:
    """The YAML file (optional) as a dict, with the `--set` overrides applied."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config: file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return apply_overrides(raw, overrides or [])


def load_config(path: Path | None, overrides: list[str] | None = None) -> RetrainConfig:
    """YAML file (optional) + overrides -> validated config, or `ConfigError`."""
    raw = _read_raw(path, overrides)
    if "data" not in raw:
        raise ConfigError("data.path: required; pass --config FILE or --set data.path=FILE")
    try:
        return RetrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def load_sections(
    path: Path | None, overrides: list[str] | None, sections: dict[str, type[BaseModel]]
) -> dict[str, BaseModel]:
    """Some sections of the config file, each validated by its own settings model.

    For the commands that run one stage alone (`scrub`, `augment`, the registry commands): they
    read the same `--config` / `--set` as `tunegate run` but need no `data.path`. Errors name
    the key like `load_config`'s, prefixed with the section (`augment.ratio: ...`).
    """
    raw = _read_raw(path, overrides)
    out: dict[str, BaseModel] = {}
    for name, model in sections.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: must be a mapping of keys, got {section!r}")
        try:
            out[name] = model.model_validate(section)
        except ValidationError as exc:
            raise ConfigError(f"{name}." + _first_error(exc)) from None
    return out


def load_section(path: Path | None, overrides: list[str] | None, section: str, model: type[S]) -> S:
    """One section of the config file (see `load_sections`)."""
    return load_sections(path, overrides, {section: model})[section]  # type: ignore[return-value]


def load_mlflow_settings(path: Path | None, overrides: list[str] | None = None) -> MLflowSettings:
    """Only the `mlflow` section (tracking URI, model name), for the registry commands."""
    return load_section(path, overrides, "mlflow", MLflowSettings)
