"""Backpropagation through time for one tanh RNN layer, written out by hand (no autograd).

Forward, for t = 1..T:
    z_t = x_t W_xh^T + b_xh + h_{t-1} W_hh^T + b_hh
    h_t = tanh(z_t)

Backward: h_t feeds the loss directly (g_t = dLoss/dh_t from above) and feeds h_{t+1},
so walking t = T..1 with dh_{T+1} contribution = 0:
    dh_t   = g_t + dz_{t+1} W_hh          (total gradient reaching h_t)
    dz_t   = dh_t * (1 - h_t^2)           (tanh' = 1 - tanh^2)
    dW_xh += dz_t^T x_t      dW_hh += dz_t^T h_{t-1}
    db    += sum_batch dz_t  (b_xh and b_hh get the same gradient)
    dx_t   = dz_t W_xh       dh_0  = dz_1 W_hh
Each step multiplies by W_hh and by tanh' <= 1, which is why ||dh_t|| shrinks
(vanishes) or grows (explodes) geometrically as t moves away from the loss.

This version is for reading and for checking the gradient probe. Training runs nn.RNN's autograd;
the speed opt-in (sentiment_rnn/speed/rnn.py, RNNLayer) runs these equations with every weight
gradient moved out of the loop into one matmul.
"""

from __future__ import annotations

import torch
from torch import nn

from sentiment_rnn.errors import SentimentRNNError


def _check_shapes(x: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor) -> None:
    """Name the mismatch instead of failing inside a matmul."""
    hidden_size = W_hh.size(0)
    if x.dim() != 3 or W_xh.shape != (hidden_size, x.size(2)) or W_hh.shape != (hidden_size, hidden_size):
        raise SentimentRNNError(
            f"shapes x={tuple(x.shape)} W_xh={tuple(W_xh.shape)} W_hh={tuple(W_hh.shape)} do not fit: "
            "use x [T, B, E], W_xh [H, E], W_hh [H, H]"
        )


def forward_through_time(
    x: torch.Tensor,
    W_xh: torch.Tensor,
    b_xh: torch.Tensor,
    W_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
) -> torch.Tensor:
    """Run the recurrence and keep every state, since the backward pass needs all of them.

    x [T, B, E], W_xh [H, E], W_hh [H, H], biases [H], h0 [B, H] -> hs [T+1, B, H], hs[0] = h0.
    """
    _check_shapes(x, W_xh, W_hh)
    hs = [h0]  # [B, H] each
    for t in range(x.size(0)):
        hs.append(torch.tanh(x[t] @ W_xh.T + b_xh + hs[-1] @ W_hh.T + b_hh))  # [B, H]
    return torch.stack(hs)  # [T+1, B, H]


@torch.no_grad()
def backward_through_time(
    x: torch.Tensor,
    hs: torch.Tensor,
    W_xh: torch.Tensor,
    W_hh: torch.Tensor,
    grad_hs_out: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Push dLoss/dh_t (grad_hs_out [T, B, H], for t = 1..T) back through time.

    Returns gradients for "W_xh", "b_xh", "W_hh", "b_hh", "x" [T, B, E], "h0" [B, H]
    and "dh" [T, B, H]: the total dLoss/dh_t at every step (watch its norm over t).
    """
    _check_shapes(x, W_xh, W_hh)
    seq_len = x.size(0)
    if hs.shape != (seq_len + 1, x.size(1), W_hh.size(0)) or grad_hs_out.shape != hs[1:].shape:
        raise SentimentRNNError(
            f"hs {tuple(hs.shape)} / grad_hs_out {tuple(grad_hs_out.shape)} do not fit x {tuple(x.shape)}: "
            "pass hs from forward_through_time [T+1, B, H] and grad_hs_out [T, B, H]"
        )
    dW_xh = torch.zeros_like(W_xh)  # [H, E]
    dW_hh = torch.zeros_like(W_hh)  # [H, H]
    db = torch.zeros_like(W_hh[0])  # [H]
    dx = torch.zeros_like(x)  # [T, B, E]
    dh = torch.zeros_like(grad_hs_out)  # [T, B, H]
    dh_from_next = torch.zeros_like(hs[0])  # [B, H], nothing flows in from beyond T

    for t in reversed(range(seq_len)):
        h_t, h_prev = hs[t + 1], hs[t]  # [B, H]; hs is shifted by one because hs[0] = h0
        dh[t] = grad_hs_out[t] + dh_from_next  # [B, H]
        dz = dh[t] * (1 - h_t**2)  # [B, H]
        dW_xh += dz.T @ x[t]  # [H, B] @ [B, E] -> [H, E]
        dW_hh += dz.T @ h_prev  # [H, B] @ [B, H] -> [H, H]
        db += dz.sum(dim=0)  # [H]
        dx[t] = dz @ W_xh  # [B, H] @ [H, E] -> [B, E]
        dh_from_next = dz @ W_hh  # [B, H] @ [H, H] -> [B, H], becomes part of dh_{t-1}

    return {
        "W_xh": dW_xh,
        "b_xh": db,
        "W_hh": dW_hh,
        "b_hh": db.clone(),
        "x": dx,
        "h0": dh_from_next,  # [B, H]
        "dh": dh,
    }


def gradient_probe(model: nn.Module, batch, device: torch.device) -> list[float] | None:
    """Mean ||dLoss/dh_t|| of the top layer's forward direction, by steps back from each sentence's last token.

    This is backpropagation through time made visible: in a tanh RNN the norm shrinks geometrically
    with distance from the loss (vanishing gradients); gated cells (GRU/LSTM) keep it up. The full
    dLoss/dh_t must be read off the h_t that the next step consumes; nn.RNN keeps those inside its
    kernel (its `out` only carries the direct path to the loss), so the encoder is unrolled with its
    cells, on a weight copy for nn.RNN (equal outputs: tests/test_cells.py).
    """
    if not hasattr(model, "encoder") or getattr(model, "pooling", "last") != "last":
        return None  # the per-word baseline has no hidden state; pooled heads read more than the final state
    from sentiment_rnn.models.cells import CellEncoder, cell_encoder_from_rnn

    model.eval()
    input_ids, lengths, y = (t.to(device) for t in batch)  # [T, B], [B], [B]
    encoder = model.encoder if isinstance(model.encoder, CellEncoder) else cell_encoder_from_rnn(model.encoder.rnn)
    step_states: list[list[torch.Tensor]] = []
    with torch.enable_grad():
        # [T, B, E]; eval mode, so no dropout. A leaf that needs grad: the states carry one even when every
        # layer is frozen (train.unfreeze), and dLoss/dh_t does not depend on which parameters train
        x = model.embedding(input_ids).detach().requires_grad_()
        _, final = encoder(x, lengths, step_states)  # [B, D*H]
        top = step_states[-encoder.num_directions]  # top layer, forward direction: T tensors [B, H]
        for h in top:
            h.retain_grad()
        nn.functional.cross_entropy(model.head(final).float(), y).backward()
    model.zero_grad(set_to_none=True)
    grads = [h.grad if h.grad is not None else torch.zeros_like(h) for h in top]
    grad = torch.stack(grads).float().norm(dim=-1)  # [T, B]
    steps = int(lengths.max())
    back = torch.arange(steps, device=grad.device).view(-1, 1)  # [S, 1] steps back from the end
    t = lengths.view(1, -1) - 1 - back  # [S, B] time index of "k steps back" per sentence
    valid = t >= 0  # [S, B]
    picked = grad.gather(0, t.clamp(min=0)) * valid  # [S, B]
    return (picked.sum(1) / valid.sum(1).clamp(min=1)).tolist()
