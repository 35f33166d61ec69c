"""Bad input everywhere: each case runs the real CLI and must fail with exactly one `Error:` line that
names the problem, a non-zero exit code, no traceback, no half-written run directory and no code run
from a tampered file. Most cases go through Typer's CliRunner (in-process, fast); a few through a
real subprocess of the installed command."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sentiment_rnn import rundir
from sentiment_rnn.cli import app

from conftest import TINY

CLI = [sys.executable, "-m", "sentiment_rnn"]


def csv_rows(n: int = 40, labels=(0, 1)) -> str:
    words = ["great", "awful", "fine", "dull", "moving", "silly"]
    lines = [f"review {i} was {words[i % len(words)]} and {words[(i * 7) % len(words)]},{labels[i % len(labels)]}"
             for i in range(n)]
    return "text,label\n" + "\n".join(lines) + "\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


class Case:
    """One bad input: how to build the command line in a fresh tmp dir, and what the error must name."""

    def __init__(self, build, expected: str):
        self.build, self.expected = build, expected


def train_on(data: Path, *extra: str) -> list[str]:
    return ["train", "-c", str(TINY), "--set", f"data.source={data}", *extra]


def parquet(path: Path, texts: list, labels: list) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "label": labels}), path)
    return path


def folder(path: Path) -> Path:
    path.mkdir()
    return path


def symlink_loop(path: Path) -> Path:
    """A path no one can read or create, even root: it points at itself."""
    os.symlink(path, path)
    return path


def evil_pickle_bytes(marker: Path) -> bytes:
    """A pickle that creates `marker` if anything unpickles it."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"format": 1, "model": Evil()})


# --- train: config, data and output -------------------------------------------------------------------
TRAIN_CASES = {
    "missing config file": Case(lambda t: ["train", "-c", str(t / "nope.yaml")], "config file"),
    "malformed yaml": Case(lambda t: ["train", "-c", str(write(t / "bad.yaml", "model: [hidden_size: 3\n"))],
                           "YAML syntax error at line"),
    "config not a mapping": Case(lambda t: ["train", "-c", str(write(t / "list.yaml", "- a\n- b\n"))],
                                 "expected a mapping"),
    "config not utf-8": Case(lambda t: ["train", "-c", str(write(t / "latin.yaml", b"name: caf\xe9\n"))], "not UTF-8"),
    "config with python tag": Case(lambda t: ["train", "-c", str(write(
        t / "tag.yaml", f"name: !!python/object/apply:os.system ['touch {t / 'MARKER'}']\n"))], "tag.yaml"),
    "unknown key in yaml": Case(lambda t: ["train", "-c", str(write(t / "u.yaml", "bogus_key: 1\n"))],
                                "unknown key 'bogus_key'"),
    "misspelled key in --set": Case(lambda t: ["train", "-c", str(TINY), "--set", "model.hiden_size=8"],
                                    "unknown key 'model.hiden_size'; did you mean 'model.hidden_size'?"),
    "misspelled key in yaml": Case(lambda t: ["train", "-c", str(write(t / "m.yaml", "train:\n  epoch: 2\n"))],
                                   "did you mean 'train.epochs'?"),
    "section key at the top": Case(lambda t: ["train", "-c", str(TINY), "--set", "hidden_size=8"],
                                   "unknown key 'hidden_size'; did you mean 'model.hidden_size'?"),
    "misspelled section": Case(lambda t: ["train", "-c", str(TINY), "--set", "modle.cell=gru"],
                               "--set modle.cell=gru: unknown key 'modle'; did you mean 'model'?"),
    "wrong type": Case(lambda t: ["train", "-c", str(TINY), "--set", "train.batch_size=many"],
                       "'train.batch_size': Input should be a valid integer"),
    "negative size": Case(lambda t: ["train", "-c", str(TINY), "--set", "model.hidden_size=-4"],
                          "--set model.hidden_size=-4: model.hidden_size must be a positive width or a list of"),
    "a section's check names its own --set": Case(
        lambda t: ["train", "-c", str(TINY), "--set", "data.max_length=32", "--set", "data.split=[0.8,0.1,0.2]"],
        "Error: --set data.split=[0.8,0.1,0.2]: data.split must be three positive shares"),
    "a section's check of the file's key": Case(
        lambda t: ["train", "-c", str(write(t / "s.yaml", "data:\n  split: [0.5, 0.5, 0.5]\n")), "--set",
                   "data.max_length=32"], "s.yaml: data.split must be three positive shares"),
    "zero epochs": Case(lambda t: ["train", "-c", str(TINY), "--set", "train.epochs=0"], "'train.epochs'"),
    "unknown cell": Case(lambda t: ["train", "-c", str(TINY), "--set", "model.cell=transformer"],
                         "'model.cell': Input should be 'rnn', 'gru' or 'lstm'"),
    "override without =": Case(lambda t: ["train", "-c", str(TINY), "--set", "model.hidden_size"],
                               "is not KEY=VALUE"),
    "split shares not summing to 1": Case(lambda t: ["train", "-c", str(TINY), "--set", "data.split=[0.5,0.1,0.1]"],
                                          "sum to 1"),
    "missing data file": Case(lambda t: train_on(t / "absent.csv"), "not found"),
    "missing text column": Case(lambda t: train_on(write(t / "d.csv", csv_rows()), "--set", "data.text_column=review"),
                                "has no column 'review' (columns: text, label); set data.text_column"),
    "missing label column": Case(lambda t: train_on(write(t / "d.csv", csv_rows()), "--set", "data.label_column=y"),
                                 "has no column 'y' (columns: text, label); set data.label_column"),
    "one class only": Case(lambda t: train_on(write(t / "d.csv", csv_rows(labels=("pos",)))), "one class only"),
    "NaN label": Case(lambda t: train_on(write(t / "d.csv", csv_rows() + "a nan-labelled review,NaN\n")),
                      "row 41 has no label"),
    "empty label": Case(lambda t: train_on(write(t / "d.csv", "text,label\nfirst review,\n" + csv_rows()[11:])),
                        "row 1 has no label (empty or NaN); fix or remove that row"),
    "label names for named labels": Case(lambda t: train_on(write(t / "d.csv", csv_rows(labels=("neg", "pos"))),
                                                            "--set", "data.label_names=[negative,positive]"),
                                         "but the data has label 'neg'; drop data.label_names"),
    "empty text": Case(lambda t: train_on(write(t / "d.csv", csv_rows() + "   ,1\n")), "row 41 has an empty text"),
    "missing text cell in csv": Case(lambda t: train_on(write(t / "d.csv", csv_rows() + ",1\n")),
                                     "row 41 has an empty text"),
    "null text in jsonl": Case(lambda t: train_on(write(t / "d.jsonl", "".join(
        json.dumps({"text": None if i == 7 else f"review {i}", "label": i % 2}) + "\n" for i in range(40)))),
        "row 8 has an empty text"),
    "None text in parquet": Case(lambda t: train_on(parquet(
        t / "d.parquet", [f"review {i}" for i in range(39)] + [None], [i % 2 for i in range(40)])),
        "row 40 has an empty text"),
    "two split shares": Case(lambda t: ["train", "-c", str(TINY), "--set", "data.split=[0.5,0.2]"],
                             "data.split must be three shares (train, validation, test) that sum to 1"),
    "--set error names the override, not the file": Case(
        lambda t: ["train", "-c", str(TINY), "--set", "train.epochs=0"], "Error: --set train.epochs=0: 'train.epochs'"),
    "empty data file": Case(lambda t: train_on(write(t / "d.csv", b"")), "is empty"),
    "header only": Case(lambda t: train_on(write(t / "d.csv", "text,label\n")), "has no data rows"),
    "empty JSON lines": Case(lambda t: train_on(write(t / "d.jsonl", b"")),
                             "is empty; give a file with one JSON object per row, a line each"),
    "empty JSON array": Case(lambda t: train_on(write(t / "d.json", "[]\n")),
                             "has no data rows; give a file with a JSON array of row objects"),
    "non-utf8 bytes in csv": Case(lambda t: train_on(write(t / "d.csv", csv_rows().encode() + b"caf\xe9 au lait,1\n")),
                                  "line 42 is not valid UTF-8"),
    "binary file as data": Case(lambda t: train_on(write(t / "d.csv", bytes(range(256)) * 64)), "is not valid UTF-8"),
    "unsupported format": Case(lambda t: train_on(write(t / "d.bin", b"\x00\x01")), "unsupported format '.bin'"),
    "malformed jsonl": Case(lambda t: train_on(write(t / "d.jsonl", '{"text": "a", "label": 1}\n{oops\n')),
                            "could not read data source"),
    "too few rows to split": Case(lambda t: train_on(write(t / "d.csv", csv_rows(5))), "too few to split"),
    "folder without data": Case(lambda t: train_on(folder(t / "empty_dir")), "holds no"),
    "output under a regular file (unwritable path)": Case(lambda t: [
        "train", "-c", str(TINY), "-o", str(write(t / "a_file", "x") / "run")], "cannot create run directory"),
    "output is a file": Case(lambda t: ["train", "-c", str(TINY), "-o", str(write(t / "out_file", "x"))],
                             "is a file, not a directory"),
    "output is a symlink loop (unreadable)": Case(lambda t: [
        "train", "-c", str(TINY), "-o", str(symlink_loop(t / "loop"))], "cannot create run directory"),
    "output already holds a run": Case(lambda t: ["train", "-c", str(TINY), "-o",
                                                  str(write(t / "taken" / "config.yaml", "x").parent)],
                                       "already exists; pass --overwrite"),
}


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_train_bad_input_fails_with_one_line_and_leaves_no_run(name, tmp_path):
    case = TRAIN_CASES[name]
    argv = case.build(tmp_path)
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "run")]
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, argv)
    assert_one_line_error(result, case.expected)
    assert set(tmp_path.rglob("*")) <= before, "a failing train left files behind"
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("name", ["{tmp}/elsewhere", "team/run", "a\\b"])
def test_a_run_name_that_is_a_path_is_refused_without_output(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ lands here
    name = name.replace("{tmp}", str(tmp_path))
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", f"name={name}"])
    assert_one_line_error(result, f"name '{name}' is a path; a run lands in runs/<name>/, so give a plain name")
    assert list(tmp_path.iterdir()) == []


# --- train --resume --------------------------------------------------------------------------------
def unfinished_copy(run: Path, tmp: Path) -> Path:
    """A copy of a trained run that looks interrupted: no metrics.json (and no weights yet)."""
    out = tmp / "unfinished"
    shutil.copytree(run, out)
    (out / rundir.METRICS).unlink()
    (out / rundir.WEIGHTS).unlink()
    return out


def with_checkpoint(run: Path, tmp: Path, content: bytes) -> Path:
    out = unfinished_copy(run, tmp)
    write(out / rundir.CHECKPOINT, content)
    return out


RESUME_CASES = {
    "resume a folder that does not exist": Case(lambda t, r: ["train", "--resume", str(t / "absent")],
                                                "is not a run directory"),
    "resume without a checkpoint": Case(lambda t, r: ["train", "--resume", str(unfinished_copy(r, t))],
                                        "has no checkpoint.pt"),
    "resume a finished run": Case(lambda t, r: ["train", "--resume", str(shutil.copytree(r, t / "done"))],
                                  "already finished"),
    "resume a malicious pickle checkpoint": Case(lambda t, r: [
        "train", "--resume", str(with_checkpoint(r, t, evil_pickle_bytes(t / "MARKER")))], "it holds Python objects"),
    "resume a truncated checkpoint": Case(lambda t, r: [
        "train", "--resume", str(with_checkpoint(r, t, b"PK\x03\x04" + b"\x00" * 20))], "checkpoint.pt' is damaged"),
    "resume a checkpoint of another layout": Case(lambda t, r: [
        "train", "--resume", str(with_checkpoint(r, t, tensor_bytes({"weights": torch.zeros(2)})))],
        "unknown checkpoint format"),
    "resume with a changed config": Case(lambda t, r: [
        "train", "--resume", str(with_checkpoint(r, t, b"")), "--set", "model.cell=gru"], "change model.cell"),
    "resume a finished run with another config": Case(lambda t, r: [  # not first told to pass more epochs
        "train", "--resume", str(shutil.copytree(r, t / "done")), "--config", "gru", "--set", "train.epochs=1"],
        "change data.limit"),
    "continue a run whose schedule spans its epochs": Case(lambda t, r: [
        "train", "--resume", str(scheduled_copy(r, t)), "--set", "train.epochs=4"],
        "cannot change train.epochs of"),
    "resume a classifier run with pretrain-lm": Case(lambda t, r: [
        "pretrain-lm", "--resume", str(shutil.copytree(r, t / "done")), "--set", "train.epochs=5"],
        "is a classifier run; resume it with: sentiment-rnn train --resume"),
    "resume a pretrain-lm run with train": Case(lambda t, r: [
        "train", "--resume", str(lm_config_folder(t)), "--set", "train.epochs=9"],
        "is a pretrain-lm run; resume it with: sentiment-rnn pretrain-lm --resume"),
    "resume an export": Case(lambda t, r: ["train", "--resume", str(exported_copy(r, t))],
                             "is an ONNX export; resume the run it came from"),
}


def scheduled_copy(run: Path, tmp: Path) -> Path:
    """A finished run of train.schedule onecycle, whose rate was spread over its own epochs."""
    copy = shutil.copytree(run, tmp / "onecycle")
    config = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(config.replace("schedule: constant", "schedule: onecycle"))
    assert "schedule: onecycle" in (copy / "config.yaml").read_text()
    return copy


def lm_config_folder(tmp: Path) -> Path:
    """A folder holding pretrain-lm's config.yaml and corpus record, as an LM run's does."""
    from sentiment_rnn import rundir
    from sentiment_rnn.config import LMRunConfig, dump_config, load_config

    folder = tmp / "lm"
    folder.mkdir()
    (folder / rundir.CONFIG).write_text(dump_config(load_config("lm", None, LMRunConfig), LMRunConfig))
    (folder / rundir.CORPUS).write_text("{}")
    return folder


def exported_copy(run: Path, tmp: Path) -> Path:
    from sentiment_rnn.export import export_run

    copy = shutil.copytree(run, tmp / "run")
    export_run(copy, copy / "onnx")
    return copy / "onnx"


def tensor_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(RESUME_CASES))
def test_resume_bad_input_fails_with_one_line_and_runs_no_code(name, tmp_path, tiny_run):
    case = RESUME_CASES[name]
    result = CliRunner().invoke(app, case.build(tmp_path, tiny_run))
    assert_one_line_error(result, case.expected)
    assert not (tmp_path / "MARKER").exists()
    for run in tmp_path.iterdir():
        if run.is_dir() and run.name == "unfinished":
            assert not rundir.is_complete(run) and (run / rundir.CONFIG).is_file()  # kept, still unfinished


def test_malicious_checkpoint_would_run_code_if_unpickled(tmp_path):
    """The control for the case above: the payload is live, so its marker staying absent means something."""
    path = write(tmp_path / "evil.pt", evil_pickle_bytes(tmp_path / "CONTROL"))
    import pickle

    pickle.loads(path.read_bytes())
    assert (tmp_path / "CONTROL").exists()


# --- predict / evaluate, and tampered run directories ----------------------------------------------
def tampered(run: Path, tmp: Path, edit) -> str:
    out = tmp / "tampered"
    shutil.copytree(run, out)
    edit(out)
    return str(out)


def resave_weights(out: Path, change) -> None:
    state = load_file(str(out / rundir.WEIGHTS))
    change(state)
    save_file(state, str(out / rundir.WEIGHTS))
    rehash(out)


def rehash(out: Path) -> None:
    """Record the weights' new sha256 in meta.json, so loading goes past the digest check to the file itself."""
    meta = json.loads((out / rundir.META).read_text())
    meta["weights_sha256"] = rundir.sha256(out / rundir.WEIGHTS)
    (out / rundir.META).write_text(json.dumps(meta))


def shrink_tokenizer(out: Path) -> None:
    tok = json.loads((out / rundir.TOKENIZER).read_text())
    vocab = tok["model"]["vocab"]
    tok["model"]["vocab"] = {w: i for w, i in vocab.items() if i < len(vocab) - 10}
    (out / rundir.TOKENIZER).write_text(json.dumps(tok))


def predict_with(edit, *extra: str):
    return lambda t, r: ["predict", "-m", tampered(r, t, edit), *extra, "a moving film"]


PREDICT_CASES = {
    "empty string": Case(lambda t, r: ["predict", "-m", str(r), ""], "an empty text cannot be classified"),
    "whitespace only": Case(lambda t, r: ["predict", "-m", str(r), "   \t"], "an empty text cannot be classified"),
    "nothing to classify": Case(lambda t, r: ["predict", "-m", str(r)], "nothing to classify"),
    "input file missing": Case(lambda t, r: ["predict", "-m", str(r), "--file", str(t / "absent.txt")],
                               "input file"),
    "model dir missing": Case(lambda t, r: ["predict", "-m", str(t / "absent"), "good"], "does not exist"),
    "model dir is not a run": Case(lambda t, r: ["predict", "-m", str(t), "good"], "is not a run directory"),
    "model dir lacks weights": Case(predict_with(lambda o: (o / rundir.WEIGHTS).unlink()), "has no model.safetensors"),
    "model dir lacks tokenizer": Case(predict_with(lambda o: (o / rundir.TOKENIZER).unlink()), "has no tokenizer.json"),
    "truncated weights": Case(predict_with(lambda o: write(
        o / rundir.WEIGHTS, (o / rundir.WEIGHTS).read_bytes()[:500])), "is not the file training saved"),
    "corrupted weights, digest updated": Case(predict_with(lambda o: (
        write(o / rundir.WEIGHTS, os.urandom(4096)), rehash(o))), "is not a readable safetensors file"),
    "pickle posing as weights": Case(predict_with(lambda o: (write(
        o / rundir.WEIGHTS, evil_pickle_bytes(o.parent / "MARKER")), rehash(o))), "is not a readable safetensors file"),
    "weights of the wrong shape": Case(predict_with(lambda o: resave_weights(
        o, lambda s: s.update({"head.weight": torch.zeros(2, 3)}))), "does not fit config.yaml"),
    "weights missing a key": Case(predict_with(lambda o: resave_weights(o, lambda s: s.pop("head.bias"))),
                                  "does not fit config.yaml"),
    "config naming an unknown cell": Case(predict_with(lambda o: write(
        o / rundir.CONFIG, (o / rundir.CONFIG).read_text().replace("cell: rnn", "cell: transformer"))), "'model.cell'"),
    "config with python tag": Case(predict_with(lambda o: write(
        o / rundir.CONFIG, f"name: !!python/object/apply:os.system ['touch {o.parent / 'MARKER'}']\n")), "config.yaml"),
    "tokenizer vocab does not match": Case(predict_with(shrink_tokenizer), "but the model was built for"),
    "tokenizer not json": Case(predict_with(lambda o: write(o / rundir.TOKENIZER, "{not json")),
                               "is not a valid tokenizer file"),
    "meta garbage": Case(predict_with(lambda o: write(o / rundir.META, "[1, 2]")), "meta.json"),
    "evaluate missing model dir": Case(lambda t, r: ["evaluate", "-m", str(t / "absent")], "does not exist"),
    "model is a file": Case(lambda t, r: ["predict", "-m", str(write(t / "some_file.csv", csv_rows())), "good"],
                            "is a file, not a run directory"),
    "evaluate with a missing column names the option": Case(lambda t, r: [
        "evaluate", "-m", str(r), "--data", str(write(t / "d.csv", csv_rows().replace("text,label", "review,label")))],
        "has no column 'text' (columns: review, label); pass --text-column"),
    "evaluate on data with a missing text": Case(lambda t, r: [
        "evaluate", "-m", str(r), "--data",
        str(write(t / "d.csv", csv_rows(labels=("negative", "positive")) + ",positive\n"))],
        "row 41 has an empty text"),
    "evaluate on data with an unknown label": Case(lambda t, r: [
        "evaluate", "-m", str(r), "--data", str(write(t / "d.csv", csv_rows(labels=("negative", "meh"))))],
        "has label 'meh', which is not one of ['negative', 'positive']"),
    "evaluate a split the data lacks": Case(lambda t, r: [
        "evaluate", "-m", str(r), "--data", str(write(t / "d" / "train.csv", csv_rows()).parent), "--split", "test"],
        "has no split 'test'; pass one of its splits to --split: train"),
    "evaluate on missing data": Case(lambda t, r: ["evaluate", "-m", str(r), "--data", str(t / "absent.csv")],
                                     "not found"),
}


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_predict_and_evaluate_bad_input_fail_with_one_line_and_run_no_code(name, tmp_path, tiny_run):
    case = PREDICT_CASES[name]
    result = CliRunner().invoke(app, case.build(tmp_path, tiny_run))
    assert_one_line_error(result, case.expected)
    assert not (tmp_path / "MARKER").exists()


def ten_megabyte_line(max_length: int) -> tuple[str, str]:
    """(a 10 MB line, its first max_length * CHARS_PER_TOKEN_CAP characters): one long unknown word, then words.
    Read whole, the words after the long one would fill the model's max_length tokens; cut, it reads [UNK] alone."""
    from sentiment_rnn.predict import CHARS_PER_TOKEN_CAP

    head = "x" * (max_length * CHARS_PER_TOKEN_CAP)
    return (head + " a wonderful heartfelt film" * 400_000)[: 10 * 1024 * 1024], head


def test_ten_megabyte_single_line_is_valid_input_and_only_its_first_characters_are_read(tiny_run, tiny_export):
    """Pinned decision: a huge line is valid text. It is cut to max_length tokens' worth of characters
    before tokenizing, so it costs about as much as a short one (on both backends)."""
    text, head = ten_megabyte_line(json.loads((tiny_run / rundir.META).read_text())["max_length"])
    for model in (tiny_run, tiny_export):
        result = CliRunner().invoke(app, ["predict", "-m", str(model), "--format", "json", text, head])
        assert result.exit_code == 0, result.output[-500:]
        whole, cut = json.loads(result.stdout)
        assert whole["label"] in ("negative", "positive")
        assert whole["probabilities"] == cut["probabilities"], model  # the words past the cut were never read


# --- a few through the real installed command, in a subprocess ----------------------------------------
def run_cli(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], input=stdin, capture_output=True, timeout=300)


@pytest.mark.slow
def test_subprocess_missing_config_file(tmp_path):
    proc = run_cli("train", "-c", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "run"))
    assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "config file")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_subprocess_missing_text_cells_name_their_row(tmp_path, tiny_run):
    data = write(tmp_path / "d.csv", csv_rows(labels=("negative", "positive")) + ",positive\n")
    for argv in (["train", "-c", str(TINY), "--set", f"data.source={data}", "-o", str(tmp_path / "run")],
                 ["evaluate", "-m", str(tiny_run), "--data", str(data)]):
        proc = run_cli(*argv)
        assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "row 41 has an empty text")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_subprocess_set_errors_and_model_files_say_what_is_wrong(tmp_path):
    proc = run_cli("train", "-c", str(TINY), "--set", "data.split=[0.5,0.2]", "-o", str(tmp_path / "run"))
    assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "Error: --set data.split=[0.5,0.2]:")
    assert "tiny.yaml" not in proc.stderr.decode()
    proc = run_cli("predict", "-m", str(write(tmp_path / "some_file.csv", csv_rows())), "good")
    assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "is a file, not a run directory")


@pytest.mark.slow
def test_subprocess_empty_string_to_predict(tiny_run):
    proc = run_cli("predict", "-m", str(tiny_run), "")
    assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "an empty text cannot be classified")


@pytest.mark.slow
def test_subprocess_malicious_checkpoint_runs_no_code(tmp_path, tiny_run):
    run = with_checkpoint(tiny_run, tmp_path, evil_pickle_bytes(tmp_path / "MARKER"))
    proc = run_cli("train", "--resume", str(run))
    assert_one_line_error_text(proc.returncode, proc.stdout + proc.stderr, "it holds Python objects")
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.slow
def test_subprocess_ten_megabyte_line_from_a_file_gives_one_jsonl_record(tmp_path, tiny_run):
    text, head = ten_megabyte_line(json.loads((tiny_run / rundir.META).read_text())["max_length"])
    big = write(tmp_path / "big.txt", f"{text}\n{head}\n")
    proc = run_cli("predict", "-m", str(tiny_run), "--file", str(big), "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    whole, cut = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert whole["label"] in ("negative", "positive") and whole["probabilities"] == cut["probabilities"]


# --- the assertion every case shares ------------------------------------------------------------------
def assert_one_line_error(result, expected: str) -> None:
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert_one_line_error_text(result.exit_code, result.output, expected)


def assert_one_line_error_text(code: int, output, expected: str) -> None:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    assert code not in (0, None), text
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, text
    assert expected in errors[0], errors[0]
    assert "Traceback" not in text
