"""ONNX export: the graph matches torch, an export predicts and evaluates without torch, bad exports fail in
one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentiment_rnn.cli import app
from sentiment_rnn.config import ModelConfig
from sentiment_rnn.export import ExportableClassifier, write_onnx
from sentiment_rnn.models import build_model
from sentiment_rnn.onnx_backend import make_session

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

PARITY_MODELS = [  # every recurrence the export must carry: cells, directions, the cells encoder
    dict(cell="rnn"),
    dict(cell="rnn", nonlinearity="relu", bidirectional=True),
    dict(cell="gru"),
    dict(cell="gru", bidirectional=True),
    dict(cell="lstm"),
    dict(cell="lstm", bidirectional=True),
    dict(cell="gru", encoder="cells", bidirectional=True),
    dict(cell="lstm", encoder="cells", hidden_size=[12, 8]),
]


def _mixed_batch(vocab: int, steps: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded [T, B] batch whose lengths run from 1 to T (the longest one sets T)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    ids = torch.randint(2, vocab, (steps, batch), generator=gen)
    ids[torch.arange(steps).view(-1, 1) >= lengths.view(1, -1)] = 0  # [PAD]
    return ids, lengths


@pytest.mark.parametrize("kwargs", PARITY_MODELS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_onnx_probabilities_match_the_models_own_forward(kwargs, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"embedding_dim": 10, "hidden_size": 12, "num_layers": 2, **kwargs})
    model = build_model(cfg, 60, 3, 30).eval()
    path = tmp_path / "model.onnx"
    write_onnx(ExportableClassifier(model), path, 60)
    session = make_session(path, threads=1)
    worst = 0.0
    for steps, batch, seed in ((1, 1, 0), (7, 5, 1), (30, 40, 2)):  # T and B other than the traced 5 and 3
        ids, lengths = _mixed_batch(60, steps, batch, seed)
        with torch.no_grad():
            expected = model(ids, lengths).softmax(-1).numpy()  # [B, C]
        got = session.run(None, {"input_ids": ids.numpy(), "lengths": lengths.numpy()})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
    assert worst <= 1e-5, worst


def test_the_per_word_baseline_is_refused_in_one_line():
    model = build_model(ModelConfig(kind="per_word_linear", embedding_dim=4), 20, 2, 8)
    with pytest.raises(Exception, match="per-word baseline"):
        ExportableClassifier(model)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    """Written by the export command itself (conftest's tiny_export calls the library)."""
    out = Path(os.path.relpath(tmp_path_factory.mktemp("export") / "tiny-onnx"))
    source = os.path.relpath(tiny_run)
    result = runner.invoke(app, ["export", "--model", source, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Exported {source} to {out} (ONNX" in result.output  # both paths as given, not one made absolute
    assert "onnxruntime matches torch" in result.output
    return out.resolve()


def test_export_writes_a_checked_hashed_directory(exported, tiny_run):
    meta = json.loads((exported / "meta.json").read_text())
    assert sorted(p.name for p in exported.iterdir()) == sorted(["meta.json", *meta["files"]])
    assert meta["opset"] >= 17 and meta["parity_max_abs_diff"] <= 1e-5 and meta["parity_rows"] > 0
    assert meta["source_run"] == str(tiny_run.resolve())
    from sentiment_rnn.onnx_backend import sha256

    assert meta["source_weights_sha256"] == sha256(tiny_run / "model.safetensors")
    assert meta["versions"]["onnxruntime"] and meta["versions"]["torch"]
    assert json.loads((exported / "labels.json").read_text()) == ["negative", "positive"]


def _cli(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    code = "import sys; from sentiment_rnn.cli import main; sys.argv[0] = 'sentiment-rnn'; main()"
    return subprocess.run([python, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_predict_and_evaluate_on_an_export_equal_the_runs_and_never_import_torch(exported, tiny_run):
    texts = ["a moving, funny film", "dull", "the plot is a mess but the actors are great"]
    on_run = json.loads(runner.invoke(app, ["predict", "--model", str(tiny_run), "--format", "json", *texts]).stdout)
    code = ("import sys; from sentiment_rnn.cli import main; sys.argv[0] = 'sentiment-rnn'\n"
            "try: main()\nexcept SystemExit as e: assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    for command in (["predict", "--format", "json", *texts], ["evaluate", "--json"]):
        done = subprocess.run([sys.executable, "-c", code, command[0], "--model", str(exported), *command[1:]],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        if command[0] == "predict":
            on_export = json.loads(done.stdout)
            assert [r["label"] for r in on_export] == [r["label"] for r in on_run]
            assert max(abs(a["probability"] - b["probability"]) for a, b in zip(on_export, on_run, strict=True)) <= 1e-5
        else:
            run_metrics = json.loads(runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--json"]).stdout)
            on_export = json.loads(done.stdout)
            assert on_export["confusion_matrix"] == run_metrics["confusion_matrix"]
            assert on_export["source"] == run_metrics["source"]  # the data the rows came from, not the run


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.onnx").unlink(), "has no model.onnx"),
    (lambda d: (d / "meta.json").unlink(), "has no meta.json"),
    (lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"great"', '"grate"')),
     "tokenizer.json' differs from the file that was exported"),
    (lambda d: (d / "labels.json").write_text('["positive", "negative"]'), "labels.json' differs"),
    (lambda d: (d / "meta.json").write_text("{"), "meta.json' is damaged"),
    (lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0"), "model.onnx' differs"),
    (lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text() + "\n"), "config.yaml' differs"),
    (lambda d: (d / "heldout.jsonl").write_text((d / "heldout.jsonl").read_text()[::-1]), "heldout.jsonl' differs"),
])
def test_a_damaged_export_is_one_line_and_exit_1(exported, tmp_path, damage, message):
    broken = _copy(exported, tmp_path)
    damage(broken)
    result = runner.invoke(app, ["predict", "--model", str(broken), "--backend", "onnx", "fine"])
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.startswith("Error:")
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_exporting_a_missing_or_unfinished_run_fails_in_one_line(tiny_run, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output
    unfinished = _copy(tiny_run, tmp_path)
    (unfinished / "metrics.json").unlink()
    result = runner.invoke(app, ["export", "--model", str(unfinished)])
    assert result.exit_code == 1 and "training did not finish" in result.output
    assert not (unfinished / "onnx").exists()


@pytest.mark.parametrize("command", [["explain", "good"], ["inspect"], ["export", "--output", "again"]])
def test_commands_that_need_the_run_name_it_when_given_its_export(exported, tiny_run, tmp_path, command,
                                                                  monkeypatch):
    """Not "training did not finish; train again": the export holds config.yaml but no metrics.json."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [command[0], "--model", str(exported), *command[1:]])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0] == (f"Error: '{exported}' is an ONNX export, which only predict, evaluate and serve read; "
                        f"pass the run it came from ({tiny_run.resolve()}) instead")
    assert not (tmp_path / "again").exists()


def test_export_refuses_to_overwrite_and_bad_option_pairs(exported, tiny_run, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--output", str(exported)])
    assert result.exit_code == 1 and "--overwrite" in result.output
    for more in ([], ["--overwrite"]):  # a folder that is not an export: --overwrite would not help, so not advised
        result = runner.invoke(app, ["export", "--model", str(tiny_run), "--output", str(tiny_run), *more])
        assert result.exit_code == 1 and "is not an export" in result.output and "--overwrite" not in result.output
    assert (tiny_run / "model.safetensors").is_file()  # the run itself is never replaced
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--format", "tflite"])
    assert result.exit_code == 2 and "'onnx'" in result.output  # a usage error listing the one choice
    for args, words in ((["--backend", "torch"], "is an ONNX export"), (["--precision", "bf16"], "runs in fp32")):
        result = runner.invoke(app, ["predict", "--model", str(exported), *args, "fine"])
        assert result.exit_code == 1 and words in result.output, result.output
    result = runner.invoke(app, ["evaluate", "--model", str(exported), "--data", "imdb"])
    assert result.exit_code == 1 and "evaluate the run directory" in result.output
    result = runner.invoke(app, ["predict", "--backend", "onnx", "--model", str(tmp_path), "fine"])
    assert result.exit_code == 1 and "holds no ONNX export" in result.output


# The README's promise: with only these installed (and sentiment-rnn with --no-deps), predict and evaluate work
# on an export. Rather than build such a venv (pip, tens of seconds), every other installed distribution is made
# unimportable in the CLI's process, as if it were not installed.
WITHOUT_TORCH = ["onnxruntime", "tokenizers", "typer", "rich", "numpy", "pyyaml", "pydantic", "scikit-learn"]
ONLY_THESE_INSTALLED = """
import importlib.abc, re, sys
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

allowed, todo = {"sentiment-rnn"}, list(map(norm, sys.argv[1].split(",")))  # sentiment-rnn with --no-deps
while todo:  # the named distributions and everything they require, as pip would install them
    name = todo.pop()
    if name in allowed:
        continue
    allowed.add(name)
    try:
        requires = metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        continue
    todo += [norm(re.split(r"[ ;<>=!~\\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r]
absent = {module for module, dists in metadata.packages_distributions().items()
          if not any(norm(d) in allowed for d in dists)}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)

sys.meta_path.insert(0, NotInstalled())
if sys.argv[2] == "--absent":
    print(",".join(sorted(absent)))
    sys.exit()
sys.argv = ["sentiment-rnn", *sys.argv[2:]]
from sentiment_rnn.cli import main
main()
"""


def only_these_installed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ONLY_THESE_INSTALLED, ",".join(WITHOUT_TORCH), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_predict_and_evaluate_work_with_only_the_readmes_packages_installed(exported, tiny_run):
    absent = set(only_these_installed("--absent").stdout.strip().split(","))
    assert {"torch", "datasets", "safetensors", "matplotlib", "gensim", "captum", "pandas"} <= absent
    assert not {"onnxruntime", "tokenizers", "yaml", "sklearn", "numpy", "sentiment_rnn"} & absent
    predicted = only_these_installed("predict", "--model", str(exported), "--format", "json", "a fine film")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["label"] in ("negative", "positive")
    evaluated = only_these_installed("evaluate", "--model", str(exported), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    # the export's held-out rows are the run's own test rows: the same score training recorded
    recorded = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(recorded["accuracy"])


def test_export_overwrite_replaces_an_export_whole_and_a_parity_failure_writes_nothing(exported, tiny_run, tmp_path,
                                                                                       monkeypatch):
    from sentiment_rnn import export

    out = _copy(exported, tmp_path)
    (out / "stale.txt").write_text("left from an earlier export")
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--output", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(["meta.json", *meta["files"]])

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # any difference, even none, is now too much
    refused = tmp_path / "refused"
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--output", str(refused)])
    assert result.exit_code == 1 and "the ONNX graph's probabilities differ from torch's" in result.output
    assert not refused.exists() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no staging left


def test_an_export_older_than_its_runs_weights_is_refused_for_the_run_and_warned_of_alone(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from sentiment_rnn.export import export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    export_run(run, run / "onnx")
    assert CliRunner().invoke(app, ["predict", "--backend", "onnx", "--model", str(run), "good"]).exit_code == 0
    weights = load_file(str(run / "model.safetensors"))  # as `train --resume` leaves it: other weights
    save_file({k: v + 0.5 for k, v in weights.items()}, str(run / "model.safetensors"))
    refused = CliRunner().invoke(app, ["predict", "--backend", "onnx", "--model", str(run), "good"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert f"holds earlier weights of {run.resolve()}, which has trained since" in refused.output
    assert f"sentiment-rnn export --model {run.resolve()} --overwrite, or use --backend torch" in refused.output
    warned = CliRunner().invoke(app, ["predict", "--model", str(run / "onnx"), "good", "--format", "jsonl"])
    assert warned.exit_code == 0 and "warning:" in warned.stderr and "export it again" in warned.stderr
    assert json.loads(warned.stdout)["label"] in ("negative", "positive")
    scored = CliRunner().invoke(app, ["evaluate", "--model", str(run / "onnx"), "--json"])
    assert scored.exit_code == 0 and "export it again" in json.loads(scored.stdout)["warning"], scored.output
    from sentiment_rnn.serve import load_predictor

    assert "export it again" in load_predictor(run / "onnx")[1]["warning"]  # serve prints it and /metadata has it


@pytest.mark.parametrize("option", [["--label-map", "pos=positive"], ["--text-column", "review"]])
def test_data_options_on_an_export_are_refused_naming_the_option_given(tiny_export, option):
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_export), *option])
    assert result.exit_code == 1 and f"; for {option[0]}, evaluate the run directory" in result.output, result.output


def test_help_says_which_commands_read_an_export():
    for command, reads_exports in (("predict", True), ("evaluate", True), ("explain", False)):
        text = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output.split())
        assert ("Run directory or its ONNX export" in text) is reads_exports, (command, text)
