"""LayerEncoder's fast route: which hand-written kernel a CPU batch takes when `fast_cpu` is on."""

from __future__ import annotations

import torch
from torch import nn

from sentiment_rnn.models.rnn import last_token_state
from sentiment_rnn.speed.bidirectional import reversed_within_length_forward
from sentiment_rnn.speed.rnn import fast_rnn_layers, supports


def fast_encoder_forward(
    encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, B, E], lengths [B] -> (out [T, B, D*H], final [B, D*H]), as LayerEncoder's plain route."""
    if encoder.bidirectional:
        return reversed_within_length_forward(encoder.rnn, x, lengths)
    if supports(encoder.rnn, x):
        out = fast_rnn_layers(encoder.rnn, x)  # [T, B, H], vanilla RNN with hand-written BPTT
    else:
        out, _ = encoder.rnn(x)  # [T, B, H]; GRU and LSTM keep nn's kernels
    return out, last_token_state(out, lengths)  # [B, H]
