"""The installed `sentiment-rnn` command, end to end in real subprocesses: train -> predict -> evaluate."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")


def run(*args, stdin=None, cwd=ROOT):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, input=stdin, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    result = run("train", "--config", ROOT / "configs" / "tiny.yaml", "--output", out)
    assert result.returncode == 0, result.stderr + result.stdout
    return out


def test_train_writes_a_complete_auditable_run(cli_run):
    names = {p.name for p in cli_run.iterdir()}
    assert {"config.yaml", "tokenizer.json", "model.safetensors", "meta.json", "split.json",
            "metrics.json", "curves.png"} <= names
    metrics = json.loads((cli_run / "metrics.json").read_text())
    test, matrix = metrics["test"], metrics["test"]["confusion_matrix"]
    assert len(matrix) == 2 and sum(map(sum, matrix)) == test["n"] == metrics["sizes"]["test"] > 0
    assert test["accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / test["n"])  # the matrix's diagonal
    assert len(metrics["history"]) == 2 and metrics["best_epoch"] in (1, 2)  # tiny.yaml: 2 epochs
    assert metrics["history"] and metrics["tokens_per_s"] > 0
    meta = json.loads((cli_run / "meta.json").read_text())
    assert meta["label_names"] == ["negative", "positive"] and meta["versions"]["torch"]


def test_predict_answers_with_a_label_and_a_probability(cli_run):
    result = run("predict", "the flower is so beautiful", "--model", cli_run, "--format", "json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["label"] in ("negative", "positive")
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-4
    assert record["probability"] == max(record["probabilities"].values())


COUNT_COLLECTIONS = """
import gc, json, sys
starts = []
gc.callbacks.append(lambda phase, info: phase == "start" and starts.append(info["generation"]))
from sentiment_rnn.cli import app
try:
    app(["predict", "good film", "--model", sys.argv[1], "--format", "json"], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "collections": len(starts)}))
"""


def test_predict_loads_torch_and_the_run_without_garbage_collections_and_freezes_what_they_made(cli_run):
    result = subprocess.run([sys.executable, "-c", COUNT_COLLECTIONS, str(cli_run)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts["enabled"] and counts["frozen"] > 10_000
    assert counts["collections"] < 150  # about 60 here; importing torch with the collector on runs about 370


def test_predict_jsonl_keeps_one_line_per_input_line_in_order(cli_run, tmp_path):
    lines = ["a wonderful film", "", "a dreadful bore", "   ", "fine"]
    result = run("predict", "--model", cli_run, "--format", "jsonl", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["text"] for r in records] == lines
    assert ["error" in r for r in records] == [False, True, False, True, False]
    assert "sentences/s" in result.stderr
    path = tmp_path / "in.txt"
    path.write_bytes(b"good\n\xff\xfe bad bytes\nbad\n")
    result = run("predict", "--model", cli_run, "--format", "jsonl", "--file", path)
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(records) == 3 and "UTF-8" in records[1]["error"] and records[2]["text"] == "bad"


def test_evaluate_scores_the_runs_recorded_test_split(cli_run):
    result = run("evaluate", "--model", cli_run, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    trained = json.loads((cli_run / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"])
    assert metrics["confusion_matrix"] == trained["confusion_matrix"]


def test_predict_and_evaluate_find_the_most_recent_run_without_model(cli_run, tmp_path):
    # two complete runs: the newer one (by metrics.json, written last) sorts first by name and was copied first
    for name, age_s in (("a-newer", 60), ("b-older", 3600)):
        shutil.copytree(cli_run, tmp_path / "runs" / name)
        stamp = time.time() - age_s
        os.utime(tmp_path / "runs" / name / "metrics.json", (stamp, stamp))
    newer = Path("runs") / "a-newer"
    result = run("predict", "--format", "json", "what a joy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["text"] == "what a joy"
    assert f"Using {newer}, the most recent complete run" in result.stderr
    result = run("evaluate", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Using {newer}, the most recent complete run" in result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["run"] == str(newer) and metrics["split"] == "test"
    trained = json.loads((cli_run / "metrics.json").read_text())["test"]
    assert metrics["confusion_matrix"] == trained["confusion_matrix"]


def test_predict_does_not_import_datasets_pandas_or_matplotlib(cli_run):
    code = ("import sys\nfrom sentiment_rnn.cli import app\n"
            f"try:\n    app(['predict', 'nice', '--model', {str(cli_run)!r}])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'datasets', 'pandas', 'matplotlib', 'sklearn'})\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_help_and_version_work_for_every_command():
    from typer.main import get_command
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    assert run("--version").stdout.startswith("sentiment-rnn ")
    listing = run("--help").stdout  # the installed command lists every command the Typer app has
    commands = get_command(app).commands
    assert len(commands) >= 10
    for name, command in commands.items():
        assert re.search(rf"^\W*{re.escape(name)}\s{{2,}}\w", listing, re.MULTILINE), f"--help does not list {name}"
        result = CliRunner().invoke(app, [name, "--help"])  # in-process: one start-up for all of them
        assert result.exit_code == 0 and "Usage" in result.output, (name, result.output)
        assert " ".join(command.help.split()[:4]) in " ".join(result.output.split()), name  # its own help text
        assert "\\[" not in result.output, (name, result.output)  # help is plain text: no markup escapes shown
    assert "Usage" in run("train", "--help").stdout
    module = subprocess.run([sys.executable, "-m", "sentiment_rnn", "--version"], capture_output=True, text=True)
    assert module.stdout.startswith("sentiment-rnn ")
