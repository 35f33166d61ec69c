"""Every model setting reaches the module it configures, and the encoders keep their documented shapes.

Each test here killed mutants that the parity and padding tests let through (scripts/mutate.py models).
"""

import pytest
import torch

from sentiment_rnn.config import ModelConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import build_model
from sentiment_rnn.models.cells import CellEncoder
from sentiment_rnn.models.rnn import LayerEncoder, concat_pool

VOCAB, CLASSES, MAX_LENGTH = 40, 3, 16


def test_the_baselines_dropouts_come_from_the_config():
    model = build_model(ModelConfig(kind="per_word_linear", embedding_dropout=0.25, head_dropout=0.5),
                        VOCAB, CLASSES, MAX_LENGTH)
    assert (model.embedding_dropout.p, model.head_dropout.p) == (0.25, 0.5)


@pytest.mark.parametrize("encoder", ["layer", "cells"])
def test_bidirectional_and_concat_pooling_set_the_heads_width(encoder):
    hidden = 6
    last = build_model(ModelConfig(encoder=encoder, hidden_size=hidden, bidirectional=True), VOCAB, CLASSES, MAX_LENGTH)
    concat = build_model(ModelConfig(encoder=encoder, hidden_size=hidden, bidirectional=True, pooling="concat"),
                         VOCAB, CLASSES, MAX_LENGTH)
    assert last.head.in_features == 2 * hidden  # [fwd, bwd] final states
    assert concat.head.in_features == 3 * 2 * hidden  # [final, max, mean] of [fwd, bwd]
    ids, lengths = torch.tensor([[4, 5], [6, 0], [7, 0]]), torch.tensor([3, 1])  # [T, B]
    assert concat.eval()(ids, lengths).shape == (2, CLASSES)


@pytest.mark.parametrize("encoder", ["layer", "cells"])
def test_a_relu_rnn_runs_relu(encoder):
    """nonlinearity relu must not fall back to nn.RNN's default tanh: relu states are never negative."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="rnn", nonlinearity="relu", encoder=encoder, hidden_size=8),
                        VOCAB, CLASSES, MAX_LENGTH)
    out, final = model.encoder(torch.randn(5, 4, model.embedding.embedding_dim), torch.tensor([5, 3, 1, 2]))
    assert final.min() >= 0 and out.min() >= 0 and final.max() > 0


@pytest.mark.parametrize("kind", ["rnn", "per_word_linear"])
def test_padding_embeds_to_zero_and_never_learns(kind):
    model = build_model(ModelConfig(kind=kind, embedding_dim=6, hidden_size=4), VOCAB, 2, MAX_LENGTH)
    ids = torch.tensor([[4, 9], [7, 0], [0, 0]])  # [T, B], [PAD]=0
    model(ids, torch.tensor([2, 1])).sum().backward()
    assert not model.embedding.weight[0].any() and not model.embedding.weight.grad[0].any()


def test_a_bidirectional_layer_encoder_returns_every_time_step_with_zeros_past_each_end():
    encoder = LayerEncoder(5, 4, bidirectional=True)
    out, _ = encoder(torch.randn(6, 2, 5), torch.tensor([3, 2]))  # the longest sentence is shorter than T
    assert out.shape == (6, 2, 8) and not out[3:].any()


@pytest.mark.parametrize("input_size, hidden_sizes, dropout", [(1, [1], 0.0), (3, [2, 1], 0.99)])
def test_the_smallest_sizes_and_dropout_below_one_build_and_run(input_size, hidden_sizes, dropout):
    encoder = CellEncoder(input_size, hidden_sizes, dropout=dropout)
    out, final = encoder(torch.randn(4, 2, input_size), torch.tensor([4, 1]))
    assert out.shape == (4, 2, 1) and final.shape == (2, 1)


@pytest.mark.parametrize("input_size, hidden_sizes, dropout, words", [
    (0, [4], 0.0, "bad sizes input_size=0 hidden_sizes=[4]: use positive integers, at least one layer"),
    (4, [], 0.0, "bad sizes input_size=4 hidden_sizes=[]: use positive integers, at least one layer"),
    (4, [3, 0], 0.0, "bad sizes input_size=4 hidden_sizes=[3, 0]: use positive integers, at least one layer"),
    (4, [3], 1.0, "dropout 1.0 out of range: use a value in [0, 1)"),
])
def test_bad_sizes_and_dropout_are_one_error_naming_the_fix(input_size, hidden_sizes, dropout, words):
    with pytest.raises(SentimentRNNError) as error:
        CellEncoder(input_size, hidden_sizes, dropout=dropout)
    assert str(error.value) == words


def test_input_of_the_wrong_width_is_one_error_naming_the_shape():
    encoder = CellEncoder(4, [3])
    with pytest.raises(SentimentRNNError) as error:
        encoder(torch.randn(5, 2, 6), torch.tensor([5, 5]))
    assert str(error.value) == "input shape (5, 2, 6) is wrong: pass time-major [seq_len, batch, 4]"


def test_concat_pooling_takes_max_and_mean_over_each_sentences_own_words():
    out = torch.tensor([[[2.0], [1.0]], [[-9.0], [4.0]], [[-9.0], [7.0]]])  # [T=3, B=2, H=1]; sentence 0 has 1 word
    final = torch.tensor([[5.0], [6.0]])  # [B, H]
    pooled = concat_pool(out, final, torch.tensor([1, 3]))  # [B, 3H]: [final, max, mean]
    assert pooled.tolist() == [[5.0, 2.0, 2.0], [6.0, 7.0, 4.0]]
