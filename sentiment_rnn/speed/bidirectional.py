"""Bidirectional encoders without packing: each sentence is reversed within its own length.

The plain route (`LayerEncoder`) packs the batch so the backward direction starts at each sentence's
real end. Reversing every sentence within its length and running the backward weights over that does
the same (padding stays at the end, so it is never read before a real token) without packing's sorting
and per-step batch sizes. tests/test_padding.py checks it against the packed route.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from sentiment_rnn.models.rnn import RNN_LAYERS, last_token_state
from sentiment_rnn.speed.rnn import dropout

WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _direction_twins(rnn: nn.RNNBase) -> list[nn.RNNBase]:
    """One-layer, one-direction copies of rnn's shape, run with rnn's own weights (functional_call).

    Kept in a plain attribute, so they add no parameters and no state-dict keys.
    """
    twins = getattr(rnn, "_direction_twins", None)
    if twins is None:
        kind = next(name for name, cls in RNN_LAYERS.items() if type(rnn) is cls)
        kwargs = {"nonlinearity": rnn.nonlinearity} if kind == "rnn" else {}
        twins = [RNN_LAYERS[kind](rnn.input_size if k == 0 else 2 * rnn.hidden_size, rnn.hidden_size, **kwargs)
                 for k in range(rnn.num_layers)]
        rnn._direction_twins = twins
    return twins


def _direction(rnn: nn.RNNBase, layer: int, suffix: str, x: torch.Tensor) -> torch.Tensor:
    """Run one direction of one layer of rnn over x [T, B, in] -> [T, B, H]."""
    weights = {f"{n}_l0": getattr(rnn, f"{n}_l{layer}{suffix}") for n in WEIGHT_NAMES}
    return functional_call(_direction_twins(rnn)[layer], weights, (x,))[0]


def reversed_within_length_forward(rnn: nn.RNNBase, x: torch.Tensor,
                                   lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, B, E], lengths [B] -> (out [T, B, 2H], final [B, 2H]), as the packed route returns them."""
    steps = torch.arange(x.shape[0], device=x.device).view(-1, 1)  # [T, 1]
    lengths = lengths.to(x.device)
    row = lengths.view(1, -1)  # [1, B]
    # Reverse each sentence within its length; padding stays at the end. The map is its own inverse.
    reverse = torch.where(steps < row, row - 1 - steps, steps)  # [T, B]
    out = x
    for layer in range(rnn.num_layers):
        if layer > 0:
            out = dropout(out, rnn.dropout, rnn.training)  # as nn.RNN between layers
        index = reverse.unsqueeze(-1).expand(-1, -1, out.shape[2])  # [T, B, in]
        forward = _direction(rnn, layer, "", out)  # [T, B, H]
        backward = _direction(rnn, layer, "_reverse", out.gather(0, index))  # [T, B, H], reversed time
        backward = backward.gather(0, reverse.unsqueeze(-1).expand_as(backward))  # [T, B, H], original time
        out = torch.cat([forward, backward], dim=2)  # [T, B, 2H]
    hidden = rnn.hidden_size
    forward_end = last_token_state(out[:, :, :hidden], lengths)  # [B, H] fwd state at the last real token
    return out, torch.cat([forward_end, out[0, :, hidden:]], dim=1)  # bwd state at the first token: [B, 2H]
