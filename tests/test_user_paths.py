"""What a new user met on the README's own paths (issue 22): each case runs the installed `sentiment-rnn`,
in a real subprocess where the process itself matters (its arguments, stdin, a missing torch), else
through Typer's CliRunner."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_rnn.cli import app

from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")


def cli(*args, stdin: str | None = None, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, input=stdin, cwd=cwd,
                          timeout=300, env={**os.environ, "COLUMNS": "200", **(env or {})})


def one_line_error(result, *expected: str) -> str:
    """The result failed with exactly one `Error:` line naming each expected piece, and no traceback."""
    if hasattr(result, "returncode"):  # a subprocess
        output, failed = result.stderr, result.returncode != 0
    else:  # Typer's CliRunner
        output, failed = result.output, result.exit_code != 0
    assert failed, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "Traceback" not in output
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- item 1
def test_evaluate_on_an_export_keeps_texts_whose_characters_str_splitlines_would_split_at(tiny_export, tmp_path):
    export = tmp_path / "onnx"
    shutil.copytree(tiny_export, export)
    heldout = export / "heldout.jsonl"
    rows = [json.loads(line) for line in heldout.read_text(encoding="utf-8").split("\n") if line]
    tests = [row for row in rows if row["split"] == "test"]
    tests[0]["text"] = "a next line\u0085inside, and a line separator\u2028too " + tests[0]["text"]
    heldout.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    meta = json.loads((export / "meta.json").read_text())
    meta["files"]["heldout.jsonl"] = hashlib.sha256(heldout.read_bytes()).hexdigest()
    (export / "meta.json").write_text(json.dumps(meta))
    result = cli("evaluate", "--model", export, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == len(tests)


def test_left_out_phrases_of_an_export_or_a_run_carved_by_row_are_one_line_errors(tiny_export, tiny_run):
    one_line_error(cli("evaluate", "--model", tiny_export, "--split", "left-out"),
                   "holds only its run's test and validation rows, not 'left-out'", "evaluate the run directory")
    one_line_error(cli("evaluate", "--model", tiny_run, "--split", "left-out"),
                   "carved row by row, so it left no phrases out", "--split validation or test")
    one_line_error(CliRunner().invoke(app, ["evaluate", "--model", str(tiny_run), "--split", "bogus"]),
                   "records only its test and validation rows, not 'bogus'")  # never offers left-out it lacks
    one_line_error(CliRunner().invoke(app, ["evaluate", "--model", str(tiny_run), "--split", "train"]),
                   "'train' is the split this run trained on", "score --split test or validation")
    one_line_error(CliRunner().invoke(app, ["predict", "--model", str(tiny_run / "model.safetensors"), "good"]),
                   f"is a file, not a run directory; pass the folder holding it, {tiny_run}")


def test_language_model_text_documents_end_at_newlines_only(tmp_path):
    from sentiment_rnn.inputs import lines

    path = tmp_path / "corpus.txt"
    path.write_bytes("one\u2028document\r\ntwo\u0085still two\nthree\x0cpage\n".encode())
    assert list(lines(path)) == ["one\u2028document", "two\u0085still two", "three\x0cpage"]


# ------------------------------------------------------------------------------------------- item 2
def test_predict_refuses_weights_changed_after_training(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = bytearray((run / "model.safetensors").read_bytes())
    middle = len(weights) // 2
    weights[middle:middle + 8] = b"\x7f" * 8  # still a valid safetensors file: only some weights change
    (run / "model.safetensors").write_bytes(bytes(weights))
    one_line_error(cli("predict", "--model", run, "a moving film"), f"'{run / 'model.safetensors'}'",
                   "sha256", "train again")


# ------------------------------------------------------------------------------------------- item 3
def test_error_text_is_printed_literally_not_as_rich_markup(tmp_path):
    missing = tmp_path / "runs" / "missing[v2]"
    line = one_line_error(cli("predict", "--model", missing, "good"), f"'{missing}'")
    assert "[v2]" in line


# ------------------------------------------------------------------------------------------- item 4
def test_predict_and_explain_read_a_pipe_dev_stdin_and_process_substitution(tiny_run, tmp_path):
    fifo = tmp_path / "texts.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf 'good\\nbad\\n' > '{fifo}'"])
    try:
        piped = cli("predict", "--model", tiny_run, "--format", "jsonl", "--file", fifo)
    finally:
        writer.kill()  # blocked forever when nothing opened the pipe
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["text"] for line in piped.stdout.splitlines()] == ["good", "bad"]
    from_stdin = cli("predict", "--model", tiny_run, "--format", "jsonl", "--file", "/dev/stdin", stdin="fine\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["text"] == "fine"
    for command, out in (("predict", "jsonl"), ("explain", "json")):  # --file - is stdin, as '-' alone is
        dashed = cli(command, "--model", tiny_run, "--format", out, "--file", "-", stdin="a moving film\n")
        assert dashed.returncode == 0, dashed.stderr
        assert "a moving film" in dashed.stdout
    substituted = subprocess.run(["bash", "-c", f"'{CLI}' explain --model '{tiny_run}' --format json "
                                  "--file <(printf 'a moving film\\n')"], capture_output=True, text=True, timeout=300)
    assert substituted.returncode == 0, substituted.stderr
    assert json.loads(substituted.stdout)[0]["text"] == "a moving film"
    one_line_error(CliRunner().invoke(app, ["predict", "--model", str(tiny_run), "--file", str(tmp_path)]),
                   "is a directory")


def test_fast_on_an_export_is_refused_like_bf16_not_ignored(tiny_export):
    for option in (["--fast"], ["--precision", "bf16"]):
        one_line_error(CliRunner().invoke(app, ["predict", "--model", str(tiny_export), *option, "good"]),
                       "drop --" + option[0].removeprefix("--"))


def test_a_dash_among_texts_and_an_empty_text_argument_are_refused_by_position(tiny_run):
    for command in ("predict", "explain"):
        one_line_error(CliRunner().invoke(app, [command, "--model", str(tiny_run), "-", "good"], input="bad\n"),
                       "'-' reads the texts from stdin and stands alone")
        one_line_error(CliRunner().invoke(app, [command, "--model", str(tiny_run), "good", "  "]),
                       "TEXT argument 2 of 2 is empty")



def test_an_empty_stdin_or_file_is_refused_before_a_model_is_read(tiny_run, tiny_export, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for model in (tiny_run, tiny_export):  # the torch and the onnxruntime backends read texts the same way
        piped = cli("predict", "--model", model, "--format", "jsonl", "-", stdin="")
        assert piped.stdout == ""
        one_line_error(piped, "stdin is empty; nothing to classify")
    one_line_error(cli("explain", "--model", tiny_run, "--file", empty), f"input file '{empty}' is empty",
                   "nothing to explain")
    # Typer's runner gives stdin as an in-memory stream, without peek()
    one_line_error(CliRunner().invoke(app, ["predict", "--model", str(tiny_run), "-"], input=""),
                   "stdin is empty")
    kept = CliRunner().invoke(app, ["predict", "--model", str(tiny_run), "--format", "jsonl", "-"], input="good\n")
    assert kept.exit_code == 0 and json.loads(kept.stdout)["text"] == "good"  # looking did not consume a byte


# ------------------------------------------------------------------------------------------- item 5
NO_TORCH = """
import sys
class NoTorch:  # an export-only install: `import torch` fails as it would without the package
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from sentiment_rnn.cli import main
sys.argv = ["sentiment-rnn", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [["predict", "--model", "RUN", "good"], ["train", "--config", "tiny"]])
def test_without_torch_a_command_that_needs_it_says_what_to_install(args, tiny_run, tmp_path):
    argv = [str(tiny_run) if a == "RUN" else a for a in args]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    one_line_error(result, "torch is not installed", "pip install torch==2.13.0")


# ------------------------------------------------------------------------------------------- item 7
def test_without_model_the_latest_run_is_never_a_language_model(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "runs" / "classifier")
    lm = tmp_path / "runs" / "lm"
    shutil.copytree(tiny_run, lm)
    meta = json.loads((lm / "meta.json").read_text())
    (lm / "meta.json").write_text(json.dumps({**meta, "kind": "language_model"}))
    os.utime(lm / "metrics.json")  # the most recent run under runs/
    for command in ("predict", "explain"):  # each says on stderr which run it read
        result = run_cli(command, "good", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Using runs/classifier, the most recent complete run" in result.stderr, command


# ------------------------------------------------------------------------------------------- item 9
def test_throughput_line_counts_one_text_in_the_singular(tiny_run):
    result = cli("predict", "--model", tiny_run, "-", stdin="a moving film\n")
    assert result.returncode == 0, result.stderr
    assert "1 text in " in result.stderr


# ------------------------------------------------------------------------------------------- item 6
def test_explain_leans_toward_target_or_a_positive_label_in_any_case_else_the_predicted_class(tiny_run):
    from sentiment_rnn.explain import target_class

    result = CliRunner().invoke(app, ["explain", "--model", str(tiny_run), "--format", "json", "--target", "negative",
                                      "a moving film"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["target"] == "negative"
    assert record["tokens"][-1]["p_running"] == pytest.approx(record["probabilities"]["negative"], abs=1e-5)
    one_line_error(CliRunner().invoke(app, ["explain", "--model", str(tiny_run), "--target", "good", "fine"]),
                   "--target 'good' is not one of the model's labels")
    assert target_class(["NEG", "POS"]) == 1 and target_class(["bad", "good", "neutral"]) is None


def test_continuing_a_finished_run_by_one_epoch_names_that_epoch(tmp_path):
    run = tmp_path / "run"
    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    first = CliRunner().invoke(app, ["train", "-c", str(tiny), "--set", "train.epochs=1", "--set", "data.limit=120",
                                     "-o", str(run)])
    assert first.exit_code == 0, first.output
    more = CliRunner().invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert more.exit_code == 0, more.output
    assert "Continuing the finished run with epoch 2" in more.output and "to 2" not in more.output


# ------------------------------------------------------------------------------------------- item 8
def test_help_shows_no_bool_metavar_nor_cut_words_at_80_columns_and_flags_take_no_value(tiny_run):
    for command in ("predict", "compare-baseline", "pretrain-embeddings", "train"):
        shown = cli(command, "--help", env={"COLUMNS": "80"}).stdout
        assert "Usage" in shown and "<bool>" not in shown and "…" not in shown, shown
        assert max(len(line) for line in shown.splitlines()) <= 80
    refused = cli("predict", "--model", tiny_run, "--fast", "true", "good")
    assert refused.returncode == 2 and "--fast is a flag and takes no value" in refused.stderr
    assert not refused.stdout


# ------------------------------------------------------------------------------------------- item 9
def test_a_shape_mismatch_names_both_shapes_whole(tiny_run, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from sentiment_rnn import rundir

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = load_file(str(run / "model.safetensors"))
    state["encoder.rnn.weight_ih_l0"] = torch.zeros(2560, 10, 1)
    save_file(state, str(run / "model.safetensors"))
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "weights_sha256": rundir.sha256(run / "model.safetensors")}))
    line = one_line_error(CliRunner().invoke(app, ["predict", "--model", str(run), "good"]), "does not fit config.yaml")
    assert "torch.Size([2560, 10, 1])" in line and "torch.Size([16, 100])" in line and line.endswith("; train again")


def test_a_data_file_under_a_folder_named_with_brackets_is_read_as_itself(tmp_path):
    from sentiment_rnn.config import DataConfig
    from sentiment_rnn.sources import load_raw

    folder = tmp_path / "[v2]data"  # a glob pattern would read "[v2]" as one character, "v" or "2"
    folder.mkdir()
    (folder / "reviews.csv").write_text("text,label\ngood film,positive\nbad film,negative\nfine,positive\n")
    raw = load_raw(DataConfig(source=str(folder / "reviews.csv")))
    assert raw["train"]["text"] == ["good film", "bad film", "fine"]


def test_a_taken_output_folder_is_the_first_and_only_thing_train_says(tiny_run, tmp_path):
    taken = tmp_path / "taken"
    shutil.copytree(tiny_run, taken)
    for command in ("train", "pretrain-lm"):
        result = CliRunner().invoke(app, [command, "-o", str(taken)])
        assert result.output.startswith("Error: run directory"), result.output  # no "Training ..." header first
        one_line_error(result, f"'{taken}' already exists; pass --overwrite")
