"""checkpoint.py's promises checked in-process, in milliseconds: what a checkpoint round-trips (weights, learning
rates, RNG, pretrain-lm's carried state), which files it refuses and with which words, when a run may resume or
continue, and Ctrl-C's handler. A tiny nn.LSTM and hand-made run directories stand in for a trained run, so
mutation testing (scripts/mutate.py checkpoint) sees every check; test_checkpoint_resume.py trains for real."""

import io
import random
import re
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sentiment_rnn import checkpoint, rundir
from sentiment_rnn.checkpoint import Progress, Reporter
from sentiment_rnn.config import Config, LMRunConfig, TrainConfig, dump_config, load_config
from sentiment_rnn.errors import SentimentRNNError

from conftest import TINY

DAMAGED = "is damaged or was not written by sentiment-rnn"


def tiny_parts(lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer]:
    """An LSTM and an AdamW whose two groups carry lr_scale, as train.layer_lr_decay builds them."""
    model = nn.LSTM(3, 4, num_layers=2)
    optimizer = torch.optim.AdamW([{"params": model.weight_ih_l0, "lr_scale": 1.0},
                                   {"params": model.weight_hh_l0, "lr_scale": 0.5}], lr=lr)
    return model, optimizer


def saved(path: Path, **content) -> Path:
    torch.save(content, path)
    return path


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(SentimentRNNError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# What a checkpoint carries across a resume


def test_next_epoch_clears_every_per_epoch_counter_and_keeps_the_run_totals():
    progress = Progress(epoch=2, batches_done=9, step=30, seen=40, correct=25, loss_sum=3.5, tokens=400,
                        seconds=2.5, history=[{"epoch": 1}], train_seconds=1.0, train_tokens=300)
    progress.next_epoch()
    assert progress == Progress(epoch=3, step=30, history=[{"epoch": 1}], train_seconds=1.0, train_tokens=300)


@pytest.mark.parametrize("hidden", [None, "h", "h_c"])
def test_load_returns_the_saved_hidden_state_of_pretrain_lms_stream(hidden, tmp_path):
    h, c = torch.randn(2, 3, 4), torch.randn(2, 3, 4)  # (layers, streams, hidden): an RNN's h, an LSTM's (h, c)
    carried = {"None": None, "h": h, "h_c": (h, c)}[str(hidden)]
    model, optimizer = tiny_parts()
    checkpoint.save(tmp_path / "ckpt.pt", model, optimizer, Progress(), hidden=carried)
    _, got = checkpoint.load(tmp_path / "ckpt.pt", *tiny_parts(), lr=0.1)
    if carried is None:
        assert got is None
    elif isinstance(carried, tuple):
        assert isinstance(got, tuple) and len(got) == 2 and torch.equal(got[0], h) and torch.equal(got[1], c)
    else:
        assert isinstance(got, torch.Tensor) and torch.equal(got, h)


def test_load_restores_weights_and_random_generators_and_sets_the_resumed_learning_rate(tmp_path):
    model, optimizer = tiny_parts(lr=0.1)
    checkpoint.save(tmp_path / "ckpt.pt", model, optimizer, Progress(epoch=2, step=7))
    draws = (torch.rand(3), random.random(), np.random.rand(3))  # what the uninterrupted run draws next
    other, other_optimizer = tiny_parts(lr=0.1)
    progress, _ = checkpoint.load(tmp_path / "ckpt.pt", other, other_optimizer, lr=0.01)  # a resume lowering lr
    assert (progress.epoch, progress.step) == (2, 7)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))
    assert [g["lr"] for g in other_optimizer.param_groups] == [0.01, 0.005]  # times each group's lr_scale
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(again[0], draws[0]) and again[1] == draws[1] and np.array_equal(again[2], draws[2])


def test_load_names_the_missing_part_of_a_readable_but_incomplete_checkpoint(tmp_path):
    model, optimizer = tiny_parts()
    checkpoint.save(tmp_path / "ckpt.pt", model, optimizer, Progress())
    content = checkpoint.read(tmp_path / "ckpt.pt")
    del content["progress"]
    path = saved(tmp_path / "ckpt.pt", **content)
    message = refusal(checkpoint.load, path, model, optimizer, lr=0.1)
    assert message == f"'{path}' {DAMAGED} ('progress'); train again with --overwrite"


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path):
    """torch.save records each tensor's device; without map_location a CPU-only machine refuses cuda tensors."""
    model, optimizer = tiny_parts()
    checkpoint.save(tmp_path / "ckpt.pt", model, optimizer, Progress())
    written = zipfile.ZipFile(tmp_path / "ckpt.pt")
    on_gpu = io.BytesIO()
    with zipfile.ZipFile(on_gpu, "w", zipfile.ZIP_STORED) as archive:  # the same file, its tensors tagged cuda:0
        for item in written.infolist():
            data = written.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            archive.writestr(item.filename, data)
    assert b"cuda:0" in on_gpu.getvalue()
    (tmp_path / "gpu.pt").write_bytes(on_gpu.getvalue())
    content = checkpoint.read(tmp_path / "gpu.pt")
    assert all(t.device.type == "cpu" for t in content["model"].values())


# Files read() refuses, each with a one-line error naming the file and the fix


class OpensAFile:
    """Unpickling this runs code: it creates a file. A checkpoint must never do that."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


@pytest.mark.parametrize("force_no_weights_only", [False, True])
def test_read_refuses_a_checkpoint_holding_python_objects_without_running_them(force_no_weights_only, tmp_path,
                                                                                monkeypatch):
    if force_no_weights_only:  # torch's own switch back to full unpickling must not reach our loads
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ran = tmp_path / "ran"
    path = saved(tmp_path / "ckpt.pt", format=checkpoint.FORMAT, model={}, payload=OpensAFile(ran))
    message = refusal(checkpoint.read, path)
    assert not ran.exists()
    assert message == (f"'{path}' {DAMAGED}: it holds Python objects, not only tensors and plain values, and was "
                       "not loaded (it may have been tampered with); train again with --overwrite")


def test_read_names_the_first_sentence_of_the_reason_a_truncated_checkpoint_fails(tmp_path):
    whole = saved(tmp_path / "whole.pt", format=checkpoint.FORMAT, model={"w": torch.zeros(64)}).read_bytes()
    path = tmp_path / "ckpt.pt"
    path.write_bytes(whole[: len(whole) // 2])
    message = refusal(checkpoint.read, path)
    # torch's error is several sentences ("... central directory. This is an internal miniz error. ..."): only
    # the first, which says what is wrong, goes into the one-line error
    assert re.fullmatch(rf"'{re.escape(str(path))}' {DAMAGED} \(PytorchStreamReader failed reading zip archive"
                        r"[^.;()]+\); train again with --overwrite", message), message


def test_read_names_the_error_type_when_torch_gives_no_reason(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"")  # torch.load raises a bare EOFError
    assert refusal(checkpoint.read, path) == f"'{path}' {DAMAGED} (EOFError); train again with --overwrite"


@pytest.mark.parametrize("content", [{"format": 99}, {"model": {}}, [1, 2]])
def test_read_refuses_an_unknown_checkpoint_format(content, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(content, path)
    message = refusal(checkpoint.read, path)
    assert message == f"'{path}' {DAMAGED} (unknown checkpoint format); train again with --overwrite"


def test_read_says_an_earlier_pretrain_lm_wrote_its_old_layout(tmp_path):
    path = saved(tmp_path / "ckpt.pt", format="lm-1", model={})
    assert refusal(checkpoint.read, path) == (f"'{path}' was written by an earlier pretrain-lm, whose optimizer this "
                                              "version no longer builds; start the run again with --overwrite")


# When a run may resume or continue: hand-made run directories, only the files these checks read


def run_dir(path: Path, config: Config, *files: str) -> Path:
    path.mkdir()
    (path / rundir.CONFIG).write_text(dump_config(config))
    for name in files:
        (path / name).write_bytes(b"")
    return path


def finished_run(path: Path, final: Progress | None) -> Path:
    """A complete run of tiny.yaml (2 epochs), with its final state when `final` is given."""
    run = run_dir(path, load_config(TINY), rundir.TOKENIZER, rundir.WEIGHTS, rundir.META, rundir.METRICS)
    rundir.write_json(run / rundir.SPLIT, {"rows": 80})
    if final is not None:
        checkpoint.save(run / checkpoint.FINAL, *tiny_parts(), final)
    return run


def test_resume_refuses_a_folder_that_is_not_a_run_or_has_no_checkpoint(tmp_path):
    missing = tmp_path / "missing"
    assert refusal(checkpoint.resume_config, missing) == (
        f"cannot resume: '{missing}' is not a run directory; pass the folder of an unfinished run")
    empty = tmp_path / "empty"  # not even a config.yaml: the missing checkpoint is what to report
    empty.mkdir()
    assert refusal(checkpoint.resume_config, empty) == (
        f"cannot resume: '{empty}' has no checkpoint.pt (training stopped before its first checkpoint); "
        "train again with --overwrite")
    (empty / "notes.txt").write_text("the user's own")  # --overwrite would refuse it: not a run, said so
    assert refusal(checkpoint.resume_config, empty) == (
        f"cannot resume: '{empty}' is not a run directory; pass the folder of an unfinished run")


def test_continuing_a_finished_run_suggests_a_valid_epoch_count_and_needs_its_final_state(tmp_path):
    run = finished_run(tmp_path / "run", final=None)
    assert refusal(checkpoint.check_continuable, run, 1) == (
        f"cannot continue run '{run}': train.epochs=1 is not more than its own train.epochs=2; pass a larger "
        "value, e.g. --set train.epochs=4")
    assert refusal(checkpoint.check_continuable, run, 3) == (
        f"cannot continue run '{run}': it has no final_state.pt (its last epoch's weights and optimizer state) "
        "to continue from; train a new run with --output DIR")


def test_a_scheduled_run_resumes_with_its_own_rate_and_refuses_a_new_one(tmp_path):
    run = run_dir(tmp_path / "run", load_config(TINY, ["train.schedule=onecycle"]), rundir.CHECKPOINT)
    assert checkpoint.resume_config(run).train.schedule == "onecycle"
    assert refusal(checkpoint.resume_config, run, None, ["train.lr=1e-4"]) == (
        f"--resume cannot change train.lr of '{run}': its train.schedule onecycle sets the rate per step; drop "
        "--set train.lr, or start a new run with --output DIR")


def test_a_resume_names_at_most_three_changed_keys_and_the_keys_it_may_change(tmp_path):
    run = run_dir(tmp_path / "run", load_config(TINY), rundir.CHECKPOINT)
    sets = ["model.hidden_size=8", "model.num_layers=3", "seed=5", "train.batch_size=2"]
    assert refusal(checkpoint.resume_config, run, None, sets) == (
        f"--resume continues '{run}' with its own config.yaml, but --config/--set change model.hidden_size, "
        "model.num_layers, seed; a resume may change only train.epochs, train.lr, train.clip_grad_norm: drop "
        "the others, or start a new run with --output DIR")


def test_a_pretrain_lm_run_resumes_with_its_config_restated_by_a_file_without_an_lm_section(tmp_path):
    run = run_dir(tmp_path / "run", load_config(None, schema=LMRunConfig), rundir.CORPUS, rundir.CHECKPOINT)
    restated = tmp_path / "restated.yaml"
    restated.write_text("name: default\n")  # every lm.* key left at its default, as the run has them
    assert isinstance(checkpoint.resume_config(run, restated), LMRunConfig)


def test_resume_refuses_changed_data_saying_how_to_go_on(tmp_path):
    run = finished_run(tmp_path / "run", final=None)
    assert refusal(checkpoint.check_same_data, run, {"rows": 81}) == (
        f"the data of '{run}' changed since training started (split.json no longer matches); restore the data or "
        "train again with --overwrite")
    checkpoint.check_same_data(run, {"rows": 80})


class Stages(Reporter):
    def __init__(self):
        self.texts = []

    def stage(self, text: str) -> None:
        self.texts.append(text)


@pytest.mark.parametrize("stopped, epochs, expected", [
    (False, 3, "Continuing the finished run with epoch 3"),
    (False, 5, "Continuing the finished run with epochs 3 to 5"),
    (True, 4, "Continuing the finished run with epochs 3 to 4; early stopping had ended it after epoch 2, "
              "patience starts afresh"),
])
def test_reopening_a_finished_run_says_which_epochs_follow(stopped, epochs, expected, tmp_path):
    run = finished_run(tmp_path / "run", Progress(epoch=3, step=40, stopped=stopped, stale=2 if stopped else 0))
    reporter = Stages()
    checkpoint.reopen_finished(run, {"rows": 80}, epochs, reporter)
    assert reporter.texts == [expected]
    assert not rundir.is_complete(run)
    resumed = checkpoint.read(run / rundir.CHECKPOINT)["progress"]
    assert (resumed["epoch"], resumed["stopped"], resumed["stale"]) == (3, False, 0)


def test_reopen_refuses_a_final_state_without_progress(tmp_path):
    run = finished_run(tmp_path / "run", final=None)
    saved(run / checkpoint.FINAL, format=checkpoint.FORMAT, model={})
    assert refusal(checkpoint.reopen, run) == (
        f"'{run / checkpoint.FINAL}' is damaged (no readable progress); train a new run with --output DIR")
    assert rundir.is_complete(run)


def test_a_non_finite_loss_suggests_a_tenth_of_the_rate_or_a_fresh_start(tmp_path):
    cfg = TrainConfig(lr=0.02, clip_grad_norm=0.5)
    ckpt = tmp_path / "run" / rundir.CHECKPOINT
    fix = "lower train.lr (now 0.02) or set a smaller train.clip_grad_norm (now 0.5)"
    assert str(checkpoint.non_finite_loss(float("nan"), 1, 3, cfg, ckpt)) == (
        f"loss became nan at epoch 1 step 3, before the first checkpoint; {fix} and train again")
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    assert str(checkpoint.non_finite_loss(float("inf"), 2, 9, cfg, ckpt, "pretrain-lm")) == (
        f"loss became inf at epoch 2 step 9; {fix}. The last checkpoint with a finite loss is kept: resume it with "
        f"a lower rate (sentiment-rnn pretrain-lm --resume {ckpt.parent} --set train.lr=0.002) or train again "
        "with --overwrite")
    unclipped = TrainConfig(lr=0.02, clip_grad_norm=None)
    assert str(checkpoint.non_finite_loss(float("nan"), 1, 3, unclipped, tmp_path / "none")).endswith(
        "; lower train.lr (now 0.02) or clip gradients with train.clip_grad_norm=1.0 (now off) and train again")


def test_seed_everything_repeats_every_generator():
    def draws():
        return torch.rand(2).tolist(), random.random(), np.random.rand(2).tolist()

    checkpoint.seed_everything(4)
    first = draws()
    checkpoint.seed_everything(4)
    assert draws() == first


# Ctrl-C


def test_the_first_sigint_asks_to_stop_the_second_interrupts_and_the_handler_is_restored_after():
    calls = []

    def record(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, record)
    try:
        with checkpoint.StopOnInterrupt() as stop:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:  # a failure of this test, not a Ctrl-C that should end pytest
                pytest.fail("the first SIGINT interrupted at once instead of asking the loop to stop")
            assert stop.requested and not calls
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is record  # checked first: a third SIGINT to stop would end pytest
        signal.raise_signal(signal.SIGINT)
        assert calls == [signal.SIGINT]  # the handler from before is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_training_in_a_worker_thread_leaves_signals_alone():
    errors = []

    def enter_and_leave():
        try:
            with checkpoint.StopOnInterrupt() as stop:
                assert not stop.requested
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=enter_and_leave)
    worker.start()
    worker.join()
    assert errors == []

