import json
from pathlib import Path

import pytest

from flows.config import ConfigError, load_config
from tunegate.cli import main
from tunegate.demo_data.loans import generate

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t {i}", "label": "ab"[i % 2]}) + "\n" for i in range(30))
    )
    return path


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(config, monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = load_config(config)
    assert loaded.data.path.is_file()


def test_overrides_parse_as_yaml(data_file):
    cfg = load_config(
        None, [f"data.path={data_file}", "train.epochs=1", "data.labels=[approve, deny]"]
    )
    assert cfg.train.epochs == 1
    assert cfg.data.labels == ["approve", "deny"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochz=1", "train.epochz: unknown key"),
        ("train.epochs=abc", "train.epochs: Input should be a valid number"),
        ("lora.r=0", "lora.r: Input should be greater than or equal to 1"),
        ("data.test_path=/nope/missing.csv", "data.test_path: file not found: /nope/missing.csv"),
        ("model.task=translation", "model.task: Input should be 'classification'"),
    ],
)
def test_bad_config_names_the_key(data_file, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"data.path={data_file}", override])
    assert message in str(err.value)


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_cli_refuses_bad_config_with_one_line_and_exit_2(data_file, capsys):
    code, err = _run(["run", "--set", f"data.path={data_file}", "--set", "gate.min_f=1"], capsys)
    assert code == 2
    assert err.count("\n") == 0 and "gate.min_f: unknown key" in err
    code, err = _run(["run", "--config", "/nope.yaml"], capsys)
    assert code == 2 and "--config: file not found" in err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"\x00\x01\x02\x03 binary", "binary"),
        (b'{"body": "x", "label": "a"}\n', "data.text_column 'text' is not a column"),
    ],
)
def test_cli_refuses_unreadable_data_before_any_work(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    code, err = _run(["run", "--set", f"data.path={path}"], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_demo_data_is_reproducible_and_matches_the_committed_file():
    rows = generate()
    committed = (REPO / "data" / "loan_applications.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in committed] == rows
    defects = [
        r
        for r in rows
        if not (r["narrative"] or "").strip()
        or r["risk_label"] not in {"low_risk", "medium_risk", "high_risk", "decline"}
    ]
    assert 0.01 * len(rows) <= len(defects) <= 0.03 * len(rows)


def test_one_section_loads_through_the_same_path_as_the_whole_config(tmp_path):
    from flows.config import load_section
    from tasks.augment import AugmentSettings
    from tasks.registry import MLflowSettings

    config = tmp_path / "c.yaml"
    config.write_text("augment: {ratio: 0.5}\nmlflow: {registered_model: from-file}\n")
    assert load_section(config, ["augment.seed=9"], "augment", AugmentSettings).seed == 9
    assert load_section(config, [], "augment", AugmentSettings).ratio == 0.5
    mlflow = load_section(config, ["mlflow.registered_model=over"], "mlflow", MLflowSettings)
    assert mlflow.registered_model == "over"
    with pytest.raises(ConfigError, match=r"^augment\.ratoi: unknown key"):
        load_section(config, ["augment.ratoi=1"], "augment", AugmentSettings)
    with pytest.raises(ConfigError, match="--config: file not found"):
        load_section(tmp_path / "nope.yaml", [], "augment", AugmentSettings)


def test_main_prints_a_cli_error_once_and_returns_its_code(capsys, monkeypatch):
    from tunegate.commands import run
    from tunegate.commands.common import CLIError

    def refuse(args):
        raise CLIError("retrain failed: because", 1)

    monkeypatch.setattr(run, "cmd_run", refuse)
    assert main(["run"]) == 1
    assert capsys.readouterr().err == "tunegate: retrain failed: because\n"
