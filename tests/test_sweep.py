"""sweep: a grid over seeds, each a normal run; its summary is the runs' own mean and sample std; a stopped
sweep continues without retraining what finished. train --report-to tensorboard writes readable events."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_rnn.checkpoint import Reporter
from sentiment_rnn.cli import app
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.predict import Predictor
from sentiment_rnn.probe import load_probe, score_probe
from sentiment_rnn.sweep import parse_grid, parse_seeds, run_sweep, split_values

from in_process import run_cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")
GRID = ["model.cell=gru,lstm"]
RUNS = {(cell, seed): f"model.cell={cell}/seed-{seed}" for seed in (0, 1) for cell in ("gru", "lstm")}


class CtrlCOnThirdRun(Reporter):
    """Presses Ctrl-C (a real SIGINT to this process) at the first step of the sweep's third run."""

    def __init__(self):
        self.runs = 0

    def stage(self, text: str) -> None:
        self.runs += "] Training " in text

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        if self.runs == 3:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny 2 x 2 sweep stopped by Ctrl-C in its third run, then continued through the CLI with 2 jobs (each
    job a process of its own)."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    with pytest.raises(TrainingInterrupted, match="sweep stopped"):
        run_sweep(TINY, GRID, "0,1", out, reporter=CtrlCOnThirdRun())
    finished = {key: out / rel for key, rel in RUNS.items() if (out / rel / "metrics.json").is_file()}
    before = {run: {f: (run / f).stat().st_mtime_ns for f in ("metrics.json", "model.safetensors")}
              for run in finished.values()}
    interrupted = out / RUNS[("gru", 1)]
    assert set(finished) == {("gru", 0), ("lstm", 0)} and (interrupted / "checkpoint.pt").is_file()
    result = run_cli("sweep", "--config", TINY, "--seeds", "0,1", "--set", *GRID, "--output", out, "--jobs", "2",
                     "--report-to", "tensorboard")
    assert result.returncode == 0, result.stderr + result.stdout
    return {"out": out, "before": before, "stdout": result.stdout,
            "summary": json.loads((out / "summary.json").read_text())}


def test_summary_is_the_mean_and_sample_std_of_the_runs_own_metrics(sweep):
    summary = sweep["summary"]
    assert [row["setting"] for row in summary["settings"]] == ["model.cell=gru", "model.cell=lstm"]
    assert summary["seeds"] == [0, 1] and "sample" in summary["std"]
    for row in summary["settings"]:
        cell = row["setting"].split("=")[1]
        metrics = [json.loads((sweep["out"] / RUNS[(cell, seed)] / "metrics.json").read_text()) for seed in (0, 1)]
        own = {"val_accuracy": [m["validation"]["accuracy"] for m in metrics],
               "test_accuracy": [m["test"]["accuracy"] for m in metrics],
               "test_macro_f1": [m["test"]["macro_f1"] for m in metrics],
               "train_seconds": [m["train_seconds"] for m in metrics]}
        for key, values in own.items():
            assert row["mean"][key] == pytest.approx(sum(values) / 2)
            assert row["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)  # n - 1 = 1
        # the data's labels include 'positive': the probe is scored with each run's own model
        predictors = [Predictor.from_dir(sweep["out"] / RUNS[(cell, seed)], threads=1) for seed in (0, 1)]
        right = [score_probe(load_probe(), lambda texts, p=p: p.probabilities(texts)[:, 1].tolist())["flip_rate"]
                 for p in predictors if p.labels == ["negative", "positive"]]
        assert len(right) == 2
        assert row["mean"]["probe_pairs_right"] == pytest.approx(sum(right) / 2)
    by_val = max(summary["settings"], key=lambda row: row["mean"]["val_accuracy"])
    assert summary["best"]["setting"] == by_val["setting"]
    assert summary["best"]["chosen_on"] == "mean validation accuracy"
    assert (sweep["out"] / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "★" in sweep["stdout"] and f"Best on validation: {by_val['setting']}." in sweep["stdout"]


def test_summary_scores_the_probe_per_category_and_counts_seeds_reading_the_readme_pair_right(sweep):
    """What the README's Reading-context table needs, checked against the probe file and each run's predict."""
    from sentiment_rnn.predict import Predictor

    lines = (ROOT / "sentiment_rnn" / "assets" / "context_probe.tsv").read_text().splitlines()
    sizes, category = {}, ""
    for line in lines:
        if line.startswith("#"):
            category = line.lstrip("#").strip()
        else:
            sizes[category] = sizes.get(category, 0) + 0.5  # two sentences a pair
    readme = ["the flower is so beautiful", "i do not think the flower is beautiful"]
    for row in sweep["summary"]["settings"]:
        runs = row["runs"]
        assert {name: c["pairs"] for name, c in row["probe_categories"].items()} == sizes
        for run in runs:  # the categories' pairs right add up to the whole probe's
            right = sum(run["probe_categories"][name] * size for name, size in sizes.items())
            assert right == pytest.approx(run["probe_pairs_right"] * sum(sizes.values()))
        for name, figures in row["probe_categories"].items():
            rates = [run["probe_categories"][name] for run in runs]
            assert figures["mean"] == pytest.approx(sum(rates) / 2)
            assert figures["std"] == pytest.approx(abs(rates[0] - rates[1]) / 2 ** 0.5)
        labels = [[r["label"] for r in Predictor.from_dir(Path(run["run"])).predict(readme)] for run in runs]
        assert row["readme_pair_right"] == labels.count(["positive", "negative"])
    assert sweep["summary"]["readme_pair"] == readme
    assert "Context probe: pairs right on both sides %, per category" in sweep["stdout"]
    assert "README pair right, seeds of 2" in sweep["stdout"]


def test_a_continued_sweep_keeps_finished_runs_and_resumes_the_interrupted_one(sweep):
    out, stdout = sweep["out"], sweep["stdout"]
    for run, mtimes in sweep["before"].items():
        assert {f: (run / f).stat().st_mtime_ns for f in mtimes} == mtimes, f"{run} was trained again"
        assert f"Kept finished run {run}" in stdout
    assert f"Resuming unfinished run model.cell=gru, seed 1 -> {out / RUNS[('gru', 1)]}" in stdout
    assert f"Training model.cell=lstm, seed 1 -> {out / RUNS[('lstm', 1)]}" in stdout
    assert (sweep["summary"]["kept"], sweep["summary"]["resumed"], sweep["summary"]["trained"]) == (2, 1, 1)
    resumed = json.loads((out / RUNS[("gru", 1)] / "metrics.json").read_text())
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert not (out / RUNS[("gru", 1)] / "checkpoint.pt").exists()


def test_running_a_finished_sweep_again_trains_nothing(sweep):
    out = sweep["out"]
    before = {rel: (out / rel / "metrics.json").stat().st_mtime_ns for rel in RUNS.values()}
    result = CliRunner().invoke(app, ["sweep", "-c", str(TINY), "--seeds", "0,1", "--set", *GRID, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {rel: (out / rel / "metrics.json").stat().st_mtime_ns for rel in RUNS.values()} == before
    assert result.output.count("Kept finished run") == 4 and "] Training" not in result.output
    assert "0 run(s) trained, 0 resumed, 4 kept" in result.output


def test_every_sweep_run_is_a_normal_run_and_the_trained_ones_have_tensorboard_events(sweep):
    out = sweep["out"]
    result = CliRunner().invoke(app, ["predict", "--model", str(out / RUNS[("lstm", 1)]), "--format", "json", "a gem"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["label"] in ("negative", "positive")
    # the CLI trained these two with --report-to tensorboard; the two kept from the first part were not
    for key in (("gru", 1), ("lstm", 1)):
        assert list((out / RUNS[key]).glob("events.out.tfevents.*")), key


def test_train_report_to_tensorboard_writes_events_tensorboard_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(run), "--report-to", "tensorboard"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"step/loss", "step/grad_norm", "step/lr", "epoch/train_loss", "epoch/val_accuracy", "epoch/lr",
            "epoch/grad_norm", "epoch/tokens_per_s"} <= set(events.Tags()["scalars"])
    history = metrics["history"]
    assert [e.step for e in events.Scalars("epoch/val_accuracy")] == [h["epoch"] for h in history]
    assert [e.value for e in events.Scalars("epoch/val_accuracy")] == pytest.approx(
        [h["val_accuracy"] for h in history])
    assert [e.value for e in events.Scalars("epoch/tokens_per_s")] == pytest.approx(
        [h["tokens_per_s"] for h in history], rel=1e-6)
    norms = metrics["grad_norm_per_step"]  # recorded before clipping, as the logger's
    assert [e.value for e in events.Scalars("step/grad_norm")] == pytest.approx(norms, abs=1e-4)
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, len(norms) + 1))
    assert [e.value for e in events.Scalars("step/lr")] == pytest.approx([0.002] * len(norms))  # tiny's constant rate


def test_report_to_without_tensorboard_installed_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package makes import do
    for argv in (["train", "-c", str(TINY), "-o", str(tmp_path / "run")],
                 ["sweep", "-c", str(TINY), "--seeds", "0", "-o", str(tmp_path / "sweep")]):
        result = CliRunner().invoke(app, [*argv, "--report-to", "tensorboard"])
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and errors[0].endswith("pip install 'sentiment-rnn[tensorboard]'"), result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("item,expected", [
    ("model.cell=gru,lstm", ("model.cell", ["gru", "lstm"])),
    ("model.hidden_sizes=[20,15]", ("model.hidden_sizes", ["[20,15]"])),
    ("model.hidden_sizes=[20,15],[32]", ("model.hidden_sizes", ["[20,15]", "[32]"])),
    ("train.class_weights=null,balanced,[1, 9]", ("train.class_weights", ["null", "balanced", "[1, 9]"])),
    ("data.source='a,b.csv',c.csv", ("data.source", ["'a,b.csv'", "c.csv"])),
    ("train.lr=1e-3", ("train.lr", ["1e-3"])),
])
def test_set_values_split_on_commas_outside_brackets_and_quotes(item, expected):
    assert split_values(item) == expected


@pytest.mark.parametrize("call,message", [
    (lambda: split_values("model.hidden_sizes=[20,15"), "unclosed bracket"),
    (lambda: split_values("model.cell=gru,,lstm"), "empty value"),
    (lambda: split_values("model.cell"), "not KEY=V1,V2"),
    (lambda: parse_grid(["seed=0,1"]), "--seeds"),
    (lambda: parse_grid(["model.cell=gru", "model.cell=lstm"]), "twice"),
    (lambda: parse_grid(["model.cell=gru,gru"]), "repeats a value"),
    (lambda: parse_seeds("0,one"), "comma-separated list of integers"),
    (lambda: parse_seeds("1,1"), "distinct"),
    (lambda: parse_seeds("0,4294967296"), "from 0 to 2\\*\\*32 - 1"),
])
def test_bad_grid_and_seeds_are_refused_with_the_fix(call, message):
    with pytest.raises(SentimentRNNError, match=message):
        call()


def test_a_bad_value_fails_before_any_run_is_trained_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(app, ["sweep", "-c", str(TINY), "--seeds", "0,1", "--set", "model.cell=gru,grux",
                                      "-o", str(tmp_path / "sweep")])
    assert result.exit_code == 1 and "--set model.cell=grux" in result.output and "Training" not in result.output
    assert not (tmp_path / "sweep").exists()


def test_a_run_trained_with_another_config_is_refused_not_overwritten(tiny_run, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(tiny_run, out / "tiny" / "seed-0")  # tiny's own run, but the sweep asks for hidden_size 8
    before = (out / "tiny" / "seed-0" / "metrics.json").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["sweep", "-c", str(TINY), "--seeds", "0", "--set", "model.hidden_size=8",
                                      "-o", str(out)])
    assert result.exit_code == 1 and "was trained with another config" in result.output, result.output
    assert (out / "tiny" / "seed-0" / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_settings_that_change_only_the_second_stage_train_each_seeds_first_stage_once(tmp_path):
    """2 jobs, 2 seeds, 2 second-stage settings: one first stage per seed, in OUTPUT/stage-one, trained by
    one run and reused by the other (never trained twice side by side)."""
    out = tmp_path / "sweep"
    stage_one = ["stage_one.enabled=true", "stage_one.limit=400", "stage_one.epochs=1", "train.batch_size=16"]
    result = run_cli("sweep", "--config", TINY, "--seeds", "0,1", "--set", "train.epochs=1,2",
                     *[arg for item in stage_one for arg in ("--set", item)], "--output", out, "--jobs", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    firsts = sorted(path.name for path in (out / "stage-one").iterdir())
    assert len(firsts) == 2 and [name.split("-")[-2] for name in firsts] == ["seed0", "seed1"], firsts
    for seed in (0, 1):
        stages = [json.loads((out / f"train.epochs={n}" / f"seed-{seed}" / "stage_one.json").read_text())["stage_one"]
                  for n in (1, 2)]
        assert stages[0]["path"] == stages[1]["path"]
        assert Path(stages[0]["path"]).parent == (out / "stage-one").resolve()
        assert sorted(stage["action"] for stage in stages) == ["reused", "trained"], stages


class CtrlCInSecondRunsSecondStage(Reporter):
    """Presses Ctrl-C (a real SIGINT to this process) at the first step of the second run's second stage."""

    def __init__(self):
        self.second_stages = 0

    def stage(self, text: str) -> None:
        self.second_stages += text.startswith("Stage 2 of 2")

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        if self.second_stages == 2:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_a_continued_two_stage_sweep_keeps_finished_runs_and_resumes_the_second_stage(tmp_path):
    """A two-stage run's config.yaml is its second stage's; the sweep compares the config it was asked to
    train, so continuing keeps the finished run, resumes the stopped second stage, and a third call keeps both."""
    out = tmp_path / "sweep"
    grid = ["train.epochs=1,2", "stage_one.enabled=true", "stage_one.limit=400", "stage_one.epochs=1"]
    with pytest.raises(TrainingInterrupted, match="sweep stopped"):
        run_sweep(TINY, grid, "0", out, reporter=CtrlCInSecondRunsSecondStage())
    stopped = out / "train.epochs=2" / "seed-0"
    assert (out / "train.epochs=1" / "seed-0" / "metrics.json").is_file() and (stopped / "checkpoint.pt").is_file()
    command = [CLI, "sweep", "--config", TINY, "--seeds", "0", *[arg for item in grid for arg in ("--set", item)],
               "--output", out]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "0 run(s) trained, 1 resumed, 1 kept" in result.stdout, result.stdout
    assert [h["epoch"] for h in json.loads((stopped / "metrics.json").read_text())["history"]] == [1, 2]
    again = run_cli(*command[1:])
    assert again.returncode == 0 and "0 run(s) trained, 0 resumed, 2 kept" in again.stdout, again.stderr + again.stdout
