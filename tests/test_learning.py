"""Training learns, and the speed opt-in computes what the plain path computes.

- the model can drive the loss on one batch to nearly zero (a broken backward pass or a gather at the
  wrong token could not);
- two epochs on a separable synthetic set beat chance by a wide margin, through `train()` itself;
- `train.fast_cpu` (sentiment_rnn/speed) gives the same logits and the same gradients as the plain path.
"""

import csv
import random

import pytest
import torch
from torch import nn

from sentiment_rnn.config import Config, ModelConfig
from sentiment_rnn.models import build_model
from sentiment_rnn.optim import build_optimizer
from sentiment_rnn.speed import enable_fast_cpu
from sentiment_rnn.train import train

VOCAB, CLASSES, MAX_LENGTH = 60, 2, 20


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random word ids [T, B] with [PAD]=0 after each sentence's end, and lengths [B]."""
    gen = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    ids = torch.randint(2, VOCAB, (max(lengths), len(lengths)), generator=gen)  # [T, B]
    return ids.masked_fill(torch.arange(max(lengths)).unsqueeze(1) >= lengths_t, 0), lengths_t


def test_the_default_model_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm", hidden_size=32), VOCAB, CLASSES, MAX_LENGTH)
    input_ids, lengths = padded_batch([12, 3, 7, 9, 1, 15, 5, 8, 11, 4, 6, 2, 10, 13, 14, 9])
    labels = torch.randint(0, CLASSES, (len(lengths),), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(input_ids, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def write_separable_csv(path, rows: int = 600) -> None:
    """Sentences of neutral filler words with one positive or negative word at a random position."""
    rng = random.Random(0)
    filler = [f"w{i}" for i in range(40)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = i % 2
            words = rng.choices(filler, k=rng.randint(3, 12))
            words.insert(rng.randint(0, len(words)), rng.choice(["great", "lovely"] if label else ["awful", "dull"]))
            writer.writerow([" ".join(words), label])


def test_two_epochs_on_a_separable_set_beat_chance_by_far(tmp_path):
    write_separable_csv(tmp_path / "separable.csv")
    config = Config.model_validate({
        "name": "separable", "data": {"source": str(tmp_path / "separable.csv"), "max_length": 16},
        "tokenizer": {"min_frequency": 1}, "model": {"cell": "gru", "hidden_size": 16, "embedding_dim": 16},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "threads": 1, "device": "cpu"}})
    metrics = train(config, tmp_path / "run")
    assert metrics["test"]["accuracy"] >= 0.9, metrics["history"]


def test_train_fast_cpu_takes_the_speed_route_and_reaches_the_plain_runs_weights(tmp_path):
    from safetensors.torch import load_file

    write_separable_csv(tmp_path / "separable.csv", rows=200)
    weights = {}
    for fast in (False, True):
        config = Config.model_validate({
            "name": "separable", "data": {"source": str(tmp_path / "separable.csv"), "max_length": 16},
            "tokenizer": {"min_frequency": 1}, "model": {"cell": "rnn", "num_layers": 2, "hidden_size": 16,
                                                         "embedding_dim": 16},
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.01, "threads": 1, "device": "cpu", "fast_cpu": fast,
                      "grad_probe_epochs": []}})
        train(config, tmp_path / f"run-{fast}")
        weights[fast] = load_file(str(tmp_path / f"run-{fast}" / "model.safetensors"))
    plain, fast = weights[False], weights[True]
    assert plain.keys() == fast.keys()
    assert all(torch.allclose(fast[k], plain[k], atol=1e-3) for k in plain)  # the same training, within rounding
    # ... computed another way: the hand-written BPTT sums in another order, so the encoder is not bit-identical
    assert any(not torch.equal(fast[k], plain[k]) for k in plain if k.startswith("encoder."))


# Only the routes fast_cpu changes: the hand-written vanilla RNN (one direction) and the unpacked bidirectional
# encoders. A one-directional GRU or LSTM keeps nn's kernel either way: comparing it compares a path with itself.
PARITY = [("rnn", "tanh", False, 2), ("rnn", "relu", False, 1), ("rnn", "tanh", True, 2), ("gru", "tanh", True, 2),
          ("lstm", "tanh", True, 1)]


@pytest.mark.parametrize("cell,nonlinearity,bidirectional,num_layers", PARITY)
def test_fast_cpu_gives_the_plain_paths_logits_and_gradients(cell, nonlinearity, bidirectional, num_layers):
    def model_and_grads(fast: bool):
        torch.manual_seed(0)
        cfg = ModelConfig(cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional, num_layers=num_layers,
                          hidden_size=12, embedding_dim=10, dropout=0.0, embedding_dropout=0.0, head_dropout=0.0)
        model = build_model(cfg, VOCAB, CLASSES, MAX_LENGTH).double()
        if fast:
            enable_fast_cpu(model)
        input_ids, lengths = padded_batch([7, 2, 5, 1, 7, 4])
        logits = model(input_ids, lengths)  # [B, C], train mode: every route that training takes
        nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0, 1, 0])).backward()
        return logits.detach(), {name: p.grad for name, p in model.named_parameters()}

    plain_logits, plain_grads = model_and_grads(fast=False)
    fast_logits, fast_grads = model_and_grads(fast=True)
    assert torch.allclose(fast_logits, plain_logits, rtol=1e-9, atol=1e-12)
    assert plain_grads.keys() == fast_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(fast_grads[name], grad, rtol=1e-9, atol=1e-12), name


def test_fast_cpu_keeps_the_state_dict_and_the_optimizer_groups():
    cfg = ModelConfig(cell="rnn", embedding_dropout=0.5, head_dropout=0.5)
    plain = build_model(cfg, VOCAB, CLASSES, MAX_LENGTH)
    fast = enable_fast_cpu(build_model(cfg, VOCAB, CLASSES, MAX_LENGTH))
    assert plain.state_dict().keys() == fast.state_dict().keys()
    assert isinstance(fast.embedding_dropout, nn.Dropout) and fast.embedding_dropout.p == 0.5
    groups = [len(g["params"]) for g in build_optimizer(fast, Config().train).param_groups]
    assert groups == [len(g["params"]) for g in build_optimizer(plain, Config().train).param_groups]


def test_parameter_groups_cover_every_parameter_once_from_embedding_to_head():
    model = build_model(ModelConfig(cell="lstm", num_layers=2, bidirectional=True), VOCAB, CLASSES, MAX_LENGTH)
    groups = model.parameter_groups()
    assert [name for name, _ in groups] == ["embedding", "encoder.0", "encoder.1", "head"]
    ids = [id(p) for _, params in groups for p in params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)



@pytest.mark.parametrize("encoder", ["layer", "cells"])
def test_each_encoder_group_holds_its_own_layers_weights(encoder):
    """Per-layer learning rates and gradual unfreezing must reach the layer they name, not a neighbour."""
    cfg = ModelConfig(cell="gru", num_layers=3, bidirectional=True, encoder=encoder)
    model = build_model(cfg, VOCAB, CLASSES, MAX_LENGTH)
    groups = dict(model.parameter_groups())
    assert list(groups) == ["embedding", "encoder.0", "encoder.1", "encoder.2", "head"]
    for k in range(3):
        if encoder == "cells":
            expected = list(model.encoder.layers[k].parameters())
        else:  # nn.GRU names layer k's weights weight_ih_lk, ..., bias_hh_lk_reverse
            expected = [p for name, p in model.encoder.rnn.named_parameters()
                        if name.endswith((f"_l{k}", f"_l{k}_reverse"))]
        assert [id(p) for p in groups[f"encoder.{k}"]] == [id(p) for p in expected], k

ENCODERS = {"lstm": {"cell": "lstm"}, "bidirectional gru": {"cell": "gru", "bidirectional": True},
            "tanh rnn": {"cell": "rnn"}, "cells encoder": {"cell": "gru", "encoder": "cells"}}


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast_cpu"])
@pytest.mark.parametrize("name", list(ENCODERS))
def test_dropout_acts_between_stacked_layers_and_nowhere_else_in_the_encoder(name, fast):
    def encoder_outputs(num_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        cfg = ModelConfig(**ENCODERS[name], num_layers=num_layers, hidden_size=12, embedding_dim=10, dropout=0.5)
        model = build_model(cfg, VOCAB, CLASSES, MAX_LENGTH)
        if fast:
            enable_fast_cpu(model)
        input_ids, lengths = padded_batch([7, 2, 5, 1, 7, 4])
        x = model.embedding(input_ids)  # [T, B, E]
        return model.encoder.train()(x, lengths)[1], model.encoder.eval()(x, lengths)[1]  # final states [B, D*H]

    trained, evaluated = encoder_outputs(num_layers=1)
    assert torch.equal(trained, evaluated)  # one layer: nothing between layers, nothing to drop
    trained, evaluated = encoder_outputs(num_layers=2)
    assert not torch.allclose(trained, evaluated)  # layer 1 reads a dropped-out layer 0
