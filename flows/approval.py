"""The human approval step (`gate.approval: required`): a person decides after the numbers.

After the automatic gate passes, the candidate is registered (not promoted: its `gate` tag says
`awaiting-approval`, so `tunegate promote` refuses it without --force meanwhile), a review
artifact is published (Prefect markdown artifact `approval-review`, and `review/review.md` in
the MLflow run), and the run pauses with Prefect's typed run input (`ApprovalInput`): the UI
shows a form with the decision, a comment and an optional reviewer name. `pause_flow_run`
keeps the process (and the retrain lock) while it waits, so the run resumes where it paused;
`suspend_flow_run` would end the process and re-run the flow from the top on resume.

Approve: the version's gate tag becomes `passed` and it is promoted as any passing candidate.
Reject, or no answer within `gate.approval_timeout_s`: its gate tag becomes `rejected` and the
run ends in a state named Rejected of type Cancelled. Cancelled, not Failed: nothing broke, so
no retry re-runs the training and no failure alert fires; and not Completed, so a human "no"
is told apart from a finished run at a glance. Who decided and the comment become tags on the
version (`tunegate.approval.*`). Prefect's open-source server has no user accounts, so "who" is
the reviewer name typed in the form, else `prefect-ui`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import pandas as pd
from mlflow.tracking import MlflowClient
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import State, StateType
from pydantic import BaseModel, Field, field_validator

from flows.config import RetrainConfig
from flows.record import Evaluation, RetrainSummary, Tracker
from tasks.evaluate import EvalResult
from tasks.gate import GateDecision, GateSettings, approval_refusal
from tasks.metrics import HEADLINE
from tasks.registry import Registration, aliases_of, promote_version
from tasks.report import md

COMMENT_MAX = 500  # characters kept of a comment (an MLflow tag value; user text)
REVIEWER_MAX = 80
SAMPLES = 20  # outputs shown to the reviewer
SAMPLE_CHARS = 240  # characters shown of each text
DEFAULT_REVIEWER = "prefect-ui"
REJECTED = "Rejected"


class ApprovalRefused(Exception):
    """`gate.approval: required` where nobody could answer: raised before any work."""


def require_approver(settings: GateSettings, api_url: str | None) -> None:
    """Refuse a run that would pause where nobody can see it (`tasks.gate.approval_refusal`)."""
    reason = approval_refusal(settings, api_url)
    if reason is not None:
        raise ApprovalRefused(reason)


def _clip(text: object, limit: int) -> str:
    return " ".join(str(text).split())[:limit]


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on the paused run."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: promote this version to champion; reject: keep the champion."
    )
    comment: str = Field(
        default="", description=f"Why (kept on the version, first {COMMENT_MAX} characters)."
    )
    reviewer: str = Field(
        default="", description="Your name, recorded on the version (empty: prefect-ui)."
    )

    @field_validator("comment", mode="before")
    @classmethod
    def _cap_comment(cls, value: object) -> str:
        return _clip(value or "", COMMENT_MAX)

    @field_validator("reviewer", mode="before")
    @classmethod
    def _cap_reviewer(cls, value: object) -> str:
        return _clip(value or "", REVIEWER_MAX)


class Approval(BaseModel):
    """What the person decided (or `timeout`), as the summary's `approval` shows it."""

    decision: Literal["approve", "reject", "timeout"]
    by: str
    comment: str = ""

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    def tags(self) -> dict[str, str]:
        return {
            "tunegate.approval": {"approve": "approved", "reject": "rejected"}.get(
                self.decision, "timed-out"
            ),
            "tunegate.approval.by": self.by,
            "tunegate.approval.comment": self.comment or "-",
        }


def needs_approval(settings: GateSettings, decision: GateDecision) -> bool:
    return settings.approval == "required" and decision.passed


def wait_for_decision(timeout_s: int, description: str) -> Approval:
    """Pause the flow run until the form is submitted, or `timeout_s` passes."""
    from prefect.exceptions import FlowPauseTimeout

    form = ApprovalInput.with_initial_data(description=description)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=2)
    except FlowPauseTimeout:
        return Approval(
            decision="timeout",
            by="timeout",
            comment=f"no decision within gate.approval_timeout_s={timeout_s}",
        )
    return Approval(
        decision=answer.decision,
        by=answer.reviewer or DEFAULT_REVIEWER,
        comment=answer.comment,
    )


def apply_decision(
    client: MlflowClient,
    registration: Registration,
    approval: Approval,
    expected_champion: str | None,
) -> Registration:
    """Tag the version with the decision; promote it on approve (under the promotion lock)."""
    name, version = registration.name, registration.version
    for key, value in approval.tags().items():
        client.set_model_version_tag(name, version, key, value)
    if not approval.approved:
        client.set_model_version_tag(name, version, "gate", "rejected")
        note = f"{approval.decision} by {approval.by}: champion unchanged"
        return registration.model_copy(update={"note": note, "promoted": False})
    client.set_model_version_tag(name, version, "gate", "passed")
    outcome = promote_version(client, name, version, expected_champion)
    return registration.model_copy(
        update={
            "promoted": outcome.promoted,
            "previous_champion": outcome.previous_champion,
            "note": f"approved by {approval.by}; {outcome.note}",
            "aliases": aliases_of(client, name, version),
        }
    )


def rejected_state(summary: RetrainSummary) -> State:
    """The final state of a run a person rejected (or nobody answered): see the module doc."""
    model = summary.model
    return State(
        type=StateType.CANCELLED,
        name=REJECTED,
        message=f"{model['name']} v{model['version']}: {model['note']}",
        data=summary,
    )


# ------------------------------------------------------------------ the review artifact


def review_markdown(
    config: RetrainConfig,
    registration: Registration,
    evaluation: Evaluation,
    decision: GateDecision,
    test_path: Path,
    report_path: Path,
    mlflow_run_id: str,
) -> str:
    """What the reviewer reads before answering; texts are the scrubbed test split's."""
    task = config.model.task
    lines = [
        f"# Approve {md(registration.name)} v{registration.version}?",
        "",
        "The automatic gate passed. Resume this run with **approve** (promote to champion) or "
        f"**reject** (keep the champion); without an answer within "
        f"{config.gate.approval_timeout_s} s (gate.approval_timeout_s) the run ends Rejected.",
        "",
        f"Evaluation report: `{report_path}` (MLflow run `{mlflow_run_id}`, "
        "artifact evaluation/evaluation.md).",
        "",
        *_label_studio_line(config),
        "## Gate",
        "",
        *[f"- {md(r)}" for r in decision.reasons],
        "",
        *(_confusion(evaluation.candidate) if task == "classification" else _rouge(evaluation)),
        *_production(evaluation),
        *_samples(evaluation, test_path, task),
    ]
    return "\n".join(lines) + "\n"


def _label_studio_line(config: RetrainConfig) -> list[str]:
    """The review queue's address when a `review` section (Label Studio) is configured."""
    url = getattr(getattr(config, "review", None), "url", None)
    if not url:
        return []
    return [f"Label Studio review queue: {str(url).rstrip('/')}/projects", ""]


def _confusion(candidate: EvalResult) -> list[str]:
    labels = [md(label) for label in candidate.labels]
    rows = ["## Confusion matrix (candidate, rows: true, columns: predicted)", ""]
    rows += ["| true \\ predicted | " + " | ".join(labels) + " |"]
    rows += ["|---|" + "---|" * len(labels)]
    for label, counts in zip(labels, candidate.confusion, strict=False):
        rows.append(f"| {label} | " + " | ".join(str(n) for n in counts) + " |")
    return [*rows, ""]


def _rouge(evaluation: Evaluation) -> list[str]:
    rows = ["## ROUGE (F-measure)", "", "| metric | candidate | baseline | champion |"]
    rows.append("|---|---|---|---|")
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match"):
        cells = [
            f"{r.metrics[key]:.4f}" if r is not None and key in r.metrics else "-"
            for _, r in evaluation.systems()
        ]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*rows, ""]


def _production(evaluation: Evaluation) -> list[str]:
    if not evaluation.production_rows:
        return []
    key = HEADLINE["classification" if evaluation.candidate.labels else "generation"]
    shown = ", ".join(
        f"{name} {result.metrics.get(key, float('nan')):.4f}"
        for name, result in evaluation.production.items()
    )
    return [
        f"## Production corrections ({evaluation.production_rows} held-out rows)",
        "",
        f"{key}: {shown}",
        "",
    ]


def _samples(evaluation: Evaluation, test_path: Path, task: str) -> list[str]:
    """Twenty test examples, those where candidate and champion disagree first."""
    texts = pd.read_parquet(test_path, columns=["text"])["text"].astype(str).tolist()
    candidate, champion = evaluation.candidate, evaluation.champion
    theirs = champion.predictions if champion is not None else []
    order = sorted(
        range(len(candidate.predictions)),
        key=lambda i: (i < len(theirs) and theirs[i] == candidate.predictions[i], i),
    )[:SAMPLES]
    answer = "label" if task == "classification" else "answer"
    rows = [
        f"## {len(order)} sample outputs (scrubbed test texts)",
        "",
        f"| text | reference | candidate {answer} | champion {answer} |",
        "|---|---|---|---|",
    ]
    for i in order:
        rows.append(
            "| "
            + " | ".join(
                md(_clip(value, SAMPLE_CHARS))
                for value in (
                    texts[i] if i < len(texts) else "",
                    candidate.references[i],
                    candidate.predictions[i],
                    theirs[i] if i < len(theirs) else "-",
                )
            )
            + " |"
        )
    return rows


def publish_review(tracker: Tracker, markdown: str, run_dir: Path) -> Path:
    """The review as a Prefect markdown artifact and `review/review.md` in the MLflow run."""
    from prefect.artifacts import create_markdown_artifact

    path = run_dir / "review.md"
    path.write_text(markdown)
    tracker.log_artifact(path, "review")
    create_markdown_artifact(markdown, key="approval-review", description="Review before approval")
    return path


def ask_for_approval(
    config: RetrainConfig,
    tracker: Tracker,
    registration: Registration,
    evaluation: Evaluation,
    decision: GateDecision,
    test_path: Path,
    report_path: Path,
    run_dir: Path,
    expected_champion: str | None,
    logger: logging.Logger,
) -> tuple[Registration, Approval]:
    """Publish the review, pause for the decision, apply it to the registered version."""
    markdown = review_markdown(
        config, registration, evaluation, decision, test_path, report_path, tracker.run_id
    )
    publish_review(tracker, markdown, run_dir)
    logger.info(
        "%s v%s passed the gate: waiting up to %d s for approval in the Prefect UI",
        registration.name,
        registration.version,
        config.gate.approval_timeout_s,
    )
    approval = wait_for_decision(
        config.gate.approval_timeout_s,
        f"Approve {registration.name} v{registration.version}? The review artifact "
        "`approval-review` shows the evaluation and sample outputs.",
    )
    logger.info("approval: %s by %s", approval.decision, approval.by)
    tracker.set_tags(approval.tags())
    registration = apply_decision(tracker.client, registration, approval, expected_champion)
    tracker.set_tags({"tunegate.promoted": registration.promoted})
    return registration, approval
