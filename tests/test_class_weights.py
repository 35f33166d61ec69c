"""train.class_weights: validated in the config and against the data's classes, reaches the loss, and is
recorded in metrics.json. Real data (the embedded corpus), real tiny training."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sentiment_rnn import data as data_lib
from sentiment_rnn import rundir
from sentiment_rnn.cli import app
from sentiment_rnn.config import load_config
from sentiment_rnn.errors import SentimentRNNError

from conftest import TINY


def train_tiny(out, *sets: str):
    argv = ["train", "-c", str(TINY), "-o", str(out)]
    for item in sets:
        argv += ["--set", item]
    return CliRunner().invoke(app, argv)


@pytest.mark.parametrize("value", ["balance", "[0, 1]", "[]", "[a, b]", "true"])
def test_class_weights_other_than_balanced_or_positive_numbers_are_refused(value):
    expected = "'train.class_weights': must be balanced or a list of positive weights"
    with pytest.raises(SentimentRNNError, match=expected):
        load_config(TINY, [f"train.class_weights={value}"])


def test_a_weight_count_unlike_the_class_count_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    result = train_tiny(out, "train.class_weights=[1, 2, 3]")
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert errors == [("Error: train.class_weights has 3 weights but the data has 2 classes (negative, positive); "
                       "give one weight per class, in that order")], result.output
    assert not out.exists()


def test_balanced_weights_follow_the_training_split_and_are_recorded(tmp_path):
    out = tmp_path / "run"
    result = train_tiny(out, "train.class_weights=balanced", "train.epochs=1")
    assert result.exit_code == 0, result.output
    config = load_config(TINY)
    labels = data_lib.column_numpy(data_lib.load_splits(config.data, config.seed).train, "label")
    counts = np.bincount(labels)
    expected = len(labels) / (len(counts) * counts)  # scikit-learn's "balanced"
    recorded = json.loads((out / rundir.METRICS).read_text())["class_weights"]
    assert np.allclose(recorded, expected) and len(recorded) == 2


def test_unweighted_runs_record_no_class_weights(tiny_run):
    assert json.loads((tiny_run / rundir.METRICS).read_text())["class_weights"] is None


def test_the_weights_reach_the_loss(tmp_path):
    """A heavy weight on one class makes the model predict that class far more often than the other way round."""
    recalls = {}
    for name, weights in (("pos", "[1, 50]"), ("neg", "[50, 1]")):
        out = tmp_path / name
        result = train_tiny(out, f"train.class_weights={weights}")
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / rundir.METRICS).read_text())
        assert metrics["class_weights"] == json.loads(weights)
        recalls[name] = metrics["test"]["per_class"]["positive"]["recall"]
    assert recalls["pos"] > recalls["neg"] + 0.5, recalls
