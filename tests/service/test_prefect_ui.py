"""The Prefect UI of the running server, driven by Playwright with Debian's Chromium (headless):
a custom run of the manual retrain deployment with a changed setting, run to completion.
The screenshot of the filled form is kept under `.tunegate/test-artifacts/`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.servers import REPO, Stack, wait_for

pytestmark = pytest.mark.service

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / ".tunegate" / "test-artifacts"


def _field(page, label: str, description: str | None = None):  # noqa: ANN001, ANN202
    """The input of the schema-form property labelled `label`; with `description`, the property
    whose help text is exactly that (several sections have a "Batch Size")."""
    prop = 'contains(concat(" ", normalize-space(@class), " "), " schema-form-property ")'
    anchor = (
        f'//*[normalize-space()="{description}"]'
        if description
        else f'//span[contains(@class, "schema-form-property__label") and normalize-space()="{label}"]'
    )
    return page.locator(f"xpath={anchor}/ancestor::div[{prop}][1]//input").first


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="apt-get install -y chromium")
def test_custom_run_from_the_prefect_ui_with_a_changed_setting(stack: Stack):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    deployment_id = stack.deployment_id("retrain-manual")
    before = {r["id"] for r in stack.flow_runs("retrain-manual")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"{stack.prefect_ui}/deployments/deployment/{deployment_id}/run")
            # the typed config renders as a form: a section per stage, a field per setting with
            # its description and default; "Batch Size" is picked by the train section's help
            epochs = _field(page, "Epochs (Optional)")
            epochs.wait_for(timeout=180_000)
            epochs.fill("2")
            _field(page, "Batch Size (Optional)", "Examples per step per process.").fill("8")
            page.screenshot(path=str(ARTIFACTS / "prefect-custom-run-form.png"), full_page=True)
            page.get_by_role("button", name="Submit").click()
            try:
                created = wait_for(
                    lambda: [r for r in stack.flow_runs("retrain-manual") if r["id"] not in before],
                    180,
                    "the UI did not create a run",
                    every=2,
                )
            finally:  # what the page showed after Submit (a validation message, a toast)
                page.screenshot(path=str(ARTIFACTS / "prefect-custom-run-after-submit.png"))
        finally:
            browser.close()

    assert len(created) == 1
    run_id = created[0]["id"]
    run = wait_for(
        lambda: (
            (r := stack.prefect("GET", f"/flow_runs/{run_id}"))["state_type"]
            in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
            and r
        ),
        420,
        "the custom run did not finish",
        every=2,
    )
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["config"]["train"]["epochs"] == 2
    assert run["parameters"]["config"]["train"]["batch_size"] == 8
    assert Path(ARTIFACTS / "prefect-custom-run-form.png").stat().st_size > 10_000


def test_deploy_registers_the_deployments_on_a_process_work_pool(stack: Stack, tmp_path):
    """`tunegate deploy` (the worker path): pool created, deployments bound to it."""
    import subprocess
    import sys

    import yaml

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:  # other names: the served ones stay as they are
        deployment["name"] += "-pooled"
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunegate",
            "deploy",
            "--config",
            str(stack.config_path),
            "--prefect-file",
            str(prefect_file),
        ],  # fmt: skip
        cwd=REPO,
        env=stack.services.env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prefect worker start --pool tunegate-process" in done.stdout
    pool = stack.prefect("GET", "/work_pools/tunegate-process")
    assert pool["type"] == "process"
    for name in ("retrain-scheduled", "retrain-manual", "retrain-on-feedback"):
        deployment = stack.prefect("GET", f"/deployments/name/retrain/{name}-pooled")
        assert deployment["work_pool_name"] == "tunegate-process"
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
