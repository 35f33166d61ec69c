"""Models: the recurrent classifier (layer or hand-unrolled cells) and the per-word linear baseline."""

from __future__ import annotations

from torch import nn

from sentiment_rnn.config import ModelConfig
from sentiment_rnn.models.rnn import LayerEncoder, RNNClassifier


def build_model(cfg: ModelConfig, vocab_size: int, num_classes: int, max_length: int) -> nn.Module:
    """The model a config describes; vocab size and classes come from the data, not the config.

    The baseline and the hand-unrolled cells are imported only when the config asks for them: the default
    path reads models/rnn.py alone."""
    if cfg.kind == "per_word_linear":
        from sentiment_rnn.models.baseline import PerWordLinear

        return PerWordLinear(vocab_size, num_classes, cfg.embedding_dim, max_length,
                             cfg.embedding_dropout, cfg.head_dropout)
    if cfg.encoder == "cells":
        from sentiment_rnn.models.cells import CellEncoder

        encoder = CellEncoder(cfg.embedding_dim, cfg.layer_sizes(), cfg.cell, cfg.nonlinearity,
                              cfg.bidirectional, cfg.dropout)
    else:
        encoder = LayerEncoder(cfg.embedding_dim, cfg.hidden_size, cfg.num_layers, cfg.cell,
                               cfg.nonlinearity, cfg.bidirectional, cfg.dropout)
    return RNNClassifier(vocab_size, num_classes, cfg.embedding_dim, encoder, cfg.embedding_dropout, cfg.head_dropout,
                         cfg.pooling)


def count_parameters(model: nn.Module) -> dict:
    """Total parameters and the share outside the (shared) embedding."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embedding.weight.numel()
    return {"total": total, "embedding": embedding, "without_embedding": total - embedding}
