"""Hand-written backpropagation through time must agree with autograd."""

import pytest
import torch

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models.bptt import backward_through_time, forward_through_time

T, B, E, H = 6, 3, 5, 4


def make_inputs():
    """float64 so the comparison is tight, not just 'roughly right'."""
    torch.manual_seed(0)
    return {
        "x": torch.randn(T, B, E, dtype=torch.float64),
        "W_xh": 0.5 * torch.randn(H, E, dtype=torch.float64),
        "b_xh": 0.1 * torch.randn(H, dtype=torch.float64),
        "W_hh": 0.5 * torch.randn(H, H, dtype=torch.float64),
        "b_hh": 0.1 * torch.randn(H, dtype=torch.float64),
        "h0": 0.1 * torch.randn(B, H, dtype=torch.float64),
    }


def autograd_reference(inputs, loss_weights):
    """Autograd through an independent step loop; retain_grad on each h_t gives the total dLoss/dh_t."""
    leaves = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
    h = leaves["h0"]  # [B, H]
    states = []
    for t in range(T):
        h = torch.tanh(
            leaves["x"][t] @ leaves["W_xh"].T + leaves["b_xh"] + h @ leaves["W_hh"].T + leaves["b_hh"]
        )  # [B, H]
        h.retain_grad()
        states.append(h)
    loss = sum((w * s).sum() for w, s in zip(loss_weights, states, strict=True))
    loss.backward()
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    grads["dh"] = torch.stack([s.grad for s in states])  # [T, B, H]
    return torch.stack([inputs["h0"]] + [s.detach() for s in states]), grads  # [T+1, B, H]


@pytest.mark.parametrize("loss_on", ["last_state", "every_state"])
def test_manual_bptt_matches_autograd(loss_on):
    inputs = make_inputs()
    torch.manual_seed(1)
    loss_weights = torch.randn(T, B, H, dtype=torch.float64)  # dLoss/dh_t from above
    if loss_on == "last_state":
        loss_weights[:-1] = 0  # a classifier reads only h_T

    hs_ref, expected = autograd_reference(inputs, loss_weights)
    hs = forward_through_time(inputs["x"], inputs["W_xh"], inputs["b_xh"], inputs["W_hh"], inputs["b_hh"], inputs["h0"])
    grads = backward_through_time(inputs["x"], hs, inputs["W_xh"], inputs["W_hh"], loss_weights)

    torch.testing.assert_close(hs, hs_ref)
    assert set(grads) == {"W_xh", "b_xh", "W_hh", "b_hh", "x", "h0", "dh"}
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, msg=lambda m, name=name: f"{name}: {m}")


def test_forward_keeps_h0_as_first_state():
    inputs = make_inputs()
    hs = forward_through_time(inputs["x"], inputs["W_xh"], inputs["b_xh"], inputs["W_hh"], inputs["b_hh"], inputs["h0"])
    assert hs.shape == (T + 1, B, H)
    torch.testing.assert_close(hs[0], inputs["h0"])


def test_gradient_norm_vanishes_going_back_in_time_with_small_recurrent_weights():
    inputs = make_inputs()
    W_hh = 0.1 * torch.eye(H, dtype=torch.float64)
    hs = forward_through_time(inputs["x"], inputs["W_xh"], inputs["b_xh"], W_hh, inputs["b_hh"], inputs["h0"])
    grad_out = torch.zeros(T, B, H, dtype=torch.float64)
    grad_out[-1] = 1.0
    norms = backward_through_time(inputs["x"], hs, inputs["W_xh"], W_hh, grad_out)["dh"].norm(dim=(1, 2))  # [T]
    assert torch.all(norms[:-1] < 0.1 * norms[1:])


def test_mismatched_shapes_raise():
    inputs = make_inputs()
    with pytest.raises(SentimentRNNError, match="W_xh"):
        forward_through_time(inputs["x"], inputs["W_xh"].T, inputs["b_xh"], inputs["W_hh"], inputs["b_hh"],
                             inputs["h0"])
