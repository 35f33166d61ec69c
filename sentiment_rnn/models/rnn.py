"""The recurrent classifier: embedding -> RNN encoder -> linear head over the final hidden state.

Tensors are time-major, as in `nn.RNN`'s default: x is [seq_len, batch, feature_len].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment_rnn.errors import SentimentRNNError

RNN_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class LayerEncoder(nn.Module):
    """A multi-layer `nn.RNN` / `nn.GRU` / `nn.LSTM` that returns each sentence's state at its real ends.

    Taking `h_n` from a right-padded batch is the classic bug: the state has then read the padding too
    (a published tutorial's RNN sits at chance on IMDB that way). One-directional encoders run the
    padded batch and gather the top layer's output at each sentence's last real token; for a causal
    RNN that output equals the packed final state, and on CPU it is about 10x faster than packing.
    Bidirectional encoders must pack: the backward direction has to start at each sentence's own end.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "rnn",
                 nonlinearity: str = "tanh", bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        if cell not in RNN_LAYERS:
            raise SentimentRNNError(f"unknown cell '{cell}'; valid cells: {', '.join(RNN_LAYERS)}")
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = RNN_LAYERS[cell](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                                    dropout=dropout if num_layers > 1 else 0.0, **kwargs)
        self.bidirectional = bidirectional
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, B, E], lengths [B] -> (out [T, B, D*H] top-layer outputs, final [B, D*H])."""
        if self.bidirectional:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # [T, B, 2H], zeros past each end
            hidden = self.output_size // 2
            last = (lengths - 1).to(x.device).view(1, -1, 1).expand(1, -1, hidden)  # [1, B, H]
            forward_end = out[:, :, :hidden].gather(0, last).squeeze(0)  # [B, H] fwd state at last real token
            backward_end = out[0, :, hidden:]  # [B, H] bwd state after reading back to the first token
            return out, torch.cat([forward_end, backward_end], dim=1)  # [B, 2H]
        out, _ = self.rnn(x)  # [T, B, H]; h0 defaults to zeros [num_layers, B, H]
        last = (lengths - 1).to(x.device).view(1, -1, 1).expand(1, -1, out.shape[2])  # [1, B, H]
        return out, out.gather(0, last).squeeze(0)  # [B, H]


class RNNClassifier(nn.Module):
    """Embedding (padding_idx=0) -> dropout -> encoder -> dropout -> nn.Linear(state, classes)."""

    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int, encoder: nn.Module,
                 embedding_dropout: float = 0.0, head_dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.encoder = encoder
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.output_size, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, return_outputs: bool = False):
        """input_ids [T, B], lengths [B] -> logits [B, C] (and the top layer's outputs [T, B, D*H])."""
        x = self.embedding_dropout(self.embedding(input_ids))  # [T, B, E]
        out, final = self.encoder(x, lengths)  # [T, B, D*H], [B, D*H]
        logits = self.head(self.head_dropout(final))  # [B, C]
        return (logits, out) if return_outputs else logits
