"""A new user's own data, as they would bring it: every label style, every file format, a folder of named
splits, evaluating from another folder, byte order marks, and compare-baseline's positive label. Each case
trains the tiny config for real; most commands run in this process, and the defects a user met in training and
evaluating also through the installed command (marked slow)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentiment_rnn.cli import app
from sentiment_rnn.compare import positive_label
from sentiment_rnn.errors import SentimentRNNError

from conftest import TINY
from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")
FAST = ["--set", "train.epochs=1", "--set", "train.grad_probe_epochs=[]"]
WORDS = [["awful", "dull", "boring"], ["fine", "okay", "plain"], ["great", "lovely", "moving"]]


def rows(labels, n: int = 60) -> list[tuple[str, object]]:
    """n reviews cycling through `labels`; each label has its own words, so the data is learnable."""
    return [(f"a {WORDS[(k % len(labels)) * 2 // max(len(labels) - 1, 1)][k % 3]} film, review {k}",
             labels[k % len(labels)])
            for k in range(n)]


def write(path: Path, data: list[tuple[str, object]], bom: bool = False) -> Path:
    """The rows as csv/tsv/json/jsonl/parquet (by suffix), columns text and label."""
    fmt = path.suffix[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.table({"text": [t for t, _ in data], "label": [lab for _, lab in data]}), path)
        return path
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        content = f"text{sep}label\n" + "".join(f"{t.replace(',', '')}{sep}{lab}\n" for t, lab in data)
    elif fmt == "json":
        content = json.dumps([{"text": t, "label": lab} for t, lab in data])
    else:
        content = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in data)
    path.write_text(("\ufeff" if bom else "") + content, encoding="utf-8")
    return path


def train(data: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", f"data.source={data}", *FAST,
                                      "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result


def sentiment(*args, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as a user's pipe: rich assumes 80 columns
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, input=stdin, env=env,
                          timeout=300)


def label_names(run: Path) -> list[str]:
    return json.loads((run / "meta.json").read_text())["label_names"]


# --- every label style and every format ---------------------------------------------------------------------
LABEL_STYLES = {  # name: (file, labels as written, label names the model gets)
    "negative/positive": ("d.csv", ["negative", "positive"], ["negative", "positive"]),
    "Negative/Positive": ("d.csv", ["Negative", "Positive"], ["Negative", "Positive"]),
    "neg/pos": ("d.csv", ["neg", "pos"], ["neg", "pos"]),
    "integers": ("d.csv", [0, 1], ["0", "1"]),
    "integers as strings": ("d.jsonl", ["0", "1"], ["0", "1"]),
    "integers sorted as numbers": ("d.jsonl", [2, 10], ["2", "10"]),
    "mixed case": ("d.csv", ["bad", "Good"], ["Good", "bad"]),
    "three classes": ("d.csv", ["negative", "neutral", "positive"], ["negative", "neutral", "positive"]),
}


@pytest.mark.parametrize("style", list(LABEL_STYLES))
def test_every_label_style_trains_predicts_and_evaluates(style, tmp_path):
    name, labels, expected = LABEL_STYLES[style]
    data = write(tmp_path / name, rows(labels))
    train(data, tmp_path / "run")
    assert label_names(tmp_path / "run") == expected
    predicted = CliRunner().invoke(app, ["predict", "-m", str(tmp_path / "run"), "--format", "json", "a great film"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)[0]["label"] in expected
    evaluated = CliRunner().invoke(app, ["evaluate", "-m", str(tmp_path / "run"), "--data", str(data), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] == 60


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_format_with_the_embedded_corpus_label_names_trains_and_evaluates(fmt, tmp_path):
    data = write(tmp_path / f"reviews.{fmt}", rows(["negative", "positive"]))
    train(data, tmp_path / "run")
    assert label_names(tmp_path / "run") == ["negative", "positive"]
    evaluated = CliRunner().invoke(app, ["evaluate", "-m", str(tmp_path / "run"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["split"] == "test"


@pytest.mark.slow
def test_negative_positive_labels_train_and_evaluate_through_the_installed_command(tmp_path):
    data = write(tmp_path / "reviews.jsonl", rows(["negative", "positive"]))
    trained = sentiment("train", "-c", TINY, "--set", f"data.source={data}", *FAST, "-o", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    evaluated = sentiment("evaluate", "-m", tmp_path / "run", "--data", data, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["labels"] == ["negative", "positive"]


# --- named splits, other folders, byte order marks ----------------------------------------------------------
def test_a_folders_validation_and_test_files_are_used_and_reported(tmp_path):
    write(tmp_path / "data" / "train.csv", rows(["neg", "pos"], 60))
    write(tmp_path / "data" / "validation.csv", rows(["neg", "pos"], 12))
    write(tmp_path / "data" / "test.csv", rows(["neg", "pos"], 14))
    result = run_cli("train", "-c", TINY, "--set", f"data.source={tmp_path / 'data'}", *FAST, "-o", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert ("train 60 rows (split 'train'), validation 12 rows (split 'validation'), "
            "test 14 rows (split 'test')") in result.stdout
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert record["sizes"] == {"train": 60, "validation": 12, "test": 14}


def test_a_bad_row_is_named_by_its_file_a_single_one_or_dev_csv_beside_the_split_it_is_read_as(tmp_path):
    write(tmp_path / "data" / "train.csv", rows(["neg", "pos"], 60))
    write(tmp_path / "data" / "dev.csv", [*rows(["neg", "pos"], 10), ("  ", "pos")])
    assert errors_training_on(tmp_path / "data", tmp_path / "run") == [
        f"Error: split 'validation' ('{tmp_path / 'data' / 'dev.csv'}') row 11 has an empty text; fix or remove that "
        "row"]
    single = write(tmp_path / "one.csv", [*rows(["neg", "pos"], 3), ("a film", "")])  # datasets calls it 'train'
    assert errors_training_on(single, tmp_path / "run") == [
        f"Error: '{single}' row 4 has no label (empty or NaN); fix or remove that row"]


def test_a_row_with_more_fields_than_its_header_is_refused_naming_its_line_not_shifted_into_the_labels(tmp_path):
    """pandas read 'a lovely film,positive,0' as index 'a lovely film', text 'positive', label 0, silently."""
    from sentiment_rnn.config import DataConfig
    from sentiment_rnn.sources import load_raw

    shifted = tmp_path / "shifted.csv"
    shifted.write_text("text,label\n\"a lovely, moving film\",positive\n\na boring film,negative,1\n")
    assert errors_training_on(shifted, tmp_path / "run") == [
        f"Error: {shifted}: line 4 has 3 fields, its header 2; quote a text that holds a comma (\"...\") and remove "
        "trailing commas"]
    tabbed = tmp_path / "tabbed.tsv"
    tabbed.write_text("text\tlabel\ngood\tpositive\tx\n")
    with pytest.raises(SentimentRNNError, match="line 2 has 3 fields, its header 2; quote a text that holds a tab"):
        load_raw(DataConfig(source=str(tabbed)))
    shifted.write_text("text,label\n\"a lovely, moving film\",positive\n\na boring film,negative\n")
    assert load_raw(DataConfig(source=str(shifted)))["train"]["text"] == ["a lovely, moving film", "a boring film"]


def errors_training_on(data: Path, run: Path) -> list[str]:
    """The Error: lines of a tiny train on `data` that must fail."""
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", f"data.source={data}", "-o", str(run)])
    assert result.exit_code == 1, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_label_only_a_held_out_file_has_is_refused_before_training(split, tmp_path):
    """Else it became a class no row trains ('Positive' beside 'positive'), scored and predicted silently."""
    write(tmp_path / "data" / "train.csv", rows(["negative", "positive"], 60))
    write(tmp_path / "data" / f"{split}.csv", rows(["negative", "Positive"], 12))
    assert errors_training_on(tmp_path / "data", tmp_path / "run") == [
        f"Error: split '{split}' ('{tmp_path / 'data' / f'{split}.csv'}') has label 'Positive', which no row of the "
        "training split 'train' has (its labels: "
        "negative, positive); fix that label or drop its rows"]
    assert not (tmp_path / "run").exists()


def test_only_a_test_file_beside_train_carves_validation_and_says_so(tmp_path):
    write(tmp_path / "data" / "train.csv", rows(["neg", "pos"], 60))
    write(tmp_path / "data" / "test.csv", rows(["neg", "pos"], 14))
    result = train(tmp_path / "data", tmp_path / "run")
    assert "validation 6 rows (carved from 'train'), test 14 rows (split 'test')" in result.output
    sizes = json.loads((tmp_path / "run" / "split.json").read_text())["sizes"]
    assert sizes["train"] == 54  # 48 kept + the 6 carved test rows back


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "validation"])
def test_evaluate_scores_a_named_split_of_a_folder(split, tmp_path, tiny_run):
    write(tmp_path / "data" / "train.csv", rows(["negative", "positive"], 20))
    write(tmp_path / "data" / f"{split}.csv", rows(["negative", "positive"], 16))
    command = sentiment if split == "test" else run_cli  # one of the two through the installed command
    result = command("evaluate", "-m", tiny_run, "--data", tmp_path / "data", "--split", split, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 16


def test_evaluate_scores_a_folder_holding_only_test_csv(tmp_path, tiny_run):
    write(tmp_path / "data" / "test.csv", rows(["negative", "positive"], 16))
    result = run_cli("evaluate", "-m", tiny_run, "--data", tmp_path / "data", "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 16


def test_evaluate_scores_a_plain_file_without_naming_a_split(tmp_path, tiny_run):
    data = write(tmp_path / "other.csv", rows(["negative", "positive"], 30))
    result = run_cli("evaluate", "-m", tiny_run, "--data", data, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 30


@pytest.mark.slow
def test_a_run_trained_on_a_relative_path_evaluates_from_another_folder(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "project" / "reviews.csv", rows(["neg", "pos"]))
    trained = sentiment("train", "-c", TINY, "--set", "data.source=reviews.csv", *FAST, "-o", "run",
                        cwd=tmp_path / "project")
    assert trained.returncode == 0, trained.stderr
    record = json.loads((tmp_path / "project" / "run" / "split.json").read_text())
    assert record["source"] == str(tmp_path / "project" / "reviews.csv") and record["source_given"] == "reviews.csv"
    result = run_cli("evaluate", "-m", tmp_path / "project" / "run", "--json", cwd=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["source"] == "reviews.csv" and metrics["n"] == record["sizes"]["test"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_training_file_with_a_byte_order_mark_reads_its_first_column(fmt, tmp_path):
    data = write(tmp_path / f"bom.{fmt}", rows(["neg", "pos"]), bom=True)
    train(data, tmp_path / "run")
    assert label_names(tmp_path / "run") == ["neg", "pos"]


def test_a_byte_order_mark_is_not_part_of_the_first_text_to_predict(tmp_path, tiny_run):
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("a great film\nawful\n", encoding="utf-8")
    marked.write_text("\ufeffa great film\nawful\n", encoding="utf-8")
    outputs = []
    for path in (plain, marked):
        result = run_cli("predict", "-m", tiny_run, "-f", path, "--format", "jsonl")
        assert result.returncode == 0, result.stderr
        outputs.append([json.loads(line) for line in result.stdout.splitlines()])
    assert outputs[1] == outputs[0] and outputs[1][0]["text"] == "a great film"


# --- compare-baseline: which label is positive --------------------------------------------------------------
@pytest.mark.parametrize("labels,given,expected", [
    (["negative", "positive"], None, "positive"),
    (["NEG", "POS"], None, "POS"),
    (["Negative", "Positive"], None, "Positive"),
    (["happy", "unhappy"], "happy", "happy"),
    (["0", "1"], "1", "1"),
    (["negative", "neutral", "positive"], None, None),
])
def test_the_positive_label_is_given_or_named_unambiguously(labels, given, expected):
    assert positive_label(labels, given) == expected


@pytest.mark.parametrize("labels,given,message", [
    (["happy", "unhappy"], None, "pass --positive-label 'unhappy'"),
    (["0", "1"], None, "cannot tell which of the labels ['0', '1'] is positive"),
    (["pos", "positive"], None, "cannot tell"),
    (["happy", "unhappy"], "glad", "is not one of the data's labels"),
    (["a", "b", "c"], "a", "needs two-class data"),
])
def test_an_unclear_positive_label_is_a_one_line_error(labels, given, message):
    with pytest.raises(SentimentRNNError, match=message.replace("[", r"\[").replace("]", r"\]")):
        positive_label(labels, given)


def test_compare_baseline_without_a_positive_label_fails_before_training(tmp_path):
    data = write(tmp_path / "moods.csv", rows(["happy", "unhappy"]))
    result = run_cli("compare-baseline", "-c", TINY, "--set", f"data.source={data}", "-o", tmp_path / "cmp")
    assert result.returncode == 1 and "--positive-label" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "cmp").exists()


def test_compare_baseline_on_three_classes_skips_the_probe_with_a_note(tmp_path):
    data = write(tmp_path / "three.csv", rows(["negative", "neutral", "positive"], 90))
    result = run_cli("compare-baseline", "-c", TINY, "--set", f"data.source={data}", *FAST, "-o", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    assert "Note: the context probe needs two classes" in result.stdout
    assert "scoring shuffled test sentences (no probe)" in result.stdout and "the probe and" not in result.stdout
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["positive_label"] is None
    assert not any(row["key"].startswith("probe") for row in comparison["rows"])
    assert 0 < comparison["models"]["rnn"]["mean"]["word_order_sensitivity"] <= 1  # shuffled words move it


def test_compare_baseline_reads_the_probe_as_the_given_positive_label(tmp_path):
    data = write(tmp_path / "moods.csv", rows(["happy", "unhappy"]))
    result = CliRunner().invoke(app, ["compare-baseline", "-c", str(TINY), "--set", f"data.source={data}", *FAST,
                                      "-o", str(tmp_path / "cmp"), "--positive-label", "happy"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["positive_label"] == "happy"


# --- smaller problems -------------------------------------------------------------------------------------
def test_every_run_file_gets_the_same_mode_the_umask_allows(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_run.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.slow
def test_piped_training_output_keeps_each_epoch_on_one_line(tmp_path):
    data = write(tmp_path / "d.csv", rows(["neg", "pos"]))
    result = sentiment("train", "-c", TINY, "--set", f"data.source={data}", "--set", "train.epochs=2",
                       "--set", "train.patience=2", "-o", tmp_path / "a-run-directory-with-a-long-name" / "run")
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("val loss" in line and line.rstrip().endswith(("s", "best")) for line in epochs)
    assert any(len(line) > 80 for line in result.stdout.splitlines())  # nothing was cut at 80 columns


def test_predict_without_model_says_which_run_it_picked(tmp_path, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "runs" / "tiny")
    result = run_cli("predict", "--format", "jsonl", "a great film", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Using {Path('runs') / 'tiny'}, the most recent complete run" in result.stderr
    assert len(result.stdout.splitlines()) == 1  # stdout holds only the predictions


def test_predict_table_of_many_texts_prints_plain_aligned_rows(tmp_path, tiny_run):
    texts = [f"a {'great' if i % 2 else 'dull'} film number {i}" for i in range(500)] + ["   "]
    path = tmp_path / "many.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_run), "-f", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["label", "probability", "text"] and len(lines) == 1 + len(texts)
    assert lines[1].endswith("a dull film number 0") and lines[-1].startswith("error")
    column = lines[0].index("text")
    assert all(line[column:].startswith("a ") for line in lines[1:-1])  # the texts start in one column
    ranked = CliRunner().invoke(app, ["predict", "-m", str(tiny_run), "-f", str(path), "--top-k", "2"]).stdout
    lines = ranked.splitlines()
    assert lines[0].split() == ["label", "probability", "top", "k", "text"] and len(lines) == 1 + len(texts)
    column = lines[0].index("text")  # after the top k column, as wide as its widest cell
    assert all(line[column:].startswith("a ") for line in lines[1:-1]) and lines[-1][column:].startswith("    [empty")


def test_a_reader_that_stops_early_ends_predict_quietly(tmp_path, tiny_run):
    """| head closes the pipe: no error about paths or disks (an OSError), no traceback, exit 1 as click's."""
    path = tmp_path / "many.txt"
    path.write_text("".join(f"a film number {i}\n" for i in range(300)), encoding="utf-8")
    proc = subprocess.Popen([CLI, "predict", "-m", str(tiny_run), "-f", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    assert proc.wait(timeout=120) == 1
    assert proc.stderr.read().decode() == ""


def table_rows(output: str) -> dict[str, list[str]]:
    """The cells of each row of rich's tables in `output`, keyed by the row's first cell."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > 1 and cells[0]:
            found.setdefault(cells[0], []).append(cells[1:])
    return found


def test_evaluate_prints_the_per_class_table_and_the_confusion_matrix_of_the_recorded_test_rows(tiny_run):
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run)])
    assert result.exit_code == 0, result.output
    test = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert f"{tiny_run} on rotten_tomatoes, test split" in result.output
    assert "Confusion matrix (rows: true, columns: predicted)" in result.output
    rows = table_rows(result.output)
    for label, matrix_row in zip(test["labels"], test["confusion_matrix"], strict=True):
        m = test["per_class"][label]
        metrics_cells, confusion_cells = rows[label]  # its row in each table
        assert metrics_cells == [f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])]
        assert confusion_cells == [str(v) for v in matrix_row]
    assert rows["accuracy"] == [["", "", f"{test['accuracy']:.3f}", str(test["n"])]]
    assert rows["macro F1"] == [["", "", f"{test['macro_f1']:.3f}", ""]]


def test_evaluate_reads_other_column_names_with_text_column_and_label_column(tmp_path, tiny_run):
    data = rows(["negative", "positive"], 30)
    path = tmp_path / "reviews.csv"
    path.write_text("id,review,verdict\n" + "".join(f'{i},"{text}",{label}\n' for i, (text, label) in enumerate(data)))
    plain = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(path), "--json"])
    assert plain.exit_code == 1 and plain.output.startswith("Error:") and "text" in plain.output, plain.output
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(path), "--json",
                                      "--text-column", "review", "--label-column", "verdict"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    truth = [sum(1 for _, label in data if label == name) for name in ("negative", "positive")]
    assert metrics["n"] == 30 and [sum(row) for row in metrics["confusion_matrix"]] == truth
    # the same rows under the run's own column names score the same
    write(tmp_path / "same.csv", data)
    same = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_run), "--data", str(tmp_path / "same.csv"), "--json"])
    assert json.loads(same.stdout)["confusion_matrix"] == metrics["confusion_matrix"]
