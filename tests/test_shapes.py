"""`inspect` shows every parameter in the tutorial's terms and the shapes of a real forward pass."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.shapes import describe_config

from in_process import run_cli

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "configs" / "tutorial.yaml"


def cli(*args: str, installed: bool = False) -> subprocess.CompletedProcess:
    """`sentiment-rnn inspect ARGS` in this process, or as the installed script when `installed`."""
    if not installed:
        return run_cli("inspect", *args, cwd=ROOT)
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(["sentiment-rnn", "inspect", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_tutorial_config_prints_the_tutorial_s_parameter_shapes_per_layer():
    result = cli("--config", "configs/tutorial.yaml", installed=True)
    assert result.returncode == 0, result.stderr
    labels = Counter(part.strip() for line in result.stdout.splitlines() for part in line.split("│"))
    assert labels["W_xh [20, 100]"] == 1  # layer 0 reads the 100-wide word vectors
    assert labels["W_xh [20, 20]"] == 3  # layers 1-3 read the 20-wide layer below
    assert labels["b_xh [20]"] == labels["W_hh [20, 20]"] == labels["b_hh [20]"] == 4
    for stage in ("input_ids [10, 3]", "x [10, 3, 100]", "h0 [4, 3, 20]", "out [10, 3, 20]", "h [4, 3, 20]",
                  "final [3, 20]", "logits [3, 2]"):
        assert labels[stage] == 1, stage
    assert "tokenizer.max_vocab" in result.stdout


def test_json_totals_add_up_and_match_the_rows():
    result = cli("--config", "configs/tutorial.yaml", "--json")
    assert result.returncode == 0, result.stderr
    description = json.loads(result.stdout)
    rows, totals = description["parameters"], description["totals"]
    assert totals["total"] == sum(r["count"] for r in rows) == 2_005_002  # 20000*100 + 4960 + 42
    assert totals["encoder"] == 2000 + 3 * 400 + 4 * (400 + 40) and totals["head"] == 42
    layer0 = [r["label"] for r in rows if r["layer"] == 0]
    assert layer0 == ["W_xh [20, 100]", "b_xh [20]", "W_hh [20, 20]", "b_hh [20]"]
    assert [r["torch_name"] for r in rows if r["layer"] == 0][0] == "encoder.rnn.weight_ih_l0"


def test_batch_and_seq_len_options_change_the_traced_shapes():
    traced = cli("--config", "configs/tutorial.yaml", "--json", "--batch", "5", "--seq-len", "8")
    description = json.loads(traced.stdout)
    shapes = {s["stage"]: s["shape"] for s in description["shapes"]}
    assert shapes["x"] == [8, 5, 100] and shapes["h"] == [4, 5, 20] and shapes["logits"] == [5, 2]


def test_gru_gates_are_shown_stacked_in_pytorch_order():
    description = describe_config(TUTORIAL, ["model.cell=gru", "model.num_layers=1"])
    labels = [r["label"] for r in description["parameters"] if r["layer"] == 0]
    assert labels == ["W_xh (r|z|n) [60, 100]", "b_xh (r|z|n) [60]", "W_hh (r|z|n) [60, 20]", "b_hh (r|z|n) [60]"]


def test_bidirectional_lstm_has_both_directions_and_h_and_c_states():
    description = describe_config(TUTORIAL, ["model.cell=lstm", "model.num_layers=2", "model.bidirectional=true"])
    backward = [r["label"] for r in description["parameters"] if r["layer"] == 1 and r["direction"] == "backward"]
    assert backward == ["W_xh (i|f|g|o) [80, 40]", "b_xh (i|f|g|o) [80]", "W_hh (i|f|g|o) [80, 20]",
                        "b_hh (i|f|g|o) [80]"]
    shapes = {s["stage"]: s["shape"] for s in description["shapes"]}
    assert shapes["h0"] == shapes["c0"] == shapes["h"] == shapes["c"] == [4, 3, 20]  # [layers*2, batch, hidden]
    assert shapes["out"] == [10, 3, 40] and shapes["final"] == [3, 40]


def test_cells_encoder_shows_one_state_per_layer_with_its_own_width():
    description = describe_config(TUTORIAL, ["model.encoder=cells", "model.hidden_size=[20, 15]"])
    shapes = {s["stage"]: s["shape"] for s in description["shapes"]}
    assert shapes["h0 (layer 0)"] == [3, 20] and shapes["h0 (layer 1)"] == [3, 15]
    assert shapes["x_t (layer 1)"] == [3, 20] and shapes["out"] == [10, 3, 15] and shapes["final"] == [3, 15]
    assert [r["label"] for r in description["parameters"] if r["layer"] == 1][0] == "W_xh [15, 20]"


def test_concat_pooling_shows_the_three_times_wider_vector_the_head_reads():
    description = describe_config(TUTORIAL, ["model.cell=lstm", "model.num_layers=1", "model.hidden_size=16",
                                             "model.pooling=concat"])
    stages = {s["stage"]: s for s in description["shapes"]}
    assert stages["final"]["shape"] == [3, 16] and "what the head reads" not in stages["final"]["note"]
    assert stages["pooled"]["shape"] == [3, 48] and "what the head reads" in stages["pooled"]["note"]
    assert [r["label"] for r in description["parameters"] if r["label"].startswith("W_hy")] == ["W_hy [2, 48]"]


def test_inspecting_a_config_loads_no_data():
    code = ("import sys; from sentiment_rnn.shapes import describe_config; describe_config('configs/tutorial.yaml');"
            "sys.exit('datasets' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_a_language_model_config_is_refused_not_described_as_a_classifier():
    with pytest.raises(SentimentRNNError, match="'lm' configures pretrain-lm: a language model") as err:
        describe_config("lm")
    assert "inspect --config finetune" in str(err.value)
    assert describe_config("finetune")["parameters"][-2]["label"] == "W_hy [2, 256]"  # the classifier it fine-tunes


def test_inspecting_a_run_uses_its_real_vocabulary(tiny_run):
    result = cli("--model", str(tiny_run), "--json")
    assert result.returncode == 0, result.stderr
    description = json.loads(result.stdout)
    meta = json.loads((tiny_run / "meta.json").read_text())
    assert description["model"]["vocab_size"] == meta["vocab_size"]
    assert description["parameters"][0]["shape"] == [meta["vocab_size"], 100]


@pytest.mark.parametrize("args,message", [
    (["--config", "configs/tutorial.yaml", "--model", "runs/x"], "either --config or --model"),
    (["--model", "runs/x", "--set", "seed=1"], "--set applies to --config only"),
    (["--config", "configs/missing.yaml"], "not found"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    result = cli(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("Error:") and message in result.stderr and "Traceback" not in result.stderr
