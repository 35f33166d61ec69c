"""The recurrent classifier: embedding -> RNN encoder -> linear head over the final hidden state.

Tensors are time-major, as in `nn.RNN`'s default: x is [seq_len, batch, feature_len].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import fast

RNN_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class LayerEncoder(nn.Module):
    """A multi-layer `nn.RNN` / `nn.GRU` / `nn.LSTM` that returns each sentence's state at its real ends.

    Taking `h_n` from a right-padded batch is the classic bug: the state has then read the padding too
    (a published tutorial's RNN sits at chance on IMDB that way). One-directional encoders run the
    padded batch and gather the top layer's output at each sentence's last real token; for a causal
    RNN that output equals the packed final state, and on CPU it is about 10x faster than packing.
    Bidirectional encoders run the backward direction on each sentence reversed within its own length,
    so it too starts at the sentence's real end and never reads padding; that equals the packed result
    (tests/test_padding.py) without the cost of packing. `packed=True` keeps the packed path as reference.
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
        # One-layer, one-direction twins of self.rnn, run with self.rnn's own weights (functional_call).
        # A plain list, so they add no parameters and no state-dict keys.
        self._direction_twins = [RNN_LAYERS[cell](input_size if k == 0 else 2 * hidden_size, hidden_size, **kwargs)
                                 for k in range(num_layers)] if bidirectional else []

    def _direction(self, layer: int, suffix: str, x: torch.Tensor) -> torch.Tensor:
        """Run one direction of one layer of self.rnn over x [T, B, in] -> [T, B, H]."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        weights = {f"{n}_l0": getattr(self.rnn, f"{n}_l{layer}{suffix}") for n in names}
        return functional_call(self._direction_twins[layer], weights, (x,))[0]

    def _bidirectional(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(x.shape[0], device=x.device).view(-1, 1)  # [T, 1]
        lengths = lengths.to(x.device).view(1, -1)  # [1, B]
        # Reverse each sentence within its length; padding stays at the end. The map is its own inverse.
        reverse = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [T, B]
        out = x
        for layer in range(self.rnn.num_layers):
            if layer > 0:
                out = fast.dropout(out, self.rnn.dropout, self.training)  # as nn.RNN between layers
            index = reverse.unsqueeze(-1).expand(-1, -1, out.shape[2])  # [T, B, in]
            forward = self._direction(layer, "", out)  # [T, B, H]
            backward = self._direction(layer, "_reverse", out.gather(0, index))  # [T, B, H], reversed time
            backward = backward.gather(0, reverse.unsqueeze(-1).expand_as(backward))  # [T, B, H], original time
            out = torch.cat([forward, backward], dim=2)  # [T, B, 2H]
        hidden = self.output_size // 2
        last = (lengths.view(-1) - 1).view(1, -1, 1).expand(1, -1, hidden)  # [1, B, H]
        forward_end = out[:, :, :hidden].gather(0, last).squeeze(0)  # [B, H] fwd state at the last real token
        return out, torch.cat([forward_end, out[0, :, hidden:]], dim=1)  # bwd state at the first token: [B, 2H]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, packed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, B, E], lengths [B] -> (out [T, B, D*H] top-layer outputs, final [B, D*H]).

        Outputs past a sentence's end are not meaningful (the packed path zeroes them); `final` is exact.
        """
        if self.bidirectional and not (packed or x.is_cuda):  # cuDNN's packed kernels are fast on GPU
            return self._bidirectional(x, lengths)
        if self.bidirectional:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # [T, B, 2H], zeros past each end
            hidden = self.output_size // 2
            last = (lengths - 1).to(x.device).view(1, -1, 1).expand(1, -1, hidden)  # [1, B, H]
            forward_end = out[:, :, :hidden].gather(0, last).squeeze(0)  # [B, H] fwd state at last real token
            backward_end = out[0, :, hidden:]  # [B, H] bwd state after reading back to the first token
            return out, torch.cat([forward_end, backward_end], dim=1)  # [B, 2H]
        if fast.supports(self.rnn, x):
            out = fast.rnn_forward(self.rnn, x)  # [T, B, H], the same maths in fewer ops (models/fast.py)
        else:
            out, _ = self.rnn(x)  # [T, B, H]; h0 defaults to zeros [num_layers, B, H]
        last = (lengths - 1).to(x.device).view(1, -1, 1).expand(1, -1, out.shape[2])  # [1, B, H]
        return out, out.gather(0, last).squeeze(0)  # [B, H]


class RNNClassifier(nn.Module):
    """Embedding (padding_idx=0) -> dropout -> encoder -> dropout -> nn.Linear(state, classes)."""

    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int, encoder: nn.Module,
                 embedding_dropout: float = 0.0, head_dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = fast.Dropout(embedding_dropout)
        self.encoder = encoder
        self.head_dropout = fast.Dropout(head_dropout)
        self.head = nn.Linear(encoder.output_size, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, return_outputs: bool = False):
        """input_ids [T, B], lengths [B] -> logits [B, C] (and the top layer's outputs [T, B, D*H])."""
        x = self.embedding_dropout(self.embedding(input_ids))  # [T, B, E]
        out, final = self.encoder(x, lengths)  # [T, B, D*H], [B, D*H]
        logits = self.head(self.head_dropout(final))  # [B, C]
        return (logits, out) if return_outputs else logits
