"""What the model server accepts and answers: request models, MLflow's scoring protocol and
error body, and the scrubbing of inputs (for the model and for the log).

Refusals never repeat the input (it may hold PII), only where in the body the problem is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from tasks.pii import PIISettings, scrub_one

REDACTED = "<REDACTED>"  # logged instead of a text in which the residual scan still found PII


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_PARAMETER_VALUE",
    503: "SERVICE_UNAVAILABLE",
}


def refusal(status: int, message: str) -> JSONResponse:
    """MLflow's error body, so its clients read our refusals as theirs."""
    code = ERROR_CODES.get(status, "BAD_REQUEST")
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[StrictStr] = Field(min_length=1, description="Texts to predict on.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: StrictStr = Field(min_length=1, max_length=200)
    label: StrictStr | None = Field(default=None, min_length=1, max_length=500)
    output: StrictStr | None = Field(default=None, min_length=1)
    flag: Literal["wrong"] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRequest:
        if self.label is None and self.output is None and self.flag is None:
            raise ValueError(
                "send a corrected 'label' (classification), a corrected 'output' (generation) "
                "or 'flag': 'wrong'"
            )
        if self.label is not None and self.output is not None:
            raise ValueError("send 'label' or 'output', not both")
        return self


@dataclass
class Prepared:
    model_text: str  # what the model sees: scrubbed when serving.scrub_inputs
    log_text: str  # what the log and feedback keep: always scrubbed


def prepare(
    texts: list[str], pii: PIISettings, scrub_inputs: bool
) -> tuple[list[Prepared], Counter]:
    """Scrub each input once; the counts are entity types only."""
    out, counts = [], Counter()
    for text in texts:
        scrubbed = scrub_one(text, pii)
        counts.update(scrubbed.counts)
        log_text = REDACTED if scrubbed.residual else scrubbed.text
        out.append(Prepared(scrubbed.text if scrub_inputs else text, log_text))
    return out, counts


def parse_invocation(body: object) -> list[str]:
    """The texts of an MLflow scoring request: `inputs` / `instances` (strings, `{"text": ...}`
    records or `{"text": [...]}`), `dataframe_split` or `dataframe_records` with a `text`
    column (or a single column)."""
    if not isinstance(body, dict):
        raise Refused(400, "body: expected a JSON object with 'inputs' or 'dataframe_split'")
    keys = [k for k in ("inputs", "instances", "dataframe_split", "dataframe_records") if k in body]
    if len(keys) != 1:
        raise Refused(
            400,
            "body: expected exactly one of 'inputs', 'instances', 'dataframe_split', "
            "'dataframe_records'",
        )
    key, value = keys[0], body[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise Refused(400, "dataframe_split: expected {'columns': [...], 'data': [[...]]}")
        columns = value.get("columns") or ["text"]
        if not isinstance(columns, list) or ("text" not in columns and len(columns) != 1):
            raise Refused(400, "dataframe_split.columns: needs a 'text' column")
        at = columns.index("text") if "text" in columns else 0
        rows = value["data"]
        if not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
            raise Refused(400, f"dataframe_split.data: each row needs {len(columns)} value(s)")
        texts = [r[at] for r in rows]
    elif isinstance(value, dict):
        texts = value.get("text")
        if not isinstance(texts, list):
            raise Refused(400, f"{key}: expected a list of texts or {{'text': [...]}}")
    elif isinstance(value, list):
        texts = [v.get("text") if isinstance(v, dict) else v for v in value]
    else:
        raise Refused(400, f"{key}: expected a list of texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise Refused(400, f"{key}[{i}]: expected a string (the 'text' value)")
    return texts
