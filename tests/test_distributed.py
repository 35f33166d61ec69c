"""Data-parallel training: `sentiment-rnn train` under a real torchrun with 2 CPU processes (gloo)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentiment_rnn import rundir
from sentiment_rnn.data import BucketBatchSampler
from sentiment_rnn.evaluate import evaluate_run
from sentiment_rnn.predict import Predictor
from sentiment_rnn.stages import recorded_stage_one

from in_process import run_cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.mark.parametrize("rows, world", [(320, 2), (129, 2), (130, 3), (1000, 4)])
def test_ranks_split_every_batch_and_all_take_the_same_number_of_steps(rows, world):
    lengths = np.random.default_rng(0).integers(1, 40, rows)
    ranks = [list(BucketBatchSampler(lengths, 64, shuffle=True, pool=3, rank=r, world_size=world))
             for r in range(world)]
    single = [b for b in BucketBatchSampler(lengths, 64, shuffle=True, pool=3) if len(b) >= world]  # too small to share
    assert {len(r) for r in ranks} == {len(BucketBatchSampler(lengths, 64, world_size=world))}  # no rank waits alone
    for step, batch in enumerate(ranks[0]):
        together = sorted(i for r in ranks for i in r[step])
        assert together == sorted(single[step])  # the ranks' slices make up the single-process batch
        assert len(batch) == math.ceil(len(single[step]) / world) or len(batch) == len(single[step]) // world
    seen = {i for r in ranks for b in r for i in b}
    assert len(seen) >= rows - world + 1  # only a last batch too small to share is left out


# The README's DDP command trains the default, a two-stage config: here tiny.yaml in two stages.
TWO_STAGES = ["--set", "stage_one.enabled=true", "--set", "stage_one.limit=400", "--set", "stage_one.epochs=1"]


def first_stage(run: Path) -> dict:
    return json.loads((Path(recorded_stage_one(run)["path"]) / rundir.METRICS).read_text())


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_the_same_two_stage_model_as_one_process(tmp_path):
    out, alone = tmp_path / "ddp" / "run", tmp_path / "single" / "run"  # each with its own stage-one/ beside it
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "sentiment_rnn", "train",
         "--config", str(TINY), *TWO_STAGES, "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # rank 0 alone prints, and the other rank read the first stage only once rank 0 had written it
    assert result.stdout.count("Training tiny") == 1 and result.stdout.count("Stage 1 of 2") == 1
    assert result.stdout.count("Stage 2 of 2") == 1
    assert rundir.is_complete(out) and not (out / rundir.CHECKPOINT).exists()
    assert run_cli("train", "--config", str(TINY), *TWO_STAGES, "--output", str(alone)).returncode == 0

    ddp, single = (json.loads((run / rundir.METRICS).read_text()) for run in (out, alone))
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert first_stage(out)["world_size"] == 2
    assert ddp["test"]["n"] == single["test"]["n"]
    # the recorded figure is the saved model's own score on its recorded test rows, scored here in one process
    rescored = evaluate_run(out)
    assert ddp["test"]["accuracy"] == pytest.approx(rescored["accuracy"]) and rescored["n"] == ddp["test"]["n"]
    # Each rank takes half of every batch and DDP averages the gradients: the same optimizer steps as one
    # process (tiny.yaml has no dropout), so the same losses up to float summation order, in both stages.
    for d, s in zip(first_stage(out)["history"] + ddp["history"], first_stage(alone)["history"] + single["history"],
                    strict=True):
        assert d["train_loss"] == pytest.approx(s["train_loss"], abs=1e-4)
        assert d["val_loss"] == pytest.approx(s["val_loss"], abs=1e-4)
    assert ddp["test"]["accuracy"] == pytest.approx(single["test"]["accuracy"], abs=1 / ddp["test"]["n"])

    records = Predictor.from_dir(out, threads=1).predict(["a moving and funny film", "dull and lifeless"])
    assert all(r["label"] in ("negative", "positive") for r in records)
