"""The `review` section: where the Label Studio review queue is and what goes into it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ReviewSettings(BaseModel):
    """The review queue in Label Studio (`tunegate review`, the `review` flow and deployment)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="Label Studio's address, e.g. http://127.0.0.1:8080. null: no review queue "
        "(the retrain does not call the review at its end).",
    )
    api_key_env: str = Field(
        default="LABEL_STUDIO_API_KEY",
        pattern=ENV_NAME,
        description="Name of the environment variable holding the Label Studio API token (the "
        "token itself never goes into the config).",
    )
    min_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Classification: production predictions scored below this are queued.",
    )
    max_tasks: int = Field(
        default=200, ge=1, description="Most tasks one review run imports (flagged first)."
    )
    random_sample: int = Field(
        default=10,
        ge=0,
        description="Ordinary production predictions added at random to each run, so reviewers "
        "also see everyday traffic.",
    )
    disagreement: bool = Field(
        default=True,
        description="Queue the test examples where the candidate and the champion disagree "
        "(at the end of a retrain).",
    )
    worst_errors: int = Field(
        default=20,
        ge=0,
        description="The candidate's worst test errors to queue at the end of a retrain "
        "(classification: wrong where the champion was right first; generation: lowest ROUGE-L).",
    )
    lookback_s: float = Field(
        default=86400.0,
        gt=0,
        description="How far back a run reads the prediction log and feedback (s); an example "
        "already in the project is never imported twice.",
    )
    seed: int = Field(default=0, description="Seed of the random sample.")
    webhook_url: str | None = Field(
        default=None,
        description="Where Label Studio calls back with annotations: the tunegate webhook's "
        "/label-studio route, as Label Studio reaches it (e.g. http://webhook:8787/label-studio "
        "in compose). null: no webhook is registered on the project.",
    )
    webhook_token_env: str = Field(
        default="TUNEGATE_REVIEW_TOKEN",
        pattern=ENV_NAME,
        description="Name of the environment variable holding the shared token Label Studio "
        "sends in the X-Tunegate-Review-Token header (read by the webhook and the review flow).",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of each Label Studio API call (s)."
    )

    @field_validator("url", "webhook_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value
