"""`gate.approval: required` in the real Prefect UI (Playwright with Debian's Chromium): a
retrain pauses after its gate, the reviewer fills the typed form on the paused run and submits;
approved, the run ends Promoted and the version carries the decision; a second run rejected in
the UI ends Rejected (type Cancelled) with the comment on its version. Screenshots of both
forms go to `.tunegate/test-artifacts/`."""

from __future__ import annotations

import copy
import shutil

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.servers import Stack, wait_for
from tests.service.test_prefect_ui import ARTIFACTS, CHROMIUM, FLAGS

pytestmark = pytest.mark.service

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _start_run(stack: Stack) -> str:
    """A manual retrain with gate.approval=required (the served config otherwise)."""
    deployment_id = stack.deployment_id("retrain-manual")
    deployment = stack.prefect("GET", f"/deployments/{deployment_id}")
    config = copy.deepcopy(deployment["parameters"]["config"])
    config.setdefault("gate", {}).update({"approval": "required", "approval_timeout_s": 600})
    config.setdefault("adversarial", {})["enabled"] = False  # not what this test is about
    run = stack.prefect(
        "POST",
        f"/deployments/{deployment_id}/create_flow_run",
        {"parameters": {"config": config}},
    )
    return run["id"]


def _wait_state(stack: Stack, run_id: str, types: set[str], timeout: float) -> dict:
    return wait_for(
        lambda: (r := stack.prefect("GET", f"/flow_runs/{run_id}"))["state_type"] in types and r,
        timeout,
        f"run {run_id} did not reach {sorted(types)}",
        every=1,
    )


def _decide_in_ui(page, stack: Stack, run_id: str, decision: str, comment: str, shot: str):  # noqa: ANN001, ANN202
    """Open the paused run, press Resume, fill the run-input form, submit."""
    page.goto(f"{stack.prefect_ui}/runs/flow-run/{run_id}")
    resume = page.get_by_role("button", name="Resume")
    resume.first.wait_for(timeout=120_000)
    resume.first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=60_000)
    prop = 'contains(concat(" ", normalize-space(@class), " "), " schema-form-property ")'
    label = (
        '//span[contains(@class, "schema-form-property__label") and normalize-space()="Decision"]'
    )
    field = dialog.locator(f"xpath={label}/ancestor::div[{prop}][1]")
    try:
        _choose(page, field, decision)
        dialog.locator("textarea").first.fill(comment)
    finally:
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    dialog.get_by_role("button", name="Submit").click()


def _choose(page, field, value: str) -> None:  # noqa: ANN001
    """Pick `value` in the form's enum select (prefect-design's PSelect: a button that opens a
    list of options in a pop-over)."""
    options = page.locator("[role=option], .p-select-option")
    for opener in (
        lambda: field.locator(".p-select-button").click(),
        lambda: field.locator("button.p-select-button__control").press("ArrowDown"),
        lambda: field.locator("button.p-select-button__control").press("Enter"),
    ):
        opener()
        try:
            options.first.wait_for(timeout=5_000)
            break
        except Exception:  # noqa: BLE001 - not opened that way: try the next one
            continue
    options.filter(has_text=value).first.click()


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="apt-get install -y chromium")
def test_a_paused_run_is_approved_then_another_rejected_in_the_prefect_ui(stack: Stack):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(stack.mlflow_uri)
    outcomes = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            for decision, comment in (
                ("approve", "samples read well | ok"),
                ("reject", "worse on medium_risk"),
            ):
                run_id = _start_run(stack)
                paused = _wait_state(stack, run_id, {"PAUSED", *FINAL}, 300)
                assert paused["state_type"] == "PAUSED", paused["state"]
                _decide_in_ui(page, stack, run_id, decision, comment, f"approval-{decision}.png")
                outcomes[decision] = _wait_state(stack, run_id, FINAL, 180)
        finally:
            browser.close()

    approved, rejected = outcomes["approve"], outcomes["reject"]
    assert approved["state_type"] == "COMPLETED" and approved["state_name"] == "Promoted"
    assert rejected["state_type"] == "CANCELLED" and rejected["state_name"] == "Rejected"
    versions = {
        v.tags.get("tunegate.approval"): v
        for v in client.search_model_versions(f"name = '{stack.registered_model}'")
    }
    yes, no = versions["approved"], versions["rejected"]
    assert yes.tags["tunegate.approval.comment"] == "samples read well | ok"
    assert yes.tags["tunegate.approval.by"] == "prefect-ui" and yes.tags["gate"] == "passed"
    assert no.tags["tunegate.approval.comment"] == "worse on medium_risk"
    assert no.tags["gate"] == "rejected"
    champion = client.get_model_version_by_alias(stack.registered_model, "champion")
    assert champion.version == yes.version  # the rejected one did not move it
