"""The run directory: the most recent complete run is found, an incomplete one is named and refused, files
appear whole or not at all. In-process and quick: scripts/mutate.py runs these against rundir.py's mutants."""

import os
import shutil
import time
from pathlib import Path

import pytest

from sentiment_rnn import rundir
from sentiment_rnn.errors import SentimentRNNError


def copy_run(tiny_run, root, name: str, age_s: float):
    """A copy of tiny_run under root/name whose metrics.json was written age_s seconds ago."""
    run = root / name
    shutil.copytree(tiny_run, run)
    stamp = time.time() - age_s
    os.utime(run / rundir.METRICS, (stamp, stamp))
    return run


def test_the_most_recent_complete_run_is_picked_whatever_the_names_and_copy_order(tiny_run, tmp_path):
    # names sort against their age and the copies are made oldest-last, so neither order can pass for recency
    copy_run(tiny_run, tmp_path, "a-newest", 10)
    copy_run(tiny_run, tmp_path, "z-middle", 500)
    copy_run(tiny_run, tmp_path, "m-oldest", 1000)
    unfinished = copy_run(tiny_run, tmp_path, "b-unfinished", 0)
    (unfinished / rundir.WEIGHTS).unlink()  # newer, but not complete
    (tmp_path / "stray.txt").write_text("not a run")
    assert rundir.find_latest_run(tmp_path) == tmp_path / "a-newest"
    os.utime(tmp_path / "m-oldest" / rundir.METRICS)  # written now: it becomes the latest
    assert rundir.find_latest_run(tmp_path) == tmp_path / "m-oldest"


def test_no_complete_run_is_an_error_naming_the_folder_and_the_fix(tiny_run, tmp_path):
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(SentimentRNNError, match=f"no trained run found under '{root}/'.*--model RUN_DIR"):
            rundir.find_latest_run(root)
    unfinished = copy_run(tiny_run, tmp_path, "run", 0)
    (unfinished / rundir.METRICS).unlink()
    with pytest.raises(SentimentRNNError, match="no trained run found"):
        rundir.find_latest_run(tmp_path)


@pytest.mark.parametrize("missing", rundir.REQUIRED)
def test_a_run_without_one_required_file_is_incomplete_and_named(missing, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path, "run", 0)
    assert rundir.is_complete(run) and rundir.resolve_run(run) == run
    (run / missing).unlink()
    assert not rundir.is_complete(run)
    with pytest.raises(SentimentRNNError) as err:
        rundir.resolve_run(run)
    if missing == rundir.METRICS:
        assert "training did not finish; train again" in str(err.value)
    else:
        assert f"has no {missing}: train again" in str(err.value)


def test_resolve_run_says_what_the_path_is_instead(tiny_run, tmp_path):
    fix = "; pass a folder written by 'sentiment-rnn train'"  # the user's only guide to what is wanted
    cases = [(tmp_path / "absent", "does not exist" + fix),
             (tmp_path / "file.csv", "is a file, not a run directory" + fix),
             (tmp_path / "empty", "is not a run directory (no config.yaml, no metrics.json)" + fix)]
    (tmp_path / "file.csv").write_text("text,label\n")
    (tmp_path / "empty").mkdir()
    for path, words in cases:
        with pytest.raises(SentimentRNNError, match=words.replace("(", r"\(").replace(")", r"\)") + "$"):
            rundir.resolve_run(path)
    unfinished = copy_run(tiny_run, tmp_path, "unfinished", 0)
    (unfinished / rundir.METRICS).unlink()
    (unfinished / rundir.CHECKPOINT).write_bytes(b"")
    with pytest.raises(SentimentRNNError, match=f"resume it with: sentiment-rnn train --resume {unfinished}$"):
        rundir.resolve_run(unfinished)


def test_atomic_writer_leaves_the_old_file_and_no_temporary_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "meta.json"
    rundir.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), rundir.atomic_writer(path) as fh:
        fh.write(b"half of a new file")
        raise RuntimeError("killed mid-write")
    assert rundir.read_json(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
    rundir.atomic_write(path, "caf\u00e9")
    assert path.read_bytes() == "caf\u00e9".encode()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0o600


def test_read_json_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(SentimentRNNError, match="is missing; the run directory is incomplete"):
        rundir.read_json(tmp_path / "meta.json")
    for damaged in (b"{", b"\xff\xfe{}"):
        (tmp_path / "meta.json").write_bytes(damaged)
        with pytest.raises(SentimentRNNError, match="is not valid JSON; the run directory is damaged"):
            rundir.read_json(tmp_path / "meta.json")


def test_load_run_rebuilds_the_trained_model_in_eval_mode_and_refuses_mixed_files(tiny_run, tmp_path):
    import json

    loaded = rundir.load_run(tiny_run)
    assert loaded.path == tiny_run and loaded.config.model.hidden_size == 16  # configs/tiny.yaml's
    assert not loaded.model.training and loaded.meta["label_names"] == ["negative", "positive"]
    assert loaded.tokenizer.get_vocab_size() == loaded.meta["vocab_size"]
    with pytest.raises(SentimentRNNError, match="unknown precision 'fp16'; choose one of fp32, bf16"):
        rundir.load_run(tiny_run, precision="fp16")
    run = copy_run(tiny_run, tmp_path, "run", 0)
    meta = json.loads((run / rundir.META).read_text())
    (run / rundir.META).write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 1}))
    with pytest.raises(SentimentRNNError, match="mixes files of different runs"):
        rundir.load_run(run)
    (run / rundir.META).write_text(json.dumps({**meta, "kind": "language_model"}))
    with pytest.raises(SentimentRNNError, match=r"is a pretrain-lm run: a language model, not a classifier "
                                                r"\(no labels to predict, score, explain or inspect\)"):
        rundir.load_run(run)
    (run / rundir.META).write_text(json.dumps(meta))
    (run / rundir.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(SentimentRNNError, match="is not the file training saved"):
        rundir.load_run(run)  # the weights no longer match meta.json's hash
    # with a hash that matches the damaged file, the safetensors parser is what refuses it
    (run / rundir.META).write_text(json.dumps({**meta, "weights_sha256": rundir.sha256(run / rundir.WEIGHTS)}))
    with pytest.raises(SentimentRNNError, match="is not a readable safetensors file"):
        rundir.load_run(run)


def test_find_latest_run_passes_over_a_newer_language_model_but_not_a_run_with_a_damaged_meta(tiny_run, tmp_path):
    import json

    copy_run(tiny_run, tmp_path, "classifier", 100)
    lm = copy_run(tiny_run, tmp_path, "lm", 10)
    meta = json.loads((lm / rundir.META).read_text())
    (lm / rundir.META).write_text(json.dumps({**meta, "kind": "language_model"}))
    assert rundir.find_latest_run(tmp_path) == tmp_path / "classifier"  # pretrain-lm has nothing to predict with
    damaged = copy_run(tiny_run, tmp_path, "damaged", 0)
    (damaged / rundir.META).write_bytes(b"{")
    assert rundir.find_latest_run(tmp_path) == damaged  # picked, so that loading it names the damage
    with pytest.raises(SentimentRNNError, match="meta.json' is not valid JSON"):
        rundir.load_run(damaged)


def test_load_run_names_what_is_wrong_with_meta_or_weights_that_do_not_fit(tiny_run, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    run = copy_run(tiny_run, tmp_path, "run", 0)
    meta = json.loads((run / rundir.META).read_text())
    for key in ("vocab_size", "label_names", "max_length"):
        (run / rundir.META).write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        with pytest.raises(SentimentRNNError, match="lacks vocab_size/label_names/max_length; the run is damaged"):
            rundir.load_run(run)
    state = load_file(str(run / rundir.WEIGHTS))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(run / rundir.WEIGHTS))
    (run / rundir.META).write_text(json.dumps({**meta, "weights_sha256": rundir.sha256(run / rundir.WEIGHTS)}))
    fit = rf"does not fit config.yaml \(Missing key\(s\) .*{dropped}.*train again$"
    with pytest.raises(SentimentRNNError, match=fit):
        rundir.load_run(run)  # every weight must be there: a missing one is not left at its random start


def test_load_run_in_bf16_casts_every_weight(tiny_run):
    import torch

    model = rundir.load_run(tiny_run, precision="bf16").model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training


def test_versions_are_the_installed_ones_and_the_package_folder_commit(tiny_run):
    import json
    import platform
    import subprocess
    from importlib import metadata
    from pathlib import Path

    found = rundir.versions()
    assert found["python"] == platform.python_version()
    for package in ("torch", "datasets", "tokenizers", "sentiment-rnn"):
        assert found[package] == metadata.version(package)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(rundir.__file__).resolve().parent)
    assert found["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)  # None outside git
    assert json.loads((tiny_run / rundir.META).read_text())["versions"] == found  # what training records


def test_without_model_the_latest_run_under_runs_in_the_working_folder_is_resolved(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    copy_run(tiny_run, tmp_path / "runs", "old", 100)
    copy_run(tiny_run, tmp_path / "runs", "new", 10)
    assert rundir.resolve_run(None) == rundir.DEFAULT_ROOT / "new"  # predict/evaluate/explain without --model


def test_a_baseline_run_is_rebuilt_at_its_own_max_length(tmp_path):
    from sentiment_rnn.config import load_config
    from sentiment_rnn.train import train

    config = load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml",
                         ["model.kind=per_word_linear", "data.limit=120", "train.epochs=1", "data.max_length=12"])
    train(config, tmp_path / "run")
    model = rundir.load_run(tmp_path / "run").model
    assert model.max_length == 12  # the per-word model has one weight block per position


def test_versions_record_the_package_commit_from_any_folder_and_none_when_git_fails(tmp_path, monkeypatch):
    expected = rundir.versions()["git_commit"]
    monkeypatch.chdir(tmp_path)  # training started outside the checkout still records the package's commit
    assert rundir.versions()["git_commit"] == expected
    monkeypatch.setenv("GIT_DIR", str(tmp_path))  # git runs and fails
    assert rundir.versions()["git_commit"] is None
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert rundir.versions()["git_commit"] is None


def test_overwrite_replaces_only_a_run_never_other_files_nor_the_current_directory(tiny_run, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(SentimentRNNError, match="'.*mine' exists and is not a run directory; --overwrite "
                                                    "replaces only a run"):
            rundir.prepare_output(mine, overwrite)
    assert (mine / "important.txt").read_text() == "keep"
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "sub").mkdir()
    monkeypatch.chdir(run / "sub")
    for inside in (Path("."), Path(".."), run):
        with pytest.raises(SentimentRNNError, match="holds the current directory, which --overwrite would delete"):
            rundir.prepare_output(inside, True)
    monkeypatch.chdir(tmp_path)
    rundir.prepare_output(run, True)  # a run, from outside it: replaced
    assert run.is_dir() and not any(run.iterdir())
    with pytest.raises(SentimentRNNError, match="is not a comparison directory"):
        rundir.prepare_output(mine, True, ("comparison.json",), "comparison")


def test_a_replaced_run_waits_aside_comes_back_if_the_new_one_left_nothing_and_is_never_the_latest(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    runs = tmp_path / "runs"
    old = copy_run(tiny_run, runs, "tiny", 0)
    before = rundir.sha256(old / rundir.WEIGHTS)
    aside = rundir.prepare_output(old, True)
    assert aside == runs / ".tiny.replaced" and rundir.is_complete(aside) and not any(old.iterdir())
    with pytest.raises(SentimentRNNError, match="no trained run found"):
        rundir.find_latest_run(runs)  # the run set aside is not one to predict with
    shutil.rmtree(old)  # the new run failed before its first checkpoint
    rundir.settle_replaced(aside, old)
    assert rundir.sha256(old / rundir.WEIGHTS) == before and not aside.exists()
    nan = CliRunner().invoke(app, ["train", "-c", "tiny", "-o", str(old), "--overwrite", "--set", "train.lr=1e30",
                                   "--set", "train.clip_grad_norm=null"])
    assert nan.exit_code == 1 and "loss became nan" in nan.output, nan.output
    assert rundir.sha256(old / rundir.WEIGHTS) == before and sorted(p.name for p in runs.iterdir()) == ["tiny"]
    replaced = CliRunner().invoke(app, ["train", "-c", "tiny", "-o", str(old), "--overwrite", "--set", "seed=3"])
    assert replaced.exit_code == 0, replaced.output
    assert rundir.sha256(old / rundir.WEIGHTS) != before and sorted(p.name for p in runs.iterdir()) == ["tiny"]
