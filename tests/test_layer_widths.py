"""Layer widths have one key: model.hidden_size is one width for every layer or a list with one per layer.
A list trains end to end, the retired model.hidden_sizes is refused in one line, and a run saved with it loads."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from sentiment_rnn import rundir
from sentiment_rnn.cli import app
from sentiment_rnn.config import dump_config, load_config, parse_config
from sentiment_rnn.errors import SentimentRNNError

from conftest import TINY

FAST = ["--set", "train.epochs=1", "--set", "train.grad_probe_epochs=[]", "--set", "data.limit=120"]


@pytest.fixture(scope="module")
def cells_run(tmp_path_factory) -> Path:
    """configs/tiny.yaml as a hand-unrolled 8 -> 6 stack, trained through the CLI."""
    run = tmp_path_factory.mktemp("widths") / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", "model.encoder=cells",
                                      "--set", "model.hidden_size=[8,6]", *FAST, "-o", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_a_width_list_trains_one_cell_per_width_and_is_saved_as_written(cells_run):
    saved = yaml.safe_load((cells_run / rundir.CONFIG).read_text())["model"]
    assert (saved["hidden_size"], saved["num_layers"]) == ([8, 6], 2) and "hidden_sizes" not in saved
    state = load_file(str(cells_run / rundir.WEIGHTS))
    assert tuple(state["encoder.layers.0.fwd.weight_hh"].shape) == (8, 8)
    assert tuple(state["encoder.layers.1.fwd.weight_ih"].shape) == (6, 8)  # layer 1 reads layer 0's 8 widths
    assert "metrics.json" in {p.name for p in cells_run.iterdir()}


def test_a_run_saved_with_hidden_sizes_still_loads_and_predicts(cells_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(cells_run, run)
    old = yaml.safe_load((run / rundir.CONFIG).read_text())
    # How config.yaml read before the widths moved into hidden_size: unused defaults beside hidden_sizes.
    old["model"].update(hidden_size=128, num_layers=1, hidden_sizes=[8, 6])
    (run / rundir.CONFIG).write_text(yaml.safe_dump(old, sort_keys=False))
    assert rundir.read_config(run).model.layer_sizes() == [8, 6]
    result = CliRunner().invoke(app, ["predict", "--model", str(run), "--format", "json", "a moving film"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["label"] in ("negative", "positive")


def test_the_retired_hidden_sizes_key_is_one_error_naming_its_replacement(tmp_path):
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", "model.encoder=cells",
                                      "--set", "model.hidden_sizes=[20,15]", "-o", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert result.output == ("Error: --set model.hidden_sizes=[20,15]: model.hidden_sizes is now written "
                             "model.hidden_size: [20, 15]; rename the key\n")
    assert not (tmp_path / "run").exists()


def test_a_width_list_sets_num_layers_and_equal_widths_read_as_one_width(tmp_path):
    cells = parse_config({"model": {"encoder": "cells", "hidden_size": [20, 15]}}).model
    # The list is the depth: over a file's num_layers (configs/tutorial.yaml has 4) it gives its own length.
    assert parse_config({"model": {"encoder": "cells", "hidden_size": [20, 15], "num_layers": 4}}).model == cells
    assert (cells.hidden_size, cells.num_layers, cells.layer_sizes()) == ([20, 15], 2, [20, 15])
    stack = parse_config({"model": {"hidden_size": [20, 20, 20, 20]}}).model
    assert (stack.hidden_size, stack.num_layers) == (20, 4)  # the tutorial's nn.RNN(100, 20, num_layers=4)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(parse_config({"model": {"encoder": "cells", "hidden_size": [20, 15]}})))
    assert load_config(path).model == cells


@pytest.mark.parametrize("model, expected", [
    ({"hidden_size": [20, 15]}, "model.hidden_size [20, 15] gives each layer its own width, which needs "
                                "model.encoder: cells"),
    ({"hidden_size": []}, "model.hidden_size must be a positive width or a list of per-layer widths"),
    ({"hidden_size": [20, 0]}, "model.hidden_size must be a positive width or a list of per-layer widths"),
    ({"hidden_size": "big"}, "model.hidden_size must be a positive width or a list of per-layer widths"),
])
def test_width_mistakes_are_one_line_naming_the_fix(model, expected):
    with pytest.raises(SentimentRNNError) as err:
        parse_config({"model": model})
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "'model'" not in str(err.value)  # the message names the key itself
