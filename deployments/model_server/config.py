"""The sections of the shared config file that the model server reads.

`tunegate serve-model` takes the same `--config` / `--set` as `tunegate run`, but a serving box
has no training data: `data.path` is not required here (only the column names are used, to
write corrections as feedback rows), and no file is checked. A top-level key that `tunegate run`
would not know is still refused, so a typo does not pass silently.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.config import ConfigError, RetrainConfig, _first_error, _read_raw
from tasks.feedback import FeedbackSettings
from tasks.load import DataSettings
from tasks.models import ModelSettings
from tasks.pii import PIISettings
from tasks.registry import MLflowSettings
from tasks.serving import ServingSettings, prediction_log_url


class ServingColumns(DataSettings):
    """`data` as the server reads it: the column names, without the data file."""

    path: Path | None = Field(default=None, description="Not used by the model server.")


class ServeConfig(BaseModel):
    """What `tunegate serve-model` needs of the config; defaults are the stages' own."""

    model_config = ConfigDict(extra="ignore")

    serving: ServingSettings = Field(default_factory=ServingSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    pii: PIISettings = Field(default_factory=PIISettings)
    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    data: ServingColumns = Field(default_factory=ServingColumns)
    work_dir: Path = Field(
        default=RetrainConfig.model_fields["work_dir"].default,
        description=RetrainConfig.model_fields["work_dir"].description,
    )

    @property
    def log_url(self) -> str:
        return prediction_log_url(self.serving, self.work_dir)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.mlflow.registered_model}@{self.serving.alias}"


def load_serve_config(path: Path | None, overrides: list[str] | None = None) -> ServeConfig:
    """YAML file (optional) + `--set` overrides -> the server's config, or `ConfigError`."""
    raw = _read_raw(path, overrides)
    known = {f.alias or name for name, f in RetrainConfig.model_fields.items()}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown key (check the spelling; see README 'Configuration')"
        )
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
