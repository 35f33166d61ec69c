"""compare-baseline: the baseline's size and position dependence, the verdicts, and the command end to end."""

import json
import os
import statistics
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch

from sentiment_rnn import rundir
from sentiment_rnn.compare import LENGTHS, RUN_PREFIX, comparison_markers, shuffle_words, summarize
from sentiment_rnn.config import ModelConfig, load_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.evaluate import evaluate_run
from sentiment_rnn.models import build_model, count_parameters
from sentiment_rnn.models.baseline import per_word_linear_params
from sentiment_rnn.stages import recorded_stage_one
from sentiment_rnn.tokenizer import train_tokenizer

from conftest import TINY
from in_process import run_cli

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ModelConfig(kind="per_word_linear")


@pytest.mark.parametrize("max_length", LENGTHS)
@pytest.mark.parametrize("vocab_size,num_classes", [(50, 2), (1000, 5)])
def test_baseline_parameter_formula_equals_built_model_count(max_length, vocab_size, num_classes):
    built = count_parameters(build_model(BASELINE, vocab_size, num_classes, max_length))
    assert per_word_linear_params(vocab_size, BASELINE.embedding_dim, max_length, num_classes) == built


def test_baseline_grows_linearly_with_length_while_the_rnn_does_not_grow():
    rnn = load_config(ROOT / "configs" / "default.yaml").model
    rnn_counts = {n: count_parameters(build_model(rnn, 1000, 2, n))["total"] for n in LENGTHS}
    baseline = {n: count_parameters(build_model(BASELINE, 1000, 2, n))["without_embedding"] for n in LENGTHS}
    assert len(set(rnn_counts.values())) == 1
    per_position = (100 * 2 + 2) + 2 * 2  # one 100 -> 2 layer, and its 2 inputs to the 2-class head
    assert baseline[1024] - baseline[16] == (1024 - 16) * per_position


def test_baseline_output_changes_when_a_word_moves_to_another_position():
    torch.manual_seed(0)
    model = build_model(BASELINE, 50, 2, max_length=8).eval()
    sentence = torch.tensor([[7], [0], [0], [0]])  # [T, B]: one word, then padding
    moved = torch.tensor([[0], [0], [0], [7]])  # the same word three positions later
    lengths = torch.tensor([4])
    with torch.no_grad():
        assert not torch.allclose(model(sentence, lengths), model(moved, lengths))
        # Padding past the sentence is harmless: the baseline pads every input to L = max_length itself.
        longer = torch.cat([sentence, torch.zeros(4, 1, dtype=sentence.dtype)])  # [8, B]
        torch.testing.assert_close(model(sentence, lengths), model(longer, lengths))


def test_baseline_is_one_linear_layer_per_position_then_the_head():
    torch.manual_seed(0)
    max_length = 5
    model = build_model(ModelConfig(kind="per_word_linear", embedding_dim=6), 30, 3, max_length).eval()
    ids = torch.tensor([[4, 9], [7, 0], [0, 0]])  # [T, B]: sentences of 2 and 1 words
    lengths = torch.tensor([2, 1])
    x = model.embedding(torch.cat([ids, torch.zeros(max_length - 3, 2, dtype=ids.dtype)]))  # [L, B, E]
    per_position = [x[t] @ model.position_weight[t] + model.position_bias[t] for t in range(max_length)]  # [B, 2]
    expected = model.head(torch.cat(per_position, dim=1))  # [B, 2L] -> [B, C]
    with torch.no_grad():
        torch.testing.assert_close(model(ids, lengths), expected)
        longer = torch.cat([ids, torch.full((4, 2), 11)])  # [7, B]: words past L are cut off
        torch.testing.assert_close(model(longer, lengths), model(longer[:max_length], lengths))


def test_default_rnn_logits_do_not_change_with_padding():
    torch.manual_seed(0)
    model = build_model(load_config(ROOT / "configs" / "default.yaml").model, 50, 2, max_length=64).eval()
    ids = torch.tensor([[5, 9], [6, 3], [8, 0]])  # [T, B]; the second sentence has 2 words
    lengths = torch.tensor([3, 2])
    padded = torch.cat([ids, torch.zeros(20, 2, dtype=ids.dtype)])  # [23, B]
    with torch.no_grad():
        torch.testing.assert_close(model(ids, lengths), model(padded, lengths))


def test_shuffled_words_keep_exactly_the_tokens_the_model_reads():
    texts = ["the film isn't good, it's great!", "a dull , dull plot with no surprises at all"]
    tokenizer = train_tokenizer(iter([texts]), load_config(None).tokenizer.model_copy(update={"min_frequency": 1}))
    shuffled = shuffle_words(texts, tokenizer, max_length=6, seed=3)
    for text, mixed in zip(texts, shuffled, strict=True):
        before = tokenizer.encode(text, add_special_tokens=False).ids[:6]
        after = tokenizer.encode(mixed, add_special_tokens=False).ids
        assert Counter(before) == Counter(after)
    assert shuffled == shuffle_words(texts, tokenizer, max_length=6, seed=3)
    assert shuffled != shuffle_words(texts, tokenizer, max_length=6, seed=4)


ROWS = [("test_accuracy", "test accuracy", "higher", "fraction"), ("params_total", "parameters", "lower", "count")]


def _row(rnn: list[float], baseline: list[float], key: str = "test_accuracy") -> dict:
    """The verdict row of fixed per-seed accuracies (and equal parameter counts)."""
    def records(accuracies):
        return [{"test_accuracy": a, "params_total": 100} for a in accuracies]

    result = summarize({"rnn": records(rnn), "per_word_linear": records(baseline)}, list(range(len(rnn))), ROWS)
    return next(r for r in result["rows"] if r["key"] == key)


def test_verdict_names_the_winner_only_when_the_margin_beats_the_seeds_spread():
    clear = _row([0.80, 0.81, 0.82], [0.70, 0.71, 0.72])
    assert clear["winner"] == "rnn" and clear["beyond_spread"] is True
    assert clear["verdict"].startswith("RNN wins: higher by 10.0 pts, beyond")
    assert clear["spread"] == pytest.approx(0.02)  # std 0.01 on each side
    close = _row([0.70, 0.75, 0.80], [0.69, 0.74, 0.79])
    assert close["winner"] == "rnn" and close["beyond_spread"] is False
    assert "no clear winner" in close["verdict"]


def test_verdict_gives_a_margin_that_rounds_like_its_spread_a_digit_more():
    row = _row([0.80, 0.81, 0.82], [0.7799, 0.7899, 0.7999])  # 2.01 pts against a spread of 2.00
    assert row["beyond_spread"] is True
    assert "higher by 2.01 pts, beyond the seeds' spread (±2.00 pts)" in row["verdict"], row["verdict"]


def test_verdict_with_one_seed_says_the_spread_is_unmeasured():
    row = _row([0.6], [0.7])
    assert row["winner"] == "per_word_linear" and row["spread"] is None and row["beyond_spread"] is None
    assert "1 seed" in row["verdict"]
    assert _row([0.6], [0.7], key="params_total")["verdict"] == "equal"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["sentiment-rnn", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "COLUMNS": "160"})


@pytest.mark.slow
def test_compare_baseline_command_writes_comparison_runs_and_figure(tmp_path):
    out = tmp_path / "cmp"
    two_stages = ["--set", "stage_one.enabled=true", "--set", "stage_one.limit=400", "--set", "stage_one.epochs=1"]
    result = cli("compare-baseline", "--config", "configs/tiny.yaml", "--seeds", "2", "--output", str(out),
                 "--set", "data.limit=300", "--set", "train.epochs=1", *two_stages)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RNN vs per-word linear baseline" in result.stdout and "verdict" in result.stdout
    # a two-stage config trains both models in its two stages, each from a first stage of its own kind
    for prefix, kind in (("rnn", "rnn"), ("baseline", "per_word_linear")):
        for seed in (0, 1):
            first = Path(recorded_stage_one(out / f"{prefix}-seed{seed}")["path"])
            assert first.parent == out / "stage-one" and rundir.is_complete(first)
            config = rundir.read_config(first)
            assert (config.model.kind, config.seed) == (kind, seed)

    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["seeds"] == [0, 1] and comparison["lengths"] == [16, 64, 256, 1024]
    assert comparison["probe_pairs"] >= 40
    keys = {"params_total", "params_without_embedding", "params_L16", "params_L1024", "test_accuracy",
            "test_macro_f1", "train_seconds", "tokens_per_s", "probe_accuracy", "probe_flip_rate",
            "probe_mean_gap", "word_order_sensitivity"}
    for kind in ("rnn", "per_word_linear"):
        model = comparison["models"][kind]
        assert len(model["per_seed"]) == 2
        assert keys <= model["mean"].keys() and keys <= model["std"].keys()
        for key in ("test_accuracy", "probe_accuracy", "word_order_sensitivity"):
            assert model["mean"][key] == pytest.approx(statistics.fmean(r[key] for r in model["per_seed"]))
        # each seed's figure is its saved model's score on the recorded test rows, scored here in-process
        assert [r["test_accuracy"] for r in model["per_seed"]] == pytest.approx(
            [evaluate_run(out / f"{RUN_PREFIX[kind]}-seed{s}")["accuracy"] for s in (0, 1)])
        assert model["mean"]["word_order_sensitivity"] > 0  # both models read word positions
    rnn, baseline = comparison["models"]["rnn"]["mean"], comparison["models"]["per_word_linear"]["mean"]
    assert rnn["params_L16"] == rnn["params_L1024"] == rnn["params_without_embedding"]
    assert baseline["params_L1024"] > baseline["params_L16"]
    assert all(row["verdict"] for row in comparison["rows"])
    assert comparison["split_seed"] == 0  # every seed trained and scored on the same rows
    held_out = {json.dumps(json.loads((out / f"{p}-seed{s}" / "split.json").read_text())["rows"])
                for p in ("rnn", "baseline") for s in (0, 1)}
    assert len(held_out) == 1
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    predicted = run_cli("predict", "--model", out / "baseline-seed1", "--format", "json", "a fine film")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["label"] in ("negative", "positive")

    again = run_cli("compare-baseline", "--config", "configs/tiny.yaml", "--output", out, cwd=ROOT)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    config = load_config(ROOT / "configs" / "tiny.yaml")
    rundir.check_output(out, True, comparison_markers(config), "comparison")  # --overwrite would replace it
    (out / "comparison.json").unlink()
    rundir.check_output(out, True, comparison_markers(config), "comparison")  # stopped before its json, too
    mine = tmp_path / "mine"
    (mine / "rnn-seed1").mkdir(parents=True)
    (mine / "rnn-seed1" / "config.yaml").write_text("a run of another seed, among the user's files")
    with pytest.raises(SentimentRNNError, match="is not a comparison directory"):
        rundir.check_output(mine, True, comparison_markers(config), "comparison")


def test_compare_baseline_rejects_a_broken_probe_before_training(tmp_path):
    probe = tmp_path / "probe.tsv"
    probe.write_text("1\tgood\n1\tnice\n", encoding="utf-8")
    result = run_cli("compare-baseline", "--config", "configs/tiny.yaml", "--output", tmp_path / "cmp",
                     "--probe", probe, cwd=ROOT)
    assert result.returncode == 1 and "same label" in result.stderr
    assert not (tmp_path / "cmp").exists()


def test_the_comparison_table_shows_a_spread_of_zero_and_none_for_one_seed():
    from rich.console import Console

    from sentiment_rnn.console import comparison_table

    def result(seeds, std):
        figure = {"mean": 0.5, "std": std}
        return {"seeds": seeds, "config": "tiny", "model_labels": {"rnn": "RNN", "per_word_linear": "per-word"},
                "rows": [{"label": "test accuracy", "format": "accuracy", "rnn": figure, "per_word_linear": figure,
                          "winner": None, "verdict": "no clear winner"}]}

    def shown(table):
        console = Console(width=200, record=True)
        console.print(table)
        return console.export_text()

    assert shown(comparison_table(result([0, 1], 0.0))).count("0.500 ± 0.000") == 2  # two seeds that agree
    assert "±" not in shown(comparison_table(result([0], None)))  # one seed: no spread was measured


def test_seeds_past_the_largest_numpy_seed_are_refused_before_anything_is_written(tmp_path):
    from sentiment_rnn.compare import compare_baseline

    config = load_config(ROOT / "configs" / "tiny.yaml", [f"seed={(1 << 32) - 1}"])
    with pytest.raises(SentimentRNNError, match="seeds 4294967295 to 4294967296 pass 2\\*\\*32 - 1"):
        compare_baseline(config, tmp_path / "cmp", seeds=2)
    assert not (tmp_path / "cmp").exists()


def test_train_describes_the_baseline_by_its_word_positions_not_by_rnn_settings_it_ignores(tmp_path):
    common = ["--set", "data.limit=120", "--set", "train.epochs=1", "--set", "data.max_length=12"]
    baseline = run_cli("train", "-c", str(TINY), "--set", "model.kind=per_word_linear", *common, "-o", tmp_path / "b")
    assert baseline.returncode == 0, baseline.stderr
    assert "Training tiny: per_word_linear (L = 12) on" in baseline.stdout
    rnn = run_cli("train", "-c", str(TINY), *common, "-o", tmp_path / "r")
    cell, sizes = load_config(TINY).model.cell, load_config(TINY).model.layer_sizes()
    assert f"Training tiny: rnn ({cell}, {sizes}) on" in rnn.stdout
