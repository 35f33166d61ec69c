"""The review sentences as data, and the two-stage recipe (stage_one.*): sentences first, then the
configured data starting from them, through the CLI on a tiny slice (killed runs: the installed one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from sentiment_rnn import rundir
from sentiment_rnn.config import load_config
from sentiment_rnn.sentences import split_sentences
from sentiment_rnn.stages import stage_key, stage_one_config

from conftest import ROOT, TINY
from in_process import run_cli

# Stage one: 400 of the review sentences for one epoch; a checkpoint every 7 of its 80 steps.
TWO_STAGES = ["--set", "stage_one.enabled=true", "--set", "stage_one.limit=400", "--set", "stage_one.epochs=1",
              "--set", "train.batch_size=4", "--set", "train.checkpoint_every=7", "--set", "train.epochs=1"]
TIMING = ("seconds", "tokens_per_s", "train_seconds")


def test_sentences_split_at_ends_after_line_breaks_and_keep_abbreviations_whole():
    review = ("I saw it with Mr. Smith and Dr. J. Watson last night.<br /><br />It was not good at all!"
              " Was it worth it? No way, not even close.")
    assert split_sentences(review) == ["I saw it with Mr. Smith and Dr. J. Watson last night.",
                                       "It was not good at all!", "Was it worth it?", "No way, not even close."]


def test_sentences_outside_the_length_limits_and_empty_pieces_are_dropped():
    long = " ".join(["word"] * 61) + "."
    assert split_sentences(f"Too short. <br />   <br /> {long} Four words are kept.  ") == ["Four words are kept."]
    assert split_sentences("<br />") == []
    assert split_sentences("One two three four. Five six", min_words=2, max_words=3) == ["Five six"]


def sentiment_rnn(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = run_cli(*args)
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


def train_two_stages(out: Path, *more: str, check: bool = True) -> subprocess.CompletedProcess:
    return sentiment_rnn("train", "-c", str(TINY), "-o", str(out), *TWO_STAGES, *more, check=check)


def stage_one_of(out: Path) -> Path:
    return Path(json.loads((out / rundir.STAGE_ONE).read_text())["stage_one"]["path"])


def assert_same_weights(run: Path, reference: Path) -> None:
    a, b = load_file(str(run / rundir.WEIGHTS)), load_file(str(reference / rundir.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got, want = (json.loads((r / rundir.METRICS).read_text()) for r in (run, reference))
    assert [{k: v for k, v in e.items() if k not in TIMING} for e in got["history"]] == \
        [{k: v for k, v in e.items() if k not in TIMING} for e in want["history"]]


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("stages") / "run"
    return out, train_two_stages(out).stdout


@pytest.mark.slow
def test_two_stages_train_on_sentences_then_start_the_second_from_the_first(two_stage_run):
    out, stdout = two_stage_run
    assert "Stage 1 of 2: training on imdb_sentences" in stdout and "Stage 2 of 2" in stdout, stdout
    first = stage_one_of(out)
    assert json.loads((first / rundir.SPLIT).read_text())["source"] == "imdb_sentences"
    record = json.loads((out / rundir.STAGE_ONE).read_text())["stage_one"]
    assert record["weights_sha256"] == rundir.sha256(first / rundir.WEIGHTS)
    assert record["config"]["data"]["source"] == "imdb_sentences"
    meta = json.loads((out / rundir.META).read_text())
    assert meta["init_from"] == {"path": str(first), "weights_sha256": record["weights_sha256"]}
    vocab = [Tokenizer.from_file(str(r / rundir.TOKENIZER)).get_vocab() for r in (out, first)]
    assert vocab[0] == vocab[1]  # the first stage's ids, which its embedding rows follow
    assert json.loads((out / rundir.SPLIT).read_text())["source"] == "rotten_tomatoes"


@pytest.mark.slow
def test_an_identical_first_stage_is_reused_and_a_damaged_one_trained_again(two_stage_run, tmp_path):
    out, _ = two_stage_run
    first = stage_one_of(out)
    before = (first / rundir.WEIGHTS).stat().st_mtime_ns
    again = train_two_stages(out, "--overwrite").stdout
    assert f"reusing the identical first stage {first}" in again, again
    assert (first / rundir.WEIGHTS).stat().st_mtime_ns == before

    weights = bytearray((first / rundir.WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (first / rundir.WEIGHTS).write_bytes(bytes(weights))
    rebuilt = train_two_stages(out, "--overwrite").stdout
    assert "is stale (its key or weights differ), training it again" in rebuilt, rebuilt
    assert rundir.sha256(first / rundir.WEIGHTS) == json.loads((first / rundir.META).read_text())["weights_sha256"]


def test_a_replacement_that_fails_in_either_stage_gives_the_old_run_back(two_stage_run, tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    old = tmp_path / "run"
    shutil.copytree(two_stage_run[0], old)
    before = rundir.sha256(old / rundir.WEIGHTS)
    blow_up = ["--set", "train.lr=1e30", "--set", "train.clip_grad_norm=null"]
    for stage_one_lr in ("null", "0.002"):  # the first stage fails; the first trains and the second fails
        result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(old), *TWO_STAGES, *blow_up,
                                          "--set", f"stage_one.lr={stage_one_lr}", "--overwrite"])
        assert result.exit_code == 1 and "loss became nan" in result.output, result.output
        assert rundir.sha256(old / rundir.WEIGHTS) == before and rundir.is_complete(old)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing set aside is left behind


def test_first_stage_key_changes_with_its_config_seed_and_data():
    config = load_config(TINY, ["stage_one.enabled=true"])
    key = stage_key(stage_one_config(config))
    assert key == stage_key(stage_one_config(load_config(TINY, ["stage_one.enabled=true"])))
    for change in ("seed=1", "stage_one.epochs=3", "stage_one.limit=500", "model.hidden_size=8", "train.lr=0.01"):
        assert stage_key(stage_one_config(load_config(TINY, ["stage_one.enabled=true", change]))) != key, change
    # What shapes only the second stage does not key the first.
    assert stage_key(stage_one_config(load_config(TINY, ["stage_one.enabled=true", "data.limit=300"]))) == key


def test_first_stage_key_leaves_out_the_thread_count_and_what_only_the_second_stage_uses():
    config = load_config(TINY, ["stage_one.enabled=true"])
    key = stage_key(stage_one_config(config))
    # speed; the second stage's length; fine-tuning methods, which the first stage (trained afresh) never uses;
    # class weights, which describe the second stage's classes (a three-class source's three weights, too)
    for same in ("train.threads=1", "train.threads=3", "train.epochs=7", "train.layer_lr_decay=2.6",
                 "train.unfreeze=1", "train.class_weights=balanced", "train.class_weights=[1,2,3]"):
        first = stage_one_config(load_config(TINY, ["stage_one.enabled=true", same]))
        assert stage_key(first) == key and first.train.class_weights is None, same


def test_stage_one_lr_is_the_first_stages_rate_and_keys_it():
    """configs/sst2.yaml: the first stage at 0.002, the phrases fine-tuned from it at 0.001."""
    config = load_config(TINY, ["stage_one.enabled=true", "train.lr=0.001", "stage_one.lr=0.002"])
    assert stage_one_config(config).train.lr == 0.002 and config.train.lr == 0.001
    same_rate = load_config(TINY, ["stage_one.enabled=true", "train.lr=0.002"])
    assert stage_one_config(same_rate).train.lr == 0.002  # null: the config's own train.lr
    assert stage_key(stage_one_config(config)) == stage_key(stage_one_config(same_rate))
    unset = load_config(TINY, ["stage_one.enabled=true", "train.lr=0.001"])
    assert stage_key(stage_one_config(unset)) != stage_key(stage_one_config(config))


def wait_then_kill(proc: subprocess.Popen, checkpoint: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert proc.poll() is None, f"training exited ({proc.returncode}) before the checkpoint {checkpoint}"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.005)
    proc.kill()
    proc.wait()


def start_two_stages(out: Path) -> subprocess.Popen:
    return subprocess.Popen(["sentiment-rnn", "train", "-c", str(TINY), "-o", str(out), *TWO_STAGES],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_resume_inside_the_first_stage_gives_the_uninterrupted_run(two_stage_run, tmp_path):
    reference, _ = two_stage_run
    out, first = tmp_path / "run", tmp_path / "stage-one" / stage_one_of(reference).name
    wait_then_kill(start_two_stages(out), first / rundir.CHECKPOINT)
    assert not rundir.is_complete(first) and not rundir.is_complete(out)
    resumed = sentiment_rnn("train", "--resume", str(out)).stdout
    assert f"Stage 1 of 2: resuming {first}" in resumed, resumed
    assert_same_weights(first, stage_one_of(reference))
    assert_same_weights(out, reference)


@pytest.mark.slow
def test_resume_inside_the_second_stage_refuses_a_changed_first_stage_and_resumes_the_same_one(two_stage_run,
                                                                                              tmp_path):
    reference, _ = two_stage_run
    shutil.copytree(stage_one_of(reference).parent, tmp_path / "stage-one")  # identical: reused
    out, first = tmp_path / "run", tmp_path / "stage-one" / stage_one_of(reference).name
    wait_then_kill(start_two_stages(out), out / rundir.CHECKPOINT)
    weights = (first / rundir.WEIGHTS).read_bytes()
    (first / rundir.WEIGHTS).write_bytes(weights + b" ")
    refused = sentiment_rnn("train", "--resume", str(out), check=False)
    assert refused.returncode == 1
    assert "its first stage" in refused.stderr and "changed since this run started" in refused.stderr, refused.stderr
    (first / rundir.WEIGHTS).write_bytes(weights)
    resumed = "".join(sentiment_rnn("train", "--resume", str(out)).stdout.split())  # as printed, wrapped or not
    assert f"Stage1(reused):{first}" in resumed, resumed  # the first stage it continues from, as a straight run says
    assert_same_weights(out, reference)


@pytest.mark.slow
def test_stage_one_off_is_exactly_the_single_stage_run(tiny_run, tmp_path):
    out = tmp_path / "run"
    sentiment_rnn("train", "-c", str(TINY), "-o", str(out), "--set", "stage_one.enabled=false")
    assert not (out / rundir.STAGE_ONE).exists() and not (tmp_path / "stage-one").exists()
    assert_same_weights(out, tiny_run)


def test_a_first_stage_that_fails_leaves_no_run_folder_behind(tmp_path):
    from sentiment_rnn.errors import SentimentRNNError
    from sentiment_rnn.stages import train

    config = load_config(TINY, ["stage_one.enabled=true", "stage_one.limit=400",
                                f"model.embedding.pretrained={tmp_path / 'missing.txt'}"])
    with pytest.raises(SentimentRNNError, match="missing.txt' not found"):
        train(config, tmp_path / "run", first_stages=tmp_path / "stage-one")
    assert not (tmp_path / "run").exists()  # not a folder holding only stage_one.json, which no command reads


def test_the_defaults_first_stage_is_the_readme_command_on_the_review_sentences():
    """README: the measured first stages were `train -c default` on the sentences, as stage_one_config derives."""
    default = ROOT / "configs" / "default.yaml"
    derived = stage_one_config(load_config(default)).model_dump()
    by_hand = load_config(default, ["data.source=imdb_sentences", "data.split=[0.96,0.02,0.02]", "train.epochs=2",
                                    "stage_one.enabled=false"]).model_dump()
    assert {**derived, "name": None, "stage_one": None} == {**by_hand, "name": None, "stage_one": None}


@pytest.mark.parametrize("where", ["before its training loop", "in its first steps"])
def test_a_second_stage_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch, where):
    from sentiment_rnn import train as train_lib
    from sentiment_rnn.errors import SentimentRNNError

    out, more = tmp_path / "run", []  # the first stage trains; the second fails
    if where == "before its training loop":  # as a first stage damaged between the two would
        def unreadable(config):
            if config.model.init_from:
                raise SentimentRNNError("the first stage cannot be read")
        monkeypatch.setattr(train_lib, "read_init_source", unreadable)
    else:
        more = ["--set", "train.lr=1e30", "--set", "train.clip_grad_norm=null", "--set", "stage_one.lr=0.002"]
    result = train_two_stages(out, *more, check=False)
    assert result.returncode == 1 and "Stage 2 of 2" in result.stdout, result.stdout + result.stderr
    assert ("cannot be read" if more == [] else "loss became nan") in result.stderr
    assert not out.exists()  # its stage_one.json alone was left, and a later run there adopted it


@pytest.mark.parametrize("setting, error", [("data.text_column=nope", "has no column 'nope'"),
                                            ("data.source=missing.csv", "data source 'missing.csv' not found"),
                                            ("train.class_weights=[1,2,3]", "has 3 weights but the data has 2")])
def test_second_stage_data_that_cannot_be_read_fails_before_the_first_stage_trains(tmp_path, setting, error):
    out = tmp_path / "run"
    result = train_two_stages(out, "--set", setting, check=False)
    assert result.returncode == 1 and error in result.stderr, result.stderr
    assert "Stage 1 of 2" not in result.stdout and not out.exists() and not (tmp_path / "stage-one").exists()
