"""The `search` config section: budget, sampler, pruner, storage and the search space.

A space entry is `key: {type, low, high, log, choices}`; `key` is any `train.*` or `lora.*`
setting (a bare name means `train.<name>`). Every entry is checked when the config loads, against
the very settings model a trial will build, so a bound no trial could use is refused then (naming
the key), not after an hour of trials.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.train.settings import LoraSettings, TrainSettings

SECTIONS: dict[str, type[BaseModel]] = {"train": TrainSettings, "lora": LoraSettings}
# Keys that say how or where a run trains, not how well: searching them means nothing.
NOT_SEARCHABLE = {
    "train.method",
    "train.work_pool",
    "train.num_processes",
    "train.distributed",
    "train.accelerate_config",
    "train.resume",
    "train.retries",
    "train.precision",
    "train.checkpoint_steps",
    "train.keep_checkpoints",
    "train.logging_steps",
    "lora.target_modules",
    "lora.modules_to_save",
}


class ParamSpec(BaseModel):
    """One searched setting: a float or int range (optionally log-scaled) or a list of choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"] = Field(
        description="float / int: a range from low to high; categorical: one of choices."
    )
    low: float | None = Field(default=None, description="Lowest value (float, int).")
    high: float | None = Field(default=None, description="Highest value (float, int).")
    log: bool = Field(default=False, description="Sample on a log scale (float, int; low > 0).")
    choices: list[float | int | str | bool] | None = Field(
        default=None, description="The values to choose from (categorical)."
    )

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("type categorical needs choices: [a, b, ...]")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("type int needs whole-number low and high")
        return self

    def extremes(self) -> list[float | int | str | bool]:
        """The values that must all be valid settings for the space to be usable."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


def _float(low: float, high: float, log: bool = False) -> ParamSpec:
    return ParamSpec(type="float", low=low, high=high, log=log)


def _int(low: int, high: int) -> ParamSpec:
    return ParamSpec(type="int", low=low, high=high)


def _choice(*values: float | int) -> ParamSpec:
    return ParamSpec(type="categorical", choices=list(values))


# Chosen on validation data only (README "Hyperparameter search" gives the figures): on the
# 40-intent set the LoRA learning rate peaked near 1e-3 on validation with 3e-4 and 3e-3 both
# lower, and 5 epochs beat 3; the ranges bracket those optima on both sides.
DEFAULT_SPACES: dict[str, dict[str, ParamSpec]] = {
    "lora": {
        "train.learning_rate": _float(2e-4, 4e-3, log=True),
        "train.epochs": _int(2, 6),
        "lora.r": _choice(4, 8, 16, 32),
        "lora.alpha": _choice(8, 16, 32, 64),
        "train.batch_size": _choice(8, 16, 32),
        "train.warmup_fraction": _float(0.0, 0.2),
    },
    "qlora": {
        "train.learning_rate": _float(1e-4, 2e-3, log=True),
        "train.epochs": _int(1, 4),
        "lora.r": _choice(8, 16, 32, 64),
        "lora.alpha": _choice(16, 32, 64),
        "train.batch_size": _choice(4, 8, 16),
        "train.warmup_fraction": _float(0.0, 0.2),
    },
    "full": {
        "train.learning_rate": _float(1e-5, 2e-4, log=True),
        "train.epochs": _int(1, 4),
        "train.batch_size": _choice(8, 16, 32),
        "train.warmup_fraction": _float(0.0, 0.2),
    },
}


def full_key(key: str) -> str:
    """`learning_rate` -> `train.learning_rate`; dotted keys stay as they are."""
    return key if "." in key else f"train.{key}"


def check_key(key: str) -> str:
    """The dotted key, or a ValueError naming it and what may be searched."""
    dotted = full_key(key)
    section, _, field = dotted.partition(".")
    model = SECTIONS.get(section)
    if model is None or field not in model.model_fields or "." in field:
        raise ValueError(
            f"{key}: unknown setting; search a train.* or lora.* key such as "
            "train.learning_rate, train.epochs, lora.r (see README 'Configuration')"
        )
    if dotted in NOT_SEARCHABLE:
        raise ValueError(f"{key}: {dotted} says how a run trains; it cannot be searched")
    return dotted


class SearchSettings(BaseModel):
    """Hyperparameter search: the train stage as an Optuna study, best trial as the candidate."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False, description="Run a search instead of one training run (train stage)."
    )
    trials: int = Field(
        default=12,
        ge=1,
        description="Trial budget of the study; COMPLETE and PRUNED trials of a resumed study "
        "count against it.",
    )
    timeout_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Start no new trial after this many minutes of this run's search.",
    )
    parallel: int = Field(
        default=1,
        ge=1,
        description="Trials running at once (each is a Prefect task; on train.work_pool each is "
        "a training deployment run).",
    )
    sampler: Literal["tpe", "random"] = Field(
        default="tpe", description="Optuna sampler: tpe (Tree-structured Parzen) or random."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median",
        description="Stops hopeless trials from their validation metric after each evaluation.",
    )
    startup_trials: int = Field(
        default=2,
        ge=0,
        description="Median pruner: complete trials before any trial is pruned.",
    )
    warmup_evals: int = Field(
        default=1,
        ge=0,
        description="Evaluations every trial gets before it can be pruned (hyperband: its "
        "minimum resource).",
    )
    preload_workers: bool = Field(
        default=True,
        description="Fork each local single-process trial's worker from a process that imported "
        "torch, transformers and peft once (Python's forkserver), saving 5-7 s of imports a "
        "trial; false starts every trial as a fresh interpreter.",
    )
    seed: int = Field(default=13, description="Sampler seed.")
    space: dict[str, ParamSpec] | None = Field(
        default=None,
        description="Searched settings (train.* / lora.* keys); the defaults for train.method "
        "when absent.",
    )
    storage: str | None = Field(
        default=None,
        description="Optuna RDB storage URL (e.g. postgresql://...); a SQLite file beside the "
        "MLflow SQLite store (or under work_dir) when absent.",
    )

    @field_validator("space")
    @classmethod
    def _space_keys(cls, space: dict[str, ParamSpec] | None) -> dict[str, ParamSpec] | None:
        if space is None:
            return space
        if not space:
            raise ValueError("empty; remove it to use the defaults of train.method")
        for key, spec in space.items():
            dotted = check_key(key)
            section, _, field = dotted.partition(".")
            checked = []
            for value in spec.extremes():
                try:
                    checked.append(getattr(SECTIONS[section].model_validate({field: value}), field))
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"]
                    raise ValueError(
                        f"{key}: {value!r} is not a valid {dotted} ({reason})"
                    ) from None
            if spec.type == "categorical":
                # `--set` goes through YAML, which reads `1e-07` as a string: keep the value the
                # setting would hold, so trials, MLflow params and the summary see a number.
                spec.choices = checked
        return space

    def space_for(self, method: str) -> dict[str, ParamSpec]:
        """The searched settings, dotted keys: the configured space or the method's default."""
        if self.space is None:
            return dict(DEFAULT_SPACES[method])
        return {full_key(k): v for k, v in self.space.items()}
