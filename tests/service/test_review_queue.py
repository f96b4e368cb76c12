"""The Label Studio review queue against real servers: Label Studio (`tunegate review-server`,
SQLite), and in the end-to-end test also Prefect, MLflow, `tunegate serve`, the webhook and the
model server of the session's stack."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.helpers.servers import LabelStudioServer

pytestmark = pytest.mark.service

HOSTILE = ['a"b', "<c>&'d", "$text", "ünï code", "x/y?z"]


def test_review_server_creates_and_reuses_a_project_with_hostile_labels(
    label_studio: LabelStudioServer,
):
    from tasks.review.client import ReviewQueue

    queue = ReviewQueue(label_studio.url, label_studio.token)
    project_id, created = queue.ensure_project(
        "smoke <model> & co", "classification", HOSTILE, None
    )
    assert created
    again, created_again = queue.ensure_project(
        "smoke <model> & co", "classification", HOSTILE, None
    )
    assert (again, created_again) == (project_id, False)  # found by its title
    project = queue.client.projects.get(id=project_id)
    root = ET.fromstring(project.label_config)
    assert [c.get("value") for c in root.iter("Choice")] == HOSTILE
    assert project.title == "tunegate smoke <model> & co"
