"""The hand-unrolled CellEncoder must compute exactly what nn.RNN/GRU/LSTM compute."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models.cells import CellEncoder, cell_encoder_from_rnn

SEQ_LEN, INPUT_SIZE, HIDDEN_SIZE = 7, 100, 20
LENGTHS = torch.tensor([7, 3, 5, 1])

RECURRENT = {
    "rnn_tanh": lambda **kw: nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: nn.RNN(nonlinearity="relu", **kw),
    "gru": lambda **kw: nn.GRU(**kw),
    "lstm": lambda **kw: nn.LSTM(**kw),
}


def padded_batch(seq_len=SEQ_LEN, lengths=LENGTHS, garbage=0.0, dtype=torch.float64):
    """Time-major [T, B, 100] batch whose padded slots hold `garbage` times noise."""
    x = torch.randn(seq_len, len(lengths), INPUT_SIZE, dtype=dtype)  # [T, B, E]
    pad = torch.arange(seq_len).unsqueeze(1) >= lengths.unsqueeze(0)  # [T, B]
    return torch.where(pad.unsqueeze(2), garbage * x, x)  # [T, B, E]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 4])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_unrolled_encoder_matches_nn_rnn_outputs_and_every_final_state(kind, num_layers, bidirectional):
    torch.manual_seed(0)
    rnn = RECURRENT[kind](
        input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=num_layers, bidirectional=bidirectional
    ).double()
    encoder = cell_encoder_from_rnn(rnn)
    x = padded_batch()

    packed_out, rnn_state = rnn(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))
    rnn_out, _ = pad_packed_sequence(packed_out, total_length=SEQ_LEN)  # [T, B, dirs*H]
    out, h_n = encoder.forward_with_states(x, LENGTHS)

    torch.testing.assert_close(out, rnn_out)
    if kind == "lstm":
        torch.testing.assert_close(torch.stack(h_n[0]), rnn_state[0])  # [L*dirs, B, H]
        torch.testing.assert_close(torch.stack(h_n[1]), rnn_state[1])
        top = rnn_state[0]
    else:
        torch.testing.assert_close(torch.stack(h_n), rnn_state)  # [L*dirs, B, H]
        top = rnn_state
    dirs = 2 if bidirectional else 1
    _, final = encoder(x, LENGTHS)
    torch.testing.assert_close(final, torch.cat(list(top[-dirs:]), dim=1))  # [B, dirs*H]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_outputs_are_zero_at_padded_positions(cell, bidirectional):
    torch.manual_seed(0)
    encoder = CellEncoder(INPUT_SIZE, [HIDDEN_SIZE, 15], cell=cell, bidirectional=bidirectional).double()
    out, _ = encoder(padded_batch(garbage=5.0), LENGTHS)
    pad = torch.arange(SEQ_LEN).unsqueeze(1) >= LENGTHS.unsqueeze(0)  # [T, B]
    assert torch.all(out[pad] == 0)  # [n_pad, dirs*15]
    assert torch.all(out[~pad].abs().sum(dim=1) > 0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_stacked_cells_of_different_widths_100_20_15_have_matching_shapes(bidirectional):
    torch.manual_seed(0)
    dirs = 2 if bidirectional else 1
    encoder = CellEncoder(INPUT_SIZE, [20, 15], bidirectional=bidirectional)
    out, final = encoder(padded_batch(dtype=torch.float32), LENGTHS)
    _, h_n = encoder.forward_with_states(padded_batch(dtype=torch.float32), LENGTHS)

    assert encoder.output_size == dirs * 15
    assert out.shape == (SEQ_LEN, len(LENGTHS), dirs * 15)
    assert final.shape == (len(LENGTHS), dirs * 15)
    assert [tuple(h.shape) for h in h_n] == [(4, 20)] * dirs + [(4, 15)] * dirs
    assert encoder.layers[1]["fwd"].weight_ih.shape == (15, dirs * 20)  # layer 1 reads [fwd, bwd] of layer 0


def test_lstm_returns_hidden_and_cell_states_per_layer():
    encoder = CellEncoder(INPUT_SIZE, [20, 15], cell="lstm")
    _, (h_n, c_n) = encoder.forward_with_states(padded_batch(dtype=torch.float32), LENGTHS)
    assert [tuple(h.shape) for h in h_n] == [tuple(c.shape) for c in c_n] == [(4, 20), (4, 15)]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_extra_padding_with_garbage_leaves_final_state_unchanged(cell, bidirectional):
    torch.manual_seed(0)
    encoder = CellEncoder(INPUT_SIZE, [HIDDEN_SIZE, 15], cell=cell, bidirectional=bidirectional).double()
    x = padded_batch()  # [7, B, E], zeros in padded slots
    long_len = SEQ_LEN + 5
    garbage = 100.0 * torch.randn(long_len, len(LENGTHS), INPUT_SIZE, dtype=torch.float64)  # [12, B, E]
    pad = torch.arange(long_len).unsqueeze(1) >= LENGTHS.unsqueeze(0)  # [12, B]
    x_long = torch.where(pad.unsqueeze(2), garbage, nn.functional.pad(x, (0, 0, 0, 0, 0, 5)))  # [12, B, E]

    out, final = encoder(x, LENGTHS)
    out_long, final_long = encoder(x_long, LENGTHS)

    torch.testing.assert_close(final_long, final)
    torch.testing.assert_close(out_long[:SEQ_LEN], out)
    assert torch.all(out_long[SEQ_LEN:] == 0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_dropout_is_applied_between_layers_not_after_the_last(bidirectional):
    torch.manual_seed(0)
    x = padded_batch(dtype=torch.float32)
    one = CellEncoder(INPUT_SIZE, [HIDDEN_SIZE], dropout=0.9, bidirectional=bidirectional)
    torch.testing.assert_close(one.train()(x, LENGTHS)[0], one.eval()(x, LENGTHS)[0])  # nothing after the top layer
    two = CellEncoder(INPUT_SIZE, [HIDDEN_SIZE, 15], dropout=0.9, bidirectional=bidirectional)
    out_eval, _ = two.eval()(x, LENGTHS)
    out_train, _ = two.train()(x, LENGTHS)
    assert not torch.allclose(out_train, out_eval)  # layer 1 reads a dropped-out layer 0


def test_state_dict_keys_name_layer_and_direction():
    keys = set(CellEncoder(INPUT_SIZE, [20, 15], bidirectional=True).state_dict())
    assert {"layers.0.fwd.weight_ih", "layers.0.bwd.weight_hh", "layers.1.fwd.bias_ih"} <= keys


def test_invalid_cell_name_is_refused_once_by_the_config_listing_valid_cells():
    from sentiment_rnn.config import parse_config

    with pytest.raises(SentimentRNNError) as excinfo:
        parse_config({"model": {"encoder": "cells", "cell": "transformer", "hidden_size": [HIDDEN_SIZE]}})
    message = str(excinfo.value)
    assert "transformer" in message
    assert all(name in message for name in ("rnn", "gru", "lstm"))


def test_invalid_nonlinearity_raises_and_lists_valid_choices():
    with pytest.raises(SentimentRNNError, match="tanh, relu"):
        CellEncoder(INPUT_SIZE, [HIDDEN_SIZE], nonlinearity="sigmoid")


@pytest.mark.parametrize("lengths", [torch.tensor([7, 3, 0, 1]), torch.tensor([8, 3, 5, 1]), torch.tensor([7, 3])])
def test_lengths_outside_the_batch_raise(lengths):
    encoder = CellEncoder(INPUT_SIZE, [HIDDEN_SIZE])
    with pytest.raises(SentimentRNNError):
        encoder(padded_batch(dtype=torch.float32), lengths)
