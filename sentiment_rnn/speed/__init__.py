"""The speed opt-in: hand-written CPU kernels and process tricks that trade readability for speed.

The plain path (`nn.RNN` / `nn.GRU` / `nn.LSTM`, `nn.Dropout`, packing for bidirectional encoders) is
what every model runs by default and what a reader should follow. Everything here computes the same
thing in fewer or larger ops, and tests/test_learning.py and tests/test_fast_rnn.py pin it to the plain
path (same logits, same gradients). What each part trades:

- `speed.rnn`: a vanilla RNN layer with backpropagation through time written out by hand (an
  autograd.Function), tanh computed through sigmoid, a dropout mask drawn with `rand` instead of
  `bernoulli_`, and a frozen first-layer lookup table for inference. Faster on CPU; one more BPTT to
  read and to keep correct. Not used on CUDA, where cuDNN's kernels are faster.
- `speed.bidirectional`: bidirectional encoders reverse each sentence within its own length instead
  of packing, so the backward direction still starts at the real end. Avoids the packing cost on CPU.

The switch is `train.fast_cpu` in the config (training) and `Predictor(..., fast=True)` (prediction):
`enable_fast_cpu(model)` turns a built model onto these kernels, keeping its parameters and state dict.
"""

from __future__ import annotations

from torch import nn

from sentiment_rnn.models.rnn import LayerEncoder
from sentiment_rnn.speed.encoder import fast_encoder_forward
from sentiment_rnn.speed.rnn import Dropout


def enable_fast_cpu(model: nn.Module) -> nn.Module:
    """Switch a model onto the CPU kernels in place: its encoder's fast route and the faster dropout mask.

    Parameters and state-dict keys do not change, so a run trained either way loads either way.
    """
    for module in model.modules():
        if isinstance(module, LayerEncoder):
            module.fast_forward = fast_encoder_forward  # see LayerEncoder.forward
    for name, module in list(model.named_children()):
        if type(module) is nn.Dropout:
            setattr(model, name, Dropout(module.p).train(module.training))
    return model
