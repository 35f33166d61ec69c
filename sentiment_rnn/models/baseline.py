"""The naive model the RNN replaces: one separate linear layer per word position.

Position t has its own 100 -> 2 layer (no weight sharing), the L outputs are concatenated into 2L
numbers and a final linear layer maps them to the classes. Its parameters grow with L and a word
means something different at every position; there is no notion of context.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PER_POSITION_OUT = 2  # each position's layer maps a word vector to 2 numbers, as in the tutorial


class PerWordLinear(nn.Module):
    """Embedding -> L independent Linear(E, 2) applied in one einsum over an [L, E, 2] weight -> Linear(2L, C)."""

    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int, max_length: int,
                 embedding_dropout: float = 0.0, head_dropout: float = 0.0):
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        bound = 1 / math.sqrt(embedding_dim)  # nn.Linear's default init, per position
        weight = torch.empty(max_length, embedding_dim, PER_POSITION_OUT).uniform_(-bound, bound)  # [L, E, 2]
        self.position_weight = nn.Parameter(weight)
        self.position_bias = nn.Parameter(torch.empty(max_length, PER_POSITION_OUT).uniform_(-bound, bound))
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(PER_POSITION_OUT * max_length, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [T, B] -> logits [B, C]; sentences are padded or truncated to L = max_length."""
        input_ids = input_ids[: self.max_length]  # [<=L, B]
        input_ids = F.pad(input_ids, (0, 0, 0, self.max_length - input_ids.shape[0]))  # [L, B], [PAD]=0
        x = self.embedding_dropout(self.embedding(input_ids))  # [L, B, E]
        per_position = torch.einsum("lbe,leo->blo", x, self.position_weight) + self.position_bias  # [B, L, 2]
        return self.head(self.head_dropout(per_position.flatten(1)))  # [B, 2L] -> [B, C]


def per_word_linear_params(vocab_size: int, embedding_dim: int, max_length: int, num_classes: int) -> dict:
    """Parameter count as a formula: L*(E*2 + 2) + (2L*C + C), plus the V*E embedding."""
    positions = max_length * (embedding_dim * PER_POSITION_OUT + PER_POSITION_OUT)
    head = PER_POSITION_OUT * max_length * num_classes + num_classes
    return {"embedding": vocab_size * embedding_dim, "without_embedding": positions + head,
            "total": vocab_size * embedding_dim + positions + head}
