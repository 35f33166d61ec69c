"""The training-time probe of dLoss/dh_t must be the full gradient through time, for every encoder."""

import pytest
import torch
from torch import nn

from sentiment_rnn.config import ModelConfig
from sentiment_rnn.models import build_model
from sentiment_rnn.models.bptt import backward_through_time, forward_through_time, gradient_probe

CPU = torch.device("cpu")


def batch(seq_len=12, lengths=(12, 12, 12), vocab=40):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor(lengths)
    ids = torch.randint(2, vocab, (seq_len, len(lengths)), generator=gen)  # [T, B]
    ids = ids.masked_fill(torch.arange(seq_len).unsqueeze(1) >= lengths.unsqueeze(0), 0)
    return ids, lengths, torch.tensor([0, 1, 0])


def test_probe_equals_hand_written_bptt_for_one_tanh_layer():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, embedding_dim=6), 40, 2, 32).double()
    ids, lengths, y = batch()
    probe = gradient_probe(model, (ids, lengths, y), CPU)

    rnn = model.encoder.rnn
    with torch.no_grad():
        x = model.embedding(ids)  # [T, B, E]
        h0 = torch.zeros(3, 8).double()  # [B, H]
        hs = forward_through_time(x, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0, h0)
    h_last = hs[-1].clone().requires_grad_()  # [B, H]
    nn.functional.cross_entropy(model.head(h_last), y).backward()
    grad_out = torch.zeros_like(hs[1:])  # [T, B, H]: the loss reads only the last state
    grad_out[-1] = h_last.grad
    dh = backward_through_time(x, hs, rnn.weight_ih_l0, rnn.weight_hh_l0, grad_out)["dh"]  # [T, B, H]
    expected = dh.norm(dim=-1).mean(dim=1).flip(0)  # [T], steps back from the end

    torch.testing.assert_close(torch.tensor(probe, dtype=torch.float64), expected)


@pytest.mark.parametrize("encoder", ["layer", "cells"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_probe_reaches_every_step_back_for_every_encoder(cell, encoder, bidirectional):
    torch.manual_seed(0)
    sizes = {"hidden_size": [8, 6]} if encoder == "cells" else {"hidden_size": 8, "num_layers": 2}
    model = build_model(ModelConfig(cell=cell, encoder=encoder, bidirectional=bidirectional, embedding_dim=6, **sizes),
                        40, 2, 32)
    norms = gradient_probe(model, batch(lengths=(12, 7, 3)), CPU)
    assert len(norms) == 12
    assert all(n > 0 for n in norms)  # the gradient flows back through the recurrence, not only at the end
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradients behind


@pytest.mark.parametrize("encoder", ["layer", "cells"])
def test_probe_of_a_frozen_model_equals_the_trainable_ones(encoder):
    torch.manual_seed(0)  # train.unfreeze freezes every layer but the head at first: the probe ran into it
    sizes = {"hidden_size": [8, 6]} if encoder == "cells" else {"hidden_size": 8, "num_layers": 2}
    model = build_model(ModelConfig(cell="lstm", encoder=encoder, embedding_dim=6, **sizes), 40, 2, 32)
    data = batch(lengths=(12, 7, 3))
    trainable = gradient_probe(model, data, CPU)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("head"))
    assert gradient_probe(model, data, CPU) == pytest.approx(trainable, rel=1e-6)


def test_probe_averages_each_step_back_over_the_sentences_long_enough_to_have_it():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, embedding_dim=6), 40, 2, 32).double()
    ids, lengths, y = batch(seq_len=6, lengths=(6, 2, 4))
    probe = torch.tensor(gradient_probe(model, (ids, lengths, y), CPU), dtype=torch.float64)  # [6]
    # Alone, a sentence's loss is not divided by the batch size 3: its gradient is 3 times larger.
    alone = [torch.tensor(gradient_probe(model, (ids[:n, [i]], lengths[[i]], y[[i]]), CPU), dtype=torch.float64) / 3
             for i, n in enumerate(lengths.tolist())]
    expected = torch.stack([sum(a[k] for a in alone if k < len(a)) / sum(k < len(a) for a in alone)
                            for k in range(6)])
    torch.testing.assert_close(probe, expected)


@pytest.mark.parametrize("cfg", [ModelConfig(kind="per_word_linear"), ModelConfig(hidden_size=8, pooling="concat")],
                         ids=["baseline", "concat pooling"])
def test_no_probe_for_a_model_whose_head_reads_more_than_the_final_state(cfg):
    model = build_model(cfg, 40, 2, 32)
    assert gradient_probe(model, batch(), CPU) is None


def test_compare_gradients_script_names_the_epochs_a_run_recorded_or_draws_them(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  cell: lstm\n", encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps({"grad_through_time": [{"epoch": 1, "norms": [1.0, 0.5, 0.25]}]}))
    script = Path(__file__).resolve().parent.parent / "scripts" / "compare_gradients.py"
    png = tmp_path / "g.png"
    missing = subprocess.run([sys.executable, script, run, "--output", png, "--epoch", "2"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert "no gradient probe at epoch 2; it has epochs [1]" in missing.stderr and not png.exists()
    drawn = subprocess.run([sys.executable, script, run, "--output", png], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0 and "LSTM" in drawn.stdout and png.read_bytes()[:4] == b"\x89PNG", drawn.stderr
