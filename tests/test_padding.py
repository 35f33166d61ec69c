"""Every cell, direction and encoder hands the head each sentence's state at its real ends."""

import pytest
import torch

from sentiment_rnn.config import ModelConfig
from sentiment_rnn.models import build_model
from sentiment_rnn.speed import enable_fast_cpu

VOCAB, CLASSES = 50, 2
LENGTHS = torch.tensor([6, 2, 4, 1])

COMBINATIONS = [(cell, bidirectional, encoder)
                for cell in ("rnn", "gru", "lstm") for bidirectional in (False, True)
                for encoder in ("layer", "layer-fast", "cells")]


def classifier(cell: str, bidirectional: bool, encoder: str):
    torch.manual_seed(0)
    sizes = {"hidden_size": [12, 8]} if encoder == "cells" else {"hidden_size": 12, "num_layers": 2}
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, encoder=encoder.removesuffix("-fast"), embedding_dim=10,
                      dropout=0.3, embedding_dropout=0.3, head_dropout=0.3, **sizes)
    model = build_model(cfg, VOCAB, CLASSES, max_length=32).double().eval()
    return enable_fast_cpu(model) if encoder == "layer-fast" else model


def padded_ids(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Random word ids [seq_len, batch], [PAD]=0 after each sentence's end."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (seq_len, len(lengths)), generator=gen)  # [T, B]
    pad = torch.arange(seq_len).unsqueeze(1) >= lengths.unsqueeze(0)  # [T, B]
    return ids.masked_fill(pad, 0)


@pytest.mark.parametrize("cell,bidirectional,encoder", COMBINATIONS)
def test_appending_pad_tokens_leaves_logits_unchanged(cell, bidirectional, encoder):
    model = classifier(cell, bidirectional, encoder)
    ids = padded_ids(LENGTHS, int(LENGTHS.max()))  # [6, B]
    longer = torch.cat([ids, torch.zeros(9, len(LENGTHS), dtype=ids.dtype)])  # [15, B], 9 more [PAD] rows
    with torch.no_grad():
        torch.testing.assert_close(model(longer, LENGTHS), model(ids, LENGTHS))


@pytest.mark.parametrize("cell,bidirectional,encoder", COMBINATIONS)
def test_each_sentence_in_a_padded_batch_scores_as_if_alone(cell, bidirectional, encoder):
    """Alone, a sentence has no padding: its ends are the tensor's ends, so both directions start right."""
    model = classifier(cell, bidirectional, encoder)
    ids = padded_ids(LENGTHS, 10)  # [10, B], every sentence padded
    with torch.no_grad():
        batched = model(ids, LENGTHS)  # [B, C]
        alone = torch.cat([model(ids[:n, b:b + 1], LENGTHS[b:b + 1]) for b, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(batched, alone)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_bidirectional_reversal_path_equals_the_packed_path(cell, num_layers):
    from sentiment_rnn.models.rnn import LayerEncoder

    torch.manual_seed(0)
    encoder = LayerEncoder(100, 16, num_layers, cell, bidirectional=True, dropout=0.2).eval()
    x = torch.randn(9, 5, 100)  # [T, B, E]
    lengths = torch.tensor([9, 3, 5, 1, 7])
    packed_out, packed_final = encoder(x, lengths)  # the plain route packs
    enable_fast_cpu(encoder)  # the speed opt-in reverses within each length instead
    out, final = encoder(x, lengths)
    real = (torch.arange(9).view(-1, 1) < lengths).unsqueeze(-1)  # [T, B, 1]
    assert torch.allclose(final, packed_final, atol=1e-6)
    assert torch.allclose(out * real, packed_out, atol=1e-6)
    (final.sum() + out[real.expand_as(out)].sum()).backward()
    assert encoder.rnn.weight_hh_l0_reverse.grad is not None  # gradients reach the module's own weights
