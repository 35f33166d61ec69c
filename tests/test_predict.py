"""Predictor: blocks tokenized on a worker thread come back in input order."""

import torch

from sentiment_rnn import predict
from sentiment_rnn.predict import Predictor

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
