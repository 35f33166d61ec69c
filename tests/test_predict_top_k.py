"""predict --top-k K through the CLI (in this process): the K most probable labels per text in every output format,
on a three-class run and on an export; a K above the number of labels gives every label."""

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_rnn.cli import app

from conftest import TINY
from in_process import run_cli

LABELS = ["negative", "neutral", "positive"]
WORDS = {"negative": "awful dull", "neutral": "plain okay", "positive": "great lovely"}


def predict(*args) -> subprocess.CompletedProcess:
    proc = run_cli("predict", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("three")
    data = tmp / "d.csv"
    data.write_text("text,label\n" + "".join(f"a {WORDS[LABELS[k % 3]]} film {k},{LABELS[k % 3]}\n"
                                             for k in range(90)))
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", f"data.source={data}",
                                      "--set", "train.epochs=1", "-o", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def check_top(rec: dict, k: int) -> None:
    ranked = sorted(rec["probabilities"].items(), key=lambda item: -item[1])[:k]
    assert rec["top_k"] == [{"label": name, "probability": p} for name, p in ranked]
    assert rec["top_k"][0]["label"] == rec["label"]


def test_top_k_lists_the_most_probable_labels_in_json_and_jsonl(three_class_run, tmp_path):
    texts = ["a great film", "an awful film", "a plain film"]
    for k in (1, 2):
        records = json.loads(predict("-m", three_class_run, "--format", "json", "--top-k", k, *texts).stdout)
        assert len(records) == 3 and all(len(rec["top_k"]) == k for rec in records)
        for rec in records:
            check_top(rec, k)
    (tmp_path / "in.txt").write_text("a great film\n\na dull film\n")
    lines = predict("-m", three_class_run, "--format", "jsonl", "--top-k", 2, "--file", tmp_path / "in.txt").stdout
    records = [json.loads(line) for line in lines.splitlines()]
    assert "top_k" not in records[1] and "error" in records[1]  # an empty line stays an error record
    check_top(records[0], 2), check_top(records[2], 2)


def test_top_k_above_the_number_of_labels_gives_every_label_on_a_run_and_an_export(three_class_run, tiny_export):
    for model, n in ((three_class_run, 3), (tiny_export, 2)):
        (rec,) = json.loads(predict("-m", model, "--format", "json", "--top-k", 10, "a moving film").stdout)
        assert len(rec["top_k"]) == n
        check_top(rec, n)


def test_top_k_shows_in_the_table_and_in_the_plain_columns(three_class_run, tmp_path):
    (rec,) = json.loads(predict("-m", three_class_run, "--format", "json", "--top-k", 2, "a [v2] film").stdout)
    cell = ", ".join(f"{e['label']} {e['probability']:.3f}" for e in rec["top_k"])
    table = predict("-m", three_class_run, "--top-k", 2, "a [v2] film").stdout
    assert "top k" in table and cell in table and "a [v2] film" in table  # the text keeps its brackets
    (tmp_path / "many.txt").write_text("a [v2] film\n" * 250)
    plain = predict("-m", three_class_run, "--top-k", 2, "--file", tmp_path / "many.txt").stdout.splitlines()
    column = plain[0].index("text")  # the top k column is as wide as its widest possible cell
    assert "top k" in plain[0] and len(plain) == 251 and cell in plain[1] and plain[1][column:] == "a [v2] film"
