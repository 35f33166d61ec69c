"""A killed or interrupted run resumes to exactly the run it would have been; NaN losses and
reproducibility. Real training (tiny configs, one thread), real subprocesses, real signals."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sentiment_rnn import checkpoint, rundir
from sentiment_rnn.checkpoint import Reporter
from sentiment_rnn.cli import app
from sentiment_rnn.config import load_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.train import train

from conftest import TINY

# 320 training rows / batch 4 = 80 steps per epoch; a checkpoint every 7 steps lands mid-epoch.
# Dropout everywhere, so resuming also has to restore torch's RNG exactly.
RESUMABLE = """\
name: resumable
seed: 3
data: {source: rotten_tomatoes, max_length: 24, limit: 400}
tokenizer: {min_frequency: 1, max_vocab: 2000}
model: {hidden_size: 16, num_layers: 2, dropout: 0.2, embedding_dropout: 0.1, head_dropout: 0.1}
train: {epochs: 3, batch_size: 4, patience: 3, threads: 1, checkpoint_every: 7}
"""
CLI = [sys.executable, "-m", "sentiment_rnn"]
TIMING = ("seconds", "tokens_per_s", "train_seconds")


@pytest.fixture(scope="module")
def resumable_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "resumable.yaml"
    path.write_text(RESUMABLE)
    return path


@pytest.fixture(scope="module")
def uninterrupted(resumable_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    train(load_config(resumable_config), out)
    return out


def without_timing(metrics: dict) -> dict:
    """metrics.json minus wall-clock figures, which legitimately differ between runs."""
    clean = {k: v for k, v in metrics.items() if k not in TIMING}
    clean["history"] = [{k: v for k, v in rec.items() if k not in TIMING} for rec in metrics["history"]]
    return clean


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = (json.loads((r / rundir.METRICS).read_text()) for r in (run, reference))
    assert got["test"] == want["test"]
    assert without_timing(got) == without_timing(want)
    a, b = load_file(str(run / rundir.WEIGHTS)), load_file(str(reference / rundir.WEIGHTS))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def start_training(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", "-c", str(config), "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / rundir.CHECKPOINT).exists():
        assert proc.poll() is None, f"training exited ({proc.returncode}) before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.005)


def saved_progress(out: Path) -> dict:
    return torch.load(out / rundir.CHECKPOINT, weights_only=True)["progress"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_run(resumable_config, uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = start_training(resumable_config, out)
    wait_for_checkpoint(proc, out)
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait()
    assert not rundir.is_complete(out)
    progress = saved_progress(out)
    assert progress["epoch"] == 1 and 0 < progress["batches_done"] < 80, progress  # killed mid-epoch

    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert_same_run(out, uninterrupted)
    assert not (out / rundir.CHECKPOINT).exists()  # a complete run drops its checkpoint,
    assert checkpoint.read(out / checkpoint.FINAL)["progress"]["epoch"] == 4  # and keeps its last epoch's state


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_prints_the_command_that_resumes(resumable_config, uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = start_training(resumable_config, out)
    wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if "Resume with:" in ln]
    assert len(lines) == 1, stderr
    command = lines[0].split("Resume with:", 1)[1].strip()
    assert command == f"sentiment-rnn train --resume {out}"
    assert (out / rundir.CHECKPOINT).is_file() and not rundir.is_complete(out)

    program, *argv = shlex.split(command)  # run exactly the printed arguments
    assert program == "sentiment-rnn"
    resumed = CliRunner().invoke(app, argv)
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(out, uninterrupted)


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory) -> tuple[Path, str]:
    """An AdamW step of 1e6 blows the weights up within a few steps; a checkpoint after every step."""
    out = tmp_path_factory.mktemp("nan") / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(out), "--set", "train.lr=1e6",
                                      "--set", "train.checkpoint_every=1"])
    return out, result


def test_non_finite_loss_stops_naming_the_step_and_the_fix_and_keeps_the_last_checkpoint(nan_run):
    out, result = nan_run
    assert result.exit_code == 1
    error = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert "loss became nan at epoch 1 step" in error[0] or "loss became inf at epoch 1 step" in error[0]
    assert "lower train.lr" in error[0] and "train.clip_grad_norm" in error[0]
    assert f"sentiment-rnn train --resume {out}" in error[0]
    assert not rundir.is_complete(out)
    progress = saved_progress(out)  # the last checkpoint is readable with weights_only=True
    assert progress["step"] >= 1


def test_non_finite_loss_before_any_checkpoint_leaves_no_run_directory(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(out), "--set", "train.lr=1e6"])
    assert result.exit_code == 1
    assert "before the first checkpoint" in result.output and "lower train.lr" in result.output
    assert not out.exists()


def test_unfinished_run_is_refused_by_train_predict_and_a_changed_resume(nan_run):
    out, _ = nan_run
    cases = [
        (["train", "-c", str(TINY), "-o", str(out)], f"continue it with --resume {out}"),
        (["predict", "-m", str(out), "a fine film"], f"resume it with: sentiment-rnn train --resume {out}"),
        (["evaluate", "-m", str(out)], f"resume it with: sentiment-rnn train --resume {out}"),
        (["train", "--resume", str(out), "--set", "model.hidden_size=8"], "change model.hidden_size"),
        (["train", "--resume", str(out), "--overwrite"], "drop --overwrite"),
    ]
    for argv, expected in cases:
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1, (argv, result.output)
        assert expected in result.output, (argv, result.output)
        assert (out / rundir.CHECKPOINT).is_file()  # the unfinished run is still there


def test_resume_may_restate_the_run_config_and_lower_the_learning_rate(nan_run):
    out, _ = nan_run
    assert checkpoint.resume_config(out, TINY, ["train.checkpoint_every=1", "train.lr=1e6"]).train.lr == 1e6
    assert checkpoint.resume_config(out, None, ["train.lr=1e-4"]).train.lr == 1e-4


def test_same_config_and_seed_on_cpu_give_identical_metrics_and_weights(tiny_run, tmp_path):
    again = tmp_path / "again"
    train(load_config(TINY), again)
    assert_same_run(again, tiny_run)


def test_run_records_python_library_versions_and_git_commit(tiny_run):
    versions = json.loads((tiny_run / rundir.META).read_text())["versions"]
    for key in ("python", "torch", "datasets", "tokenizers", "sentiment-rnn", "git_commit"):
        assert key in versions
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    if os.path.isdir(Path(__file__).resolve().parent.parent / ".git"):
        assert versions["git_commit"] and len(versions["git_commit"]) == 40


# Continuing a finished run with more epochs. Tiny runs 2 epochs with patience 2 and its second epoch is
# its best, so early stopping does not interfere: 2 epochs + 1 more must be exactly the 3-epoch run.
@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("three") / "run"
    train(load_config(TINY, ["train.epochs=3"]), out)
    return out


def continue_run(run: Path, *sets: str):
    argv = ["train", "--resume", str(run)]
    for item in sets:
        argv += ["--set", item]
    return CliRunner().invoke(app, argv)


def test_a_finished_run_continues_from_its_last_epoch_to_exactly_the_longer_run(tiny_run, three_epochs, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    two = json.loads((run / rundir.METRICS).read_text())
    assert len(two["history"]) == 2 and checkpoint.read(run / checkpoint.FINAL)["progress"]["epoch"] == 3

    result = continue_run(run, "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert "Continuing the finished run with epoch 3" in result.output
    assert_same_run(run, three_epochs)  # history, test scores and best weights
    three = json.loads((run / rundir.METRICS).read_text())
    assert without_timing(three)["history"][:2] == without_timing(two)["history"]  # the history is kept
    steps_per_epoch = len(two["grad_norm_per_step"]) // 2
    assert len(three["grad_norm_per_step"]) == 3 * steps_per_epoch  # exactly one more epoch trained
    final, reference = (checkpoint.read(r / checkpoint.FINAL) for r in (run, three_epochs))
    assert final["progress"]["epoch"] == 4 and final["progress"]["step"] == 3 * steps_per_epoch
    assert all(torch.equal(final["model"][k], reference["model"][k]) for k in reference["model"])  # last epoch's
    assert load_config(run / rundir.CONFIG).train.epochs == 3
    assert not (run / rundir.CHECKPOINT).exists()


def test_a_reopened_run_reads_as_unfinished_until_the_continuation_completes(tiny_run, three_epochs, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    assert checkpoint.reopen(run) == (3, False)  # the state a kill right after reopening leaves
    assert not rundir.is_complete(run) and (run / rundir.CHECKPOINT).is_file()
    refused = CliRunner().invoke(app, ["predict", "-m", str(run), "a fine film"])
    assert refused.exit_code == 1 and f"resume it with: sentiment-rnn train --resume {run}" in refused.output
    result = continue_run(run, "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert_same_run(run, three_epochs)


def test_a_run_that_stopped_early_continues_with_a_fresh_patience(tmp_path):
    run = tmp_path / "run"
    train(load_config(TINY, ["train.epochs=10", "train.patience=1"]), run)
    before = json.loads((run / rundir.METRICS).read_text())["history"]
    assert len(before) < 10, "patience 1 was expected to stop this run early"
    assert checkpoint.read(run / checkpoint.FINAL)["progress"]["stopped"]

    result = continue_run(run, "train.epochs=11")
    assert result.exit_code == 0, result.output
    assert "patience starts afresh" in result.output
    after = json.loads((run / rundir.METRICS).read_text())["history"]
    assert len(after) > len(before) and [r["epoch"] for r in after] == list(range(1, len(after) + 1))
    assert without_timing({"history": after})["history"][:len(before)] == without_timing({"history": before})["history"]


@pytest.mark.parametrize("sets, expected", [
    ((), "already finished; train a new run with --output DIR, or continue it with more epochs"),
    (("train.epochs=2",), "already finished"),
    (("train.epochs=1",), "train.epochs=1 is not more than its own train.epochs=2"),
    (("train.epochs=3", "model.hidden_size=8"), "change model.hidden_size"),
])
def test_continuing_a_finished_run_refuses_fewer_epochs_and_other_changes(tiny_run, tmp_path, sets, expected):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    result = continue_run(run, *sets)
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert rundir.is_complete(run) and not (run / rundir.CHECKPOINT).exists()  # the finished run is untouched


def test_a_finished_run_without_its_final_state_cannot_continue(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / checkpoint.FINAL).unlink()
    result = continue_run(run, "train.epochs=3")
    assert result.exit_code == 1
    assert f"has no {checkpoint.FINAL}" in result.output and rundir.is_complete(run)


def test_an_unfinished_run_may_raise_its_epochs_but_not_lower_them(nan_run):
    out, _ = nan_run
    assert checkpoint.resume_config(out, None, ["train.epochs=5"]).train.epochs == 5
    with pytest.raises(SentimentRNNError, match="may raise train.epochs, not lower it"):
        checkpoint.resume_config(out, None, ["train.epochs=1"])


class StopAfter(Reporter):
    """Ends training with an error after `steps` batches, as a crash would (the checkpoint is older)."""

    def __init__(self, steps: int):
        self.steps = steps

    def step(self, loss, tokens, accuracy=None):
        self.steps -= 1
        if self.steps == 0:
            raise RuntimeError("crash")


def test_a_scheduled_run_resumes_to_the_uninterrupted_run(tmp_path):
    extra = ["train.schedule=onecycle", "train.layer_lr_decay=2.0", "train.unfreeze=1", "model.pooling=concat",
             "train.epochs=2", "train.patience=2", "train.checkpoint_every=7", "train.batch_size=16", "data.limit=200"]
    config = load_config(TINY, extra)
    train(config, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="crash"):
        # epoch 2, two steps after the checkpoint at step 14
        train(config, tmp_path / "resumed", reporter=StopAfter(16))
    assert (tmp_path / "resumed" / rundir.CHECKPOINT).is_file()
    train(config, tmp_path / "resumed", resume=True)
    a, b = (load_file(str(tmp_path / r / rundir.WEIGHTS)) for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    got, want = (json.loads((tmp_path / r / rundir.METRICS).read_text()) for r in ("straight", "resumed"))
    assert got["test"] == want["test"] and got["grad_norm_per_step"] == want["grad_norm_per_step"]


def test_overwrite_replaces_the_whole_run_directory_leaving_no_stale_state(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / rundir.CHECKPOINT).write_bytes(b"stale checkpoint of an earlier run")
    (run / checkpoint.FINAL).write_bytes(b"stale final state of an earlier run")
    (run / "notes.txt").write_text("left by hand")
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(run), "--overwrite",
                                      "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert rundir.is_complete(run) and not (run / rundir.CHECKPOINT).exists() and not (run / "notes.txt").exists()
    assert checkpoint.read(run / checkpoint.FINAL)["progress"]["epoch"] == 2  # this run's own final state
    assert len(json.loads((run / rundir.METRICS).read_text())["history"]) == 1


CSV_ROWS = [(f"a {'great' if i % 2 else 'dull'} film, review {i}", i % 2) for i in range(80)]


def write_csv(path: Path, rows) -> Path:
    path.write_text("text,label\n" + "".join(f'"{text}",{label}\n' for text, label in rows))  # the texts hold commas
    return path


@pytest.mark.parametrize("state", ["finished", "unfinished"])
def test_resume_refuses_data_that_changed_since_training_started(state, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", CSV_ROWS)
    run = tmp_path / "run"
    train(load_config(TINY, [f"data.source={data}", "train.epochs=1", "train.grad_probe_epochs=[]"]), run)
    if state == "unfinished":  # as a kill after the first epoch leaves it
        shutil.copyfile(run / checkpoint.FINAL, run / rundir.CHECKPOINT)
        (run / rundir.METRICS).unlink()
    write_csv(data, [(text, 1 - label) if i == 3 else (text, label) for i, (text, label) in enumerate(CSV_ROWS)])
    before = sorted(p.name for p in run.iterdir())
    result = continue_run(run, "train.epochs=2")
    assert result.exit_code == 1, result.output
    assert f"the data of '{run}' changed since training started" in result.output
    assert sorted(p.name for p in run.iterdir()) == before and rundir.is_complete(run) == (state == "finished")


def test_resume_refuses_a_checkpoint_whose_weights_do_not_fit_the_model(tiny_run, tmp_path):
    import io

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    ckpt = checkpoint.read(run / checkpoint.FINAL)
    del ckpt["model"]["head.bias"]  # a readable checkpoint, but not of this model
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    (run / rundir.CHECKPOINT).write_bytes(buffer.getvalue())
    (run / rundir.METRICS).unlink()
    result = continue_run(run)
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "checkpoint.pt' is damaged or was not written by sentiment-rnn" in errors[0]
    assert "head.bias" in errors[0] and "train again with --overwrite" in errors[0]
    assert (run / rundir.CHECKPOINT).is_file() and not rundir.is_complete(run)
