"""The speed opt-in's CPU kernels (sentiment_rnn/speed/rnn.py) compute what nn.RNN and nn.Dropout compute."""

import pytest
import torch
from torch import nn

from sentiment_rnn.models.rnn import LayerEncoder, last_token_state
from sentiment_rnn.speed import rnn as speed_rnn

SEQ_LEN, INPUT_SIZE, HIDDEN_SIZE = 9, 100, 20
LENGTHS = torch.tensor([9, 4, 6, 1, 9])


def final_state_loss(out: torch.Tensor, lengths: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A loss on each sentence's state at its last real token, as the classifier reads it."""
    return (last_token_state(out, lengths) * weights).sum()


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_fast_rnn_matches_nn_rnn_outputs_and_every_gradient(nonlinearity, num_layers):
    torch.manual_seed(0)
    rnn = nn.RNN(INPUT_SIZE, HIDDEN_SIZE, num_layers=num_layers, nonlinearity=nonlinearity).double()
    x = torch.randn(SEQ_LEN, len(LENGTHS), INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(LENGTHS), HIDDEN_SIZE, dtype=torch.float64)

    expected, _ = rnn(x)
    final_state_loss(expected, LENGTHS, weights).backward()
    expected_grads = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone()]
    rnn.zero_grad()
    x.grad = None

    assert speed_rnn.supports(rnn, x)
    got = speed_rnn.fast_rnn_layers(rnn, x)
    final_state_loss(got, LENGTHS, weights).backward()
    got_grads = [p.grad for p in rnn.parameters()] + [x.grad]

    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert len(got_grads) == len(expected_grads) == 4 * num_layers + 1
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("tanh", [True, False], ids=["tanh", "relu"])
def test_fast_rnn_layer_backward_passes_gradcheck(tanh, steps):
    torch.manual_seed(0)
    args = [torch.randn(*shape, dtype=torch.float64, requires_grad=True)
            for shape in [(steps, 3, 4), (6, 4), (6, 6), (6,), (6,)]]
    assert torch.autograd.gradcheck(lambda *a: speed_rnn.RNNLayer.apply(*a, tanh), args)


def test_layer_encoder_takes_the_fast_kernel_only_when_switched_on_and_only_for_vanilla_rnns(monkeypatch):
    from sentiment_rnn.speed import enable_fast_cpu
    from sentiment_rnn.speed import encoder as speed_encoder

    x = torch.randn(SEQ_LEN, len(LENGTHS), INPUT_SIZE)
    calls = []
    monkeypatch.setattr(speed_encoder, "fast_rnn_layers", lambda rnn, x: calls.append(1) or rnn(x)[0])
    encoder = LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, cell="rnn")
    encoder(x, LENGTHS)
    assert calls == []  # plain by default
    enable_fast_cpu(encoder)
    encoder(x, LENGTHS)
    assert calls == [1]
    gru = LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, cell="gru")
    enable_fast_cpu(gru)
    gru(x, LENGTHS)
    assert calls == [1]  # GRU/LSTM keep torch's kernels
    assert not speed_rnn.supports(LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True).rnn, x)


def test_fast_dropout_keeps_each_value_with_probability_1_minus_p_and_rescales_it():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    dropped = speed_rnn.dropout(x, 0.3, training=True)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.002  # 1M draws: the standard error is 0.00046
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 1 / 0.7))
    dropped.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)  # the gradient flows through kept values only


def test_fast_dropout_is_the_identity_in_eval_mode_and_at_p_0():
    x = torch.randn(4, 5)
    assert speed_rnn.dropout(x, 0.3, training=False) is x
    assert speed_rnn.dropout(x, 0.0, training=True) is x
    layer = speed_rnn.Dropout(0.5).eval()
    assert layer(x) is x
    assert layer.state_dict() == {}


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_frozen_classifier_gives_the_models_own_eval_logits(nonlinearity, num_layers):
    from sentiment_rnn.models.rnn import RNNClassifier

    torch.manual_seed(0)
    encoder = LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, num_layers=num_layers, nonlinearity=nonlinearity, dropout=0.5)
    model = RNNClassifier(50, 3, INPUT_SIZE, encoder, embedding_dropout=0.5, head_dropout=0.5).double().eval()
    input_ids = torch.randint(1, 50, (SEQ_LEN, len(LENGTHS)))
    input_ids[torch.arange(SEQ_LEN).unsqueeze(1) >= LENGTHS] = 0  # right-padded
    assert speed_rnn.FrozenClassifier.applies(model)
    with torch.no_grad():
        expected = model(input_ids, LENGTHS)
    torch.testing.assert_close(speed_rnn.FrozenClassifier(model)(input_ids, LENGTHS), expected, rtol=1e-9, atol=1e-12)


def test_frozen_classifier_applies_only_to_a_one_directional_vanilla_rnn_in_eval_mode():
    from sentiment_rnn.models.baseline import PerWordLinear
    from sentiment_rnn.models.cells import CellEncoder
    from sentiment_rnn.models.rnn import RNNClassifier

    def classifier(encoder):
        return RNNClassifier(50, 2, INPUT_SIZE, encoder).eval()

    assert speed_rnn.FrozenClassifier.applies(classifier(LayerEncoder(INPUT_SIZE, HIDDEN_SIZE)))
    assert not speed_rnn.FrozenClassifier.applies(classifier(LayerEncoder(INPUT_SIZE, HIDDEN_SIZE)).train())
    assert not speed_rnn.FrozenClassifier.applies(classifier(LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, cell="gru")))
    assert not speed_rnn.FrozenClassifier.applies(classifier(LayerEncoder(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True)))
    assert not speed_rnn.FrozenClassifier.applies(classifier(CellEncoder(INPUT_SIZE, [HIDDEN_SIZE])))
    assert not speed_rnn.FrozenClassifier.applies(PerWordLinear(50, 2, INPUT_SIZE, 8).eval())
