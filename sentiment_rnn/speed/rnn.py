"""Hand-written CPU kernels for the vanilla RNN: the same maths as `nn.RNN` and `nn.Dropout` in fewer, larger ops.

Why each one is faster on CPU:
- `dropout` draws its Bernoulli(1 - p) mask with `rand` and a comparison, cheaper than `bernoulli_`.
- `torch.tanh` is slower than `torch.sigmoid` on CPU, and tanh(a) = 2 sigmoid(2a) - 1: the factor 2 goes
  into the weights once per call.
- `nn.RNN`'s autograd records one matmul per time step for dW_hh and adds them up; backpropagation
  through time written out (`RNNLayer`) collects dW_hh, dW_ih, db and dx in one matmul each over all steps.
- `FrozenClassifier` turns the first layer's input matmul into a table lookup for inference.
tests/test_fast_rnn.py and tests/test_learning.py check all of it against the plain modules.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from sentiment_rnn.models.rnn import last_token_state


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: each element kept with probability 1 - p and scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand_like(x).ge_(p)  # 1.0 where kept, 0.0 where dropped; no grad
    return x * keep.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` with the faster mask above; same parameter, same state dict (none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _scale(tanh: bool) -> float:
    """tanh(a) = 2 sigmoid(2a) - 1: the recurrence computes 2a, the sigmoid, then 2s - 1."""
    return 2.0 if tanh else 1.0


def recur_in_place(out: torch.Tensor, w_hh: torch.Tensor, tanh: bool) -> torch.Tensor:
    """The time loop, in place: out [T, B, H] holds each step's input term (times _scale) and leaves with h_t."""
    w_hh_t = w_hh.t() * _scale(tanh)  # [H, H]
    for t in range(out.shape[0]):
        if t:
            out[t].addmm_(out[t - 1], w_hh_t)  # [B, H]
        if tanh:
            out[t].sigmoid_().mul_(2.0).sub_(1.0)
        else:
            out[t].relu_()
    return out


class RNNLayer(torch.autograd.Function):
    """One layer, one direction of a vanilla RNN from h_0 = 0:

        h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  x [T, B, I] -> out [T, B, H]

    The backward pass is backpropagation through time: dz_t = (dL/dout_t + dz_{t+1} W_hh) * act'(z_t),
    with act'(z_t) read off h_t (tanh: 1 - h_t^2; relu: h_t > 0), then every weight gradient in one
    matmul over all T steps. tests/test_fast_rnn.py checks outputs and gradients against `nn.RNN`.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, tanh: bool):
        steps, batch, _ = x.shape
        scale = _scale(tanh)
        out = torch.addmm(b_ih + b_hh, x.reshape(steps * batch, -1), w_ih.t(), alpha=scale, beta=scale)
        out = recur_in_place(out.view(steps, batch, -1), w_hh, tanh)  # [T, B, H]
        ctx.tanh = tanh
        ctx.save_for_backward(x, w_ih, w_hh, out)
        return out

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward through this one is refused, not wrong
    def backward(ctx, grad_out):
        x, w_ih, w_hh, out = ctx.saved_tensors
        steps, batch, hidden = out.shape
        grad_out = grad_out.contiguous()
        slope = 1.0 - out * out if ctx.tanh else (out > 0).to(out.dtype)  # act'(z_t), from h_t
        dz = torch.empty_like(out)  # [T, B, H]
        torch.mul(grad_out[-1], slope[-1], out=dz[-1])
        for t in range(steps - 1, 0, -1):
            torch.addmm(grad_out[t - 1], dz[t], w_hh, out=dz[t - 1])  # dL/dh_{t-1}: direct + through h_t
            dz[t - 1].mul_(slope[t - 1])
        flat = dz.view(steps * batch, hidden)  # [T*B, H]
        grad_w_hh = dz[1:].reshape(-1, hidden).t() @ out[:-1].reshape(-1, hidden)  # [H, H]
        grad_w_ih = flat.t() @ x.reshape(steps * batch, -1)  # [H, I]
        grad_b = flat.sum(0)  # [H], the same for b_ih and b_hh
        grad_x = (flat @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None  # [T, B, I]
        return grad_x, grad_w_ih, grad_w_hh, grad_b, grad_b, None


def fast_rnn_layers(rnn: nn.RNN, x: torch.Tensor, first_layer: int = 0) -> torch.Tensor:
    """Layers first_layer.. of a one-directional `nn.RNN` (tanh or relu, with biases) through RNNLayer:
    x is the input of layer first_layer, out [T, B, H] the top layer's."""
    tanh = rnn.nonlinearity == "tanh"
    for layer in range(first_layer, rnn.num_layers):
        if layer:
            x = dropout(x, rnn.dropout, rnn.training)  # between layers, as nn.RNN does
        x = RNNLayer.apply(x, getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}"),
                           getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}"), tanh)
    return x


def supports(rnn: nn.Module, x: torch.Tensor) -> bool:
    """RNNLayer covers one-directional vanilla RNNs with biases, on CPU, in float32 or float64."""
    return (type(rnn) is nn.RNN and not rnn.bidirectional and rnn.bias and not x.is_cuda
            and x.dtype in (torch.float32, torch.float64) and not rnn.batch_first)


class FrozenClassifier:
    """Inference for a trained classifier with a one-directional vanilla RNN (predict's fast path).

    With the weights fixed and no dropout, the embedding followed by the first layer's input matmul,
    x_t W_ih^T + b_ih + b_hh, depends on the word alone: one [vocab, H] table, computed once, turns
    that matmul into a lookup.
    """

    def __init__(self, model: nn.Module):
        rnn = model.encoder.rnn
        self.model, self.rnn, self.tanh = model, rnn, rnn.nonlinearity == "tanh"
        with torch.no_grad():
            bias = rnn.bias_ih_l0 + rnn.bias_hh_l0
            scale = _scale(self.tanh)
            self.table = torch.addmm(
                bias, model.embedding.weight, rnn.weight_ih_l0.t(), alpha=scale, beta=scale)  # [V, H]

    @staticmethod
    def applies(model: nn.Module) -> bool:
        encoder = getattr(model, "encoder", None)
        rnn = getattr(encoder, "rnn", None)
        return (rnn is not None and hasattr(model, "embedding") and supports(rnn, model.embedding.weight)
                and not model.training and getattr(model, "pooling", "last") == "last")

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids [T, B], lengths [B] -> logits [B, C], as model(input_ids, lengths) in eval mode."""
        projected = nn.functional.embedding(input_ids, self.table)  # [T, B, H], rows of the precomputed table
        out = recur_in_place(projected, self.rnn.weight_hh_l0, self.tanh)  # layer 0
        out = fast_rnn_layers(self.rnn, out, first_layer=1)  # [T, B, H]; eval mode, so no dropout between layers
        return self.model.head(last_token_state(out, lengths))  # [B, H] -> [B, C]
