"""Predictor: blocks tokenized on a worker thread come back in input order; bf16 stays close to fp32; the
fast opt-in gives the plain probabilities."""

import json

import pytest
import torch

from sentiment_rnn import predict, runtime
from sentiment_rnn.cli_run import Precision
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.evaluate import evaluate_run
from sentiment_rnn.predict import Predictor
from sentiment_rnn.rundir import PRECISIONS, load_run

WORDS = "a film so dull and lifeless yet moving funny and wonderful in parts not bad at all".split()


def texts_of_mixed_lengths(n: int) -> list[str]:
    """Deterministic sentences of 1 to 40 words, long and short interleaved."""
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + (i * 7) % 40)) for i in range(n)]


def test_probabilities_come_back_in_input_order_across_tokenizer_blocks(tiny_run, monkeypatch):
    monkeypatch.setattr(predict, "FIRST_BLOCK", 3)
    monkeypatch.setattr(predict, "BLOCK", 7)
    predictor = Predictor.from_dir(tiny_run, threads=1)
    predictor.batch_size = 4
    texts = texts_of_mixed_lengths(40)  # 1 block of 3, then 6 blocks of up to 7: the worker runs ahead
    together = predictor.probabilities(texts)
    alone = torch.cat([predictor.probabilities([t]) for t in texts])
    assert together.shape == (40, 2)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    assert predictor.probabilities([]).shape == (0, 2)


def test_bf16_probabilities_stay_within_bf16_rounding_of_fp32(tiny_run):
    texts = texts_of_mixed_lengths(64)
    fp32 = Predictor.from_dir(tiny_run, threads=1).probabilities(texts)
    bf16 = Predictor.from_dir(tiny_run, threads=1, precision="bf16").probabilities(texts)
    assert next(load_run(tiny_run, precision="bf16").model.parameters()).dtype == torch.bfloat16
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() < 0.03
    clear = (fp32[:, 1] - 0.5).abs() > 0.03  # labels may differ only where fp32 itself is nearly undecided
    assert torch.equal(fp32.argmax(1)[clear], bf16.argmax(1)[clear])


def test_evaluate_in_bf16_says_so_and_scores_the_same_rows_close_to_fp32(tiny_run):
    fp32, bf16 = evaluate_run(tiny_run), evaluate_run(tiny_run, precision="bf16")
    assert (fp32["numeric_precision"], bf16["numeric_precision"]) == ("fp32", "bf16")
    assert sum(map(sum, bf16["confusion_matrix"])) == sum(map(sum, fp32["confusion_matrix"]))
    assert abs(bf16["accuracy"] - fp32["accuracy"]) <= 0.05


def test_an_unknown_precision_is_a_one_line_error_naming_the_choices(tiny_run):
    with pytest.raises(SentimentRNNError, match="unknown precision 'fp16'; choose one of fp32, bf16"):
        load_run(tiny_run, precision="fp16")
    assert [p.value for p in Precision] == list(PRECISIONS)  # the command line offers what load_run accepts


def test_fast_predictor_gives_the_plain_probabilities(tiny_run):
    from sentiment_rnn.speed.rnn import FrozenClassifier

    texts = texts_of_mixed_lengths(64)
    plain = Predictor.from_dir(tiny_run, threads=1)
    fast = Predictor.from_dir(tiny_run, threads=1, fast=True)
    assert plain.forward is plain.run.model and isinstance(fast.forward, FrozenClassifier)  # tiny is a vanilla RNN
    torch.testing.assert_close(fast.probabilities(texts), plain.probabilities(texts), rtol=0, atol=1e-5)


def test_a_predictor_runs_with_the_threads_asked_for_and_the_plain_model_unless_asked(tiny_run):
    before = torch.get_num_threads()
    asked = runtime.default_threads() + 1  # not what threads=None would set
    try:
        Predictor.from_dir(tiny_run, threads=asked)
        assert torch.get_num_threads() == asked  # predict/serve --threads
    finally:
        torch.set_num_threads(before)
    run = load_run(tiny_run)
    assert Predictor(run).forward is run.model  # the speed kernel is an opt-in


def test_predict_fast_option_prints_the_plain_probabilities(tiny_run):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    args = ["predict", "a gripping film", "dull and flat", "--model", str(tiny_run), "--format", "json"]
    plain, fast = CliRunner().invoke(app, args), CliRunner().invoke(app, args + ["--fast"])
    assert plain.exit_code == 0 and fast.exit_code == 0, plain.output + fast.output
    by_text = {r["text"]: r for r in json.loads(fast.stdout)}
    for record in json.loads(plain.stdout):
        assert by_text[record["text"]]["label"] == record["label"]
        assert abs(by_text[record["text"]]["probability"] - record["probability"]) < 1e-5


def test_streaming_past_several_4096_line_chunks_keeps_one_record_per_line_in_order(tiny_run):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    lines = texts_of_mixed_lengths(2 * 4096 + 7)  # two full chunks and a partial third
    for i in (0, 4095, 4096, 8191, 8192, len(lines) - 1):  # empty lines at the chunk boundaries
        lines[i] = "   "
    result = CliRunner().invoke(app, ["predict", "-m", str(tiny_run), "--format", "jsonl", "-"],
                                input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output[-500:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == lines
    assert [i for i, r in enumerate(records) if "error" in r] == [0, 4095, 4096, 8191, 8192, len(lines) - 1]
    expected = Predictor.from_dir(tiny_run).predict(lines[4090:4100])  # the same texts read in one call
    assert records[4090:4100] == expected
