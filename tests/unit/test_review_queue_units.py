"""The review queue's plain parts: selection, the labelling config (hostile labels), Label
Studio's webhook payload -> feedback rows, and the webhook's `/label-studio` route with its
dedup by (task, annotation), on a real feedback store."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tasks.load import DataSettings
from tasks.predictions import PredictionRecord
from tasks.review import (
    PayloadRefused,
    ReviewSettings,
    labelling_config,
    merge_items,
    parse_annotation,
    project_title,
    select_production,
    select_test,
)
from tasks.review.client import TOKEN_HEADER, task_payload

pytestmark = pytest.mark.unit

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]
DATA = DataSettings(
    path="unused.jsonl", text_column="narrative", label_column="risk_label", labels=LABELS
)
TOKEN = "review-token-for-unit-tests"


def _record(i: int, score: float, model: str = "loans", status: int = 200) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=f"p{i}",
        time=datetime(2026, 12, 1, 12, tzinfo=UTC),
        model_name=model,
        model_version="3",
        latency_ms=5.0,
        status=status,
        text=f"text {i} from <EMAIL_1>",
        label=LABELS[i % 4],
        score=score,
    )


def test_production_selection_low_confidence_flagged_corrected_and_a_seeded_sample():
    settings = ReviewSettings(min_confidence=0.6, random_sample=2, seed=1)
    records = [_record(i, 0.3 + 0.1 * i) for i in range(8)]  # scores 0.3 .. 1.0
    records += [_record(20, 0.1, model="other"), _record(21, 0.1, status=500)]
    corrections = [
        {"narrative": "text 6", "risk_label": "decline", "prediction_id": "p6", "predicted": "x"},
        {
            "narrative": "from LS",
            "risk_label": "decline",
            "prediction_id": "p7",
            "review_task": "1",
        },
        {"narrative": "plain re-annotation", "risk_label": "decline"},
    ]
    flags = [{"narrative": "text 5", "flag": "wrong", "prediction_id": "p5", "predicted": "y"}]
    items = select_production(records, corrections, flags, "narrative", settings, "loans", "k")
    by_reason = {}
    for item in items:
        by_reason.setdefault(item.reasons[0], set()).add(item.item_id)
    assert by_reason["low_confidence"] == {"pred:p0", "pred:p1", "pred:p2"}  # below 0.6 only
    assert by_reason["corrected"] == {"pred:p6"}  # not the row that came back from LS
    assert by_reason["flagged"] == {"pred:p5"}
    assert len(by_reason["random_sample"]) == 2
    assert by_reason["random_sample"] <= {f"pred:p{i}" for i in range(3, 8)}
    again = select_production(records, corrections, flags, "narrative", settings, "loans", "k")
    assert [i.item_id for i in again] == [i.item_id for i in items]  # seeded


def test_merge_joins_reasons_skips_queued_and_caps_by_priority():
    settings = ReviewSettings(min_confidence=0.9, random_sample=0)
    records = [_record(i, 0.5 - 0.01 * i) for i in range(5)]
    flags = [{"narrative": "t", "flag": "wrong", "prediction_id": "p4", "predicted": "decline"}]
    items = select_production(records, [], flags, "narrative", settings, "loans")
    chosen = merge_items(items, max_tasks=3, skip={"pred:p3"})
    assert [i.item_id for i in chosen] == ["pred:p4", "pred:p2", "pred:p1"]  # flagged first
    assert chosen[0].reasons == ["flagged", "low_confidence"]


def test_test_split_disagreements_and_worst_errors():
    settings = ReviewSettings(worst_errors=2)
    refs = ["a", "b", "c", "d", "a"]
    cand = ["a", "x", "y", "d", "z"]
    champ = ["a", "x", "c", "e", "a"]
    items = select_test(["t0", "t1", "t2", "t3", "t4"], refs, cand, champ, None, settings, "7")
    reasons = [(i.text, i.reasons[0]) for i in items]
    assert ("t3", "disagreement") in reasons and ("t2", "disagreement") in reasons
    assert ("t1", "disagreement") not in reasons
    # wrong: t1 (champion wrong too), t2 and t4 (champion right): regressions first, 2 of them
    assert [t for t, r in reasons if r == "worst_error"] == ["t2", "t4"]
    scored = select_test(
        ["g0", "g1", "g2"], ["r", "r", "r"], ["p", "q", "r"], None, [0.4, 0.1, 1.0], settings, "7"
    )
    assert [i.text for i in scored] == ["g1", "g0"]  # lowest ROUGE-L first, exact ones skipped
    with pytest.raises(ValueError):
        select_test(["a"], ["a", "b"], ["a"], None, None, settings, "1")


def test_labelling_config_escapes_hostile_labels_and_the_title_fits():
    hostile = ['a"b', "<c>&'d", "</Choices><View>", "$text", "x\ny"]
    config = labelling_config("classification", hostile)
    root = ET.fromstring(config)
    assert [c.get("value") for c in root.iter("Choice")] == [
        'a"b',
        "<c>&'d",
        "</Choices><View>",
        "$text",
        "x\ny",
    ]
    assert [e.tag for e in root] == ["Header", "Text", "Choices"]
    generation = ET.fromstring(labelling_config("generation", None))
    assert generation.find("TextArea").get("name") == "output"
    with pytest.raises(ValueError, match="data.labels"):
        labelling_config("classification", None)
    assert len(project_title("m" * 80)) == 50
    payload = task_payload(
        "loans",
        "classification",
        merge_items(
            select_production([_record(0, 0.1)], [], [], "narrative", ReviewSettings(), "loans"),
            5,
            set(),
        )[0],
    )
    assert payload["predictions"][0]["result"][0]["value"] == {"choices": ["low_risk"]}
    assert (
        payload["data"]["reason"] == "low confidence" and payload["data"]["prediction_id"] == "p0"
    )


def ls_payload(
    task_id: int = 11,
    annotation_id: int = 21,
    choice: str = "decline",
    action: str = "ANNOTATION_CREATED",
    cancelled: bool = False,
) -> dict:
    """Shaped like Label Studio 1.23's webhook body (webhooks/serializers_for_hooks.py: the
    annotation and task model serializers with `fields = '__all__'`, and the project)."""
    return {
        "action": action,
        "annotation": {
            "id": annotation_id,
            "result": [
                {
                    "id": "Xy12",
                    "type": "choices",
                    "value": {"choices": [choice]},
                    "origin": "manual",
                    "to_name": "text",
                    "from_name": "label",
                }
            ],
            "was_cancelled": cancelled,
            "ground_truth": False,
            "created_at": "2026-12-03T07:40:00.000000Z",
            "updated_at": "2026-12-03T07:40:00.000000Z",
            "draft_created_at": None,
            "lead_time": 4.2,
            "import_id": None,
            "last_action": None,
            "bulk_created": False,
            "task": task_id,
            "project": 1,
            "completed_by": 1,
            "updated_by": None,
            "parent_prediction": 5,
            "parent_annotation": None,
            "last_created_by": None,
            "result_count": 1,
            "unique_id": "0b4f",
        },
        "task": {
            "id": task_id,
            "data": {
                "text": "Applicant <PERSON_1> asks about a loan",
                "item_id": "pred:abc",
                "model_name": "loans",
                "model_version": "3",
                "prediction_id": "abc",
                "reason": "low confidence",
            },
            "meta": {},
            "created_at": "2026-12-03T07:39:00.000000Z",
            "updated_at": "2026-12-03T07:40:00.000000Z",
            "is_labeled": True,
            "overlap": 1,
            "inner_id": 1,
            "total_annotations": 1,
            "cancelled_annotations": 0,
            "total_predictions": 1,
            "project": 1,
            "updated_by": 1,
            "file_upload": None,
        },
        "project": {"id": 1, "title": "tunegate loans"},
    }


def test_payload_becomes_one_row_with_the_prediction_id():
    answer = parse_annotation(ls_payload(), DATA)
    row = answer.row(DATA, 1)
    assert row == {
        "narrative": "Applicant <PERSON_1> asks about a loan",
        "risk_label": "decline",
        "prediction_id": "abc",
        "model_version": "3",
        "review_task": "11",
        "review_annotation": "21",
        "review_revision": 1,
    }
    assert parse_annotation(ls_payload(action="PROJECT_UPDATED"), DATA) is None
    assert parse_annotation(ls_payload(cancelled=True), DATA) is None
    with pytest.raises(PayloadRefused, match="data.labels"):
        parse_annotation(ls_payload(choice="maybe"), DATA)
    bad = ls_payload()
    del bad["task"]["data"]["text"]
    with pytest.raises(PayloadRefused, match="task.data.text"):
        parse_annotation(bad, DATA)
    generation = DataSettings(path="x.jsonl", target_column="summary")
    textarea = ls_payload()
    textarea["annotation"]["result"] = [
        {"from_name": "output", "to_name": "text", "type": "textarea", "value": {"text": ["ok"]}}
    ]
    assert parse_annotation(textarea, generation).row(generation, 2)["summary"] == "ok"


@pytest.fixture
def hook(tmp_path):
    from deployments.webhook import PrefectEvents, create_app
    from flows.config import RetrainConfig
    from tasks.feedback import FeedbackStore

    data = tmp_path / "d.jsonl"
    data.write_text('{"narrative": "x", "risk_label": "decline"}\n')
    config = RetrainConfig.model_validate(
        {
            "data": {**DATA.model_dump(mode="json"), "path": str(data)},
            "feedback": {"store": str(tmp_path / "store")},
        }
    )
    app = create_app(
        config,
        "whsec_c2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nIQ==",
        PrefectEvents(None),
        review_token=TOKEN,
    )
    with TestClient(app) as client:
        yield client, FeedbackStore(str(tmp_path / "store"))


def test_label_studio_route_dedups_by_task_and_annotation(hook):
    client, store = hook

    def post(body: dict, token: str = TOKEN):
        return client.post("/label-studio", json=body, headers={TOKEN_HEADER: token})

    assert post(ls_payload(), token="wrong").status_code == 401
    assert client.post("/label-studio", json=ls_payload()).status_code == 401
    first = post(ls_payload())
    assert first.status_code == 202, first.text
    assert first.json()["trigger"] == "pending"  # no Prefect here: counted, signalled later
    assert len(store.batch_ids()) == 1
    same = post(ls_payload(action="ANNOTATION_UPDATED"))
    assert same.status_code == 200 and same.json()["status"] == "unchanged"
    assert len(store.batch_ids()) == 1
    changed = post(ls_payload(action="ANNOTATION_UPDATED", choice="high_risk"))
    assert changed.status_code == 202
    back = post(ls_payload(action="ANNOTATION_UPDATED", choice="decline"))
    assert back.status_code == 202  # changed back: a new batch that wins over the one between
    rows = [store.read_batch(b)[0] for b in store.batch_ids()]
    assert [r["review_revision"] for r in rows] == [1, 2, 3]
    other = post(ls_payload(annotation_id=22))  # another annotator's answer to the same task
    assert other.status_code == 202
    assert post(ls_payload(choice="maybe")).status_code == 422
    assert post({"action": "ANNOTATION_CREATED"}).status_code == 422
    ignored = post(ls_payload(action="TASKS_CREATED"))
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    assert len(store.batch_ids()) == 4


def test_label_studio_route_is_off_without_a_token(tmp_path):
    from deployments.webhook import PrefectEvents, create_app
    from flows.config import RetrainConfig

    data = tmp_path / "d.jsonl"
    data.write_text('{"narrative": "x", "risk_label": "decline"}\n')
    config = RetrainConfig.model_validate(
        {"data": {"path": str(data)}, "feedback": {"store": str(tmp_path / "s")}}
    )
    secret = "whsec_c2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nIQ=="
    with TestClient(create_app(config, secret, PrefectEvents(None))) as client:
        answer = client.post("/label-studio", json=ls_payload())
    assert answer.status_code == 404 and "review.webhook_token_env" in answer.json()["detail"]


def test_review_server_needs_the_admin_env_and_seeds_a_new_data_dir(tmp_path):
    from tunegate.commands.common import CLIError
    from tunegate.commands.review import seed_database, server_env

    with pytest.raises(CLIError, match="LABEL_STUDIO_PASSWORD, LABEL_STUDIO_USER_TOKEN"):
        server_env(tmp_path, False, {"LABEL_STUDIO_USERNAME": "a@b.c"})
    base = {
        "LABEL_STUDIO_USERNAME": "a@b.c",
        "LABEL_STUDIO_PASSWORD": "pw",
        "LABEL_STUDIO_USER_TOKEN": "token-123",
    }
    env = server_env(tmp_path, False, base)
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["SSRF_PROTECTION_ENABLED"] == "false"  # the tunegate webhook is on a private address
    assert server_env(tmp_path, True, base)["SSRF_PROTECTION_ENABLED"] == "true"
    exe = tmp_path / "venv" / "bin" / "label-studio"
    (tmp_path / "venv" / "template").mkdir(parents=True)
    exe.parent.mkdir(parents=True)
    (tmp_path / "venv" / "template" / "label_studio.sqlite3").write_bytes(b"db")
    data = tmp_path / "data"
    data.mkdir()
    assert seed_database(exe, data) and (data / "label_studio.sqlite3").read_bytes() == b"db"
    assert not seed_database(exe, data)  # an existing database is never replaced


def test_review_command_refuses_a_config_without_a_url_and_names_bad_keys(tmp_path, capsys):
    from tunegate.cli import main

    assert main(["review", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "--config: file not found" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("review:\n  min_confidence: 0.3\n")
    assert main(["review", "--config", str(config)]) == 2
    assert "review.url: not set" in capsys.readouterr().err
    assert main(["review", "--config", str(config), "--set", "review.url=ftp://x"]) == 2
    assert "review.url: must start with http:// or https://" in capsys.readouterr().err
    assert main(["review", "--config", str(config), "--set", "review.api_key_env=a b"]) == 2
    assert "review.api_key_env" in capsys.readouterr().err


def test_label_studio_route_refuses_what_is_no_payload(hook):
    client, store = hook
    headers = {TOKEN_HEADER: TOKEN, "Content-Type": "application/json"}
    for body in (b"not json", b"[" * 100_000, b"\xff\xfe", b"[1, 2]", b'"text"'):
        answer = client.post("/label-studio", content=body, headers=headers)
        assert answer.status_code == 422, (body[:10], answer.text)
    assert store.batch_ids() == []
