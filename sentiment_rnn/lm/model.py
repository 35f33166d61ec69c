"""The language model: the classifier's own embedding and encoder, read left to right, predicting the next word.

The embedding and encoder are built by the classifier's builder (models.build_model) and kept under the
same attribute names, so the LM's state dict holds exactly the classifier's `embedding.*` and `encoder.*`
keys and a classifier can copy them. The output softmax over a 20,000-word vocabulary costs more than the
LSTM itself; nn.AdaptiveLogSoftmaxWithLoss gives frequent words a full-width projection and rare words
narrower ones in tail clusters, which cuts that cost (scripts/bench.py measures it).
"""

from __future__ import annotations

import torch
from torch import nn

from sentiment_rnn.config import LMConfig, ModelConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import build_model

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c) for an LSTM: each [layers, B, H]


def usable_cutoffs(cutoffs: list[int], vocab_size: int) -> list[int]:
    """The configured cluster boundaries that fit the vocabulary (a small corpus has fewer words); the
    adaptive softmax needs at least one, so a vocabulary below all of them is cut in half."""
    fitting = [c for c in sorted(set(cutoffs)) if 0 < c < vocab_size - 1]
    return fitting or [max(1, (vocab_size - 1) // 2)]


def recurrent_layer(encoder: nn.Module) -> nn.RNNBase:
    """The nn.RNN / nn.GRU / nn.LSTM inside the classifier's encoder, called directly with a carried state."""
    for module in encoder.modules():
        if isinstance(module, nn.RNNBase):
            return module
    raise SentimentRNNError("pretrain-lm needs an nn.RNN/nn.GRU/nn.LSTM encoder; set model.encoder: layer")


class LanguageModel(nn.Module):
    """Embedding -> dropout -> encoder (state carried in and out) -> dropout -> adaptive softmax."""

    def __init__(self, embedding: nn.Embedding, encoder: nn.Module, hidden_size: int, vocab_size: int,
                 cutoffs: list[int], div_value: float, embedding_dropout: float = 0.0, output_dropout: float = 0.0):
        super().__init__()
        self.embedding = embedding
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.encoder = encoder
        self.output_dropout = nn.Dropout(output_dropout)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cutoffs, div_value=div_value)

    def forward(self, input_ids: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """input_ids [T, B] -> (top layer's outputs [T, B, H], final state to carry into the next segment)."""
        x = self.embedding_dropout(self.embedding(input_ids))  # [T, B, E]
        out, hidden = recurrent_layer(self.encoder)(x, hidden)  # [T, B, H]; hidden None means zeros
        return self.output_dropout(out), hidden

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None = None):
        """Mean next-word cross-entropy over the real (non-[PAD]) targets, their count, and the final state."""
        out, hidden = self(input_ids, hidden)  # [T, B, H]
        return (*real_token_loss(self.head, out, targets), hidden)


def real_token_loss(head: nn.AdaptiveLogSoftmaxWithLoss, out: torch.Tensor, targets: torch.Tensor):
    """out [T, B, H], targets [T, B] -> (mean cross-entropy over the non-[PAD] targets, their count)."""
    keep = targets.reshape(-1) != 0  # [T*B]; [PAD] targets only occur in document windows
    flat = out.reshape(-1, out.shape[-1])[keep]  # [N, H]
    return head(flat, targets.reshape(-1)[keep]).loss, int(keep.sum())


def detach(hidden: Hidden) -> Hidden:
    """Cut the graph at a segment boundary: truncated BPTT keeps the state's value, not its history."""
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def check_model_config(cfg: ModelConfig) -> None:
    if cfg.kind != "rnn" or cfg.encoder != "layer" or cfg.bidirectional:
        raise SentimentRNNError("pretrain-lm trains a left-to-right recurrent encoder; set model.kind: rnn, "
                                "model.encoder: layer and model.bidirectional: false")


def build_language_model(model_cfg: ModelConfig, lm_cfg: LMConfig, vocab_size: int) -> LanguageModel:
    """The LM around the very embedding and encoder modules a classifier of model_cfg would have."""
    check_model_config(model_cfg)
    classifier = build_model(model_cfg, vocab_size, 2, lm_cfg.bptt)  # its head is dropped: classes do not matter
    return LanguageModel(classifier.embedding, classifier.encoder, model_cfg.layer_sizes()[-1], vocab_size,
                usable_cutoffs(lm_cfg.cutoffs, vocab_size), lm_cfg.div_value,
                model_cfg.embedding_dropout, model_cfg.head_dropout)
