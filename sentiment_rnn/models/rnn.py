"""The recurrent classifier: embedding -> RNN encoder -> linear head over each sentence's final state.

Tensors are time-major, as in `nn.RNN`'s default: x is [seq_len, batch, feature_len].
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment_rnn.errors import SentimentRNNError

RNN_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}  # cell names are validated once, in config.py


def last_token_state(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """out [T, B, H], lengths [B] -> [B, H]: each sentence's output at its last real token.

    Taking `h_n` (or out[-1]) from a right-padded batch is the classic bug: that state has read the
    padding too. For a one-directional RNN the output at the last real token is the final state the
    sentence alone would give, since an RNN never looks ahead.
    """
    last = (lengths - 1).to(out.device).view(1, -1, 1).expand(1, -1, out.shape[2])  # [1, B, H]
    return out.gather(0, last).squeeze(0)  # [B, H]


def concat_pool(out: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """out [T, B, H], final [B, H], lengths [B] -> [B, 3H]: [final state, max, mean] over real tokens only.

    Outputs past a sentence's end would leak padding into the max and the mean, so they are masked.
    """
    steps = torch.arange(out.shape[0], device=out.device).view(-1, 1)  # [T, 1]
    real = (steps < lengths.to(out.device).view(1, -1)).unsqueeze(-1)  # [T, B, 1]
    biggest = out.masked_fill(~real, float("-inf")).amax(0)  # [B, H]
    mean = (out * real).sum(0) / lengths.to(out.device).view(-1, 1).clamp(min=1)  # [B, H]
    return torch.cat([final, biggest, mean], dim=1)  # [B, 3H]


class LayerEncoder(nn.Module):
    """A multi-layer `nn.RNN` / `nn.GRU` / `nn.LSTM` that returns each sentence's state at its real ends.

    One-directional encoders run the padded batch and take the top layer's output at each sentence's
    last real token. Bidirectional encoders pack the batch, so the backward direction starts at each
    sentence's real end instead of reading the padding first. `fast_forward`, None unless the speed opt-in
    sets it (`sentiment_rnn.speed.enable_fast_cpu`), takes CPU batches instead; this module never imports it.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "rnn",
                 nonlinearity: str = "tanh", bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = RNN_LAYERS[cell](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                                    dropout=dropout if num_layers > 1 else 0.0, **kwargs)
        self.bidirectional = bidirectional
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.fast_forward = None  # the speed opt-in's route; a plain attribute, so weights load either way

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, B, E], lengths [B] -> (out [T, B, D*H] top-layer outputs, final [B, D*H]).

        Outputs past a sentence's end are not meaningful (the packed route zeroes them); `final` is exact.
        """
        if self.fast_forward is not None and not x.is_cuda:
            return self.fast_forward(self, x, lengths)
        if not self.bidirectional:
            out, _ = self.rnn(x)  # [T, B, H]; h0 defaults to zeros
            return out, last_token_state(out, lengths)  # [B, H]
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # [T, B, 2H], zeros past each end
        hidden = self.output_size // 2
        forward_end = last_token_state(out[:, :, :hidden], lengths)  # [B, H] fwd state at the last real token
        backward_end = out[0, :, hidden:]  # [B, H] bwd state after reading back to the first token
        return out, torch.cat([forward_end, backward_end], dim=1)  # [B, 2H]


class RNNClassifier(nn.Module):
    """Embedding (padding_idx=0) -> dropout -> encoder -> dropout -> nn.Linear(state, classes).

    pooling "concat" feeds the head [final state, max, mean] of the top layer's outputs (ULMFiT's concat
    pooling) instead of the final state alone.
    """

    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int, encoder: nn.Module,
                 embedding_dropout: float = 0.0, head_dropout: float = 0.0, pooling: str = "last"):
        super().__init__()
        if pooling not in ("last", "concat"):
            raise SentimentRNNError(f"unknown pooling '{pooling}'; valid: last, concat")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.encoder = encoder
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.output_size * (3 if pooling == "concat" else 1), num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids [T, B], lengths [B] -> logits [B, C]."""
        x = self.embedding_dropout(self.embedding(input_ids))  # [T, B, E]
        out, final = self.encoder(x, lengths)  # [T, B, D*H], [B, D*H]
        logits = self.head(self.head_dropout(self.pool(out, final, lengths)))  # [B, C]
        return logits

    def pool(self, out: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The head's input: final [B, D*H] itself, or [final, max, mean] [B, 3*D*H] under pooling concat."""
        return concat_pool(out, final, lengths) if self.pooling == "concat" else final

    def parameter_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """(name, parameters) from input to output: embedding, encoder layer k, head.

        The seam for per-layer learning rates and gradual unfreezing; see train.build_optimizer.
        """
        groups = [("embedding", list(self.embedding.parameters()))]
        rnn = getattr(self.encoder, "rnn", None)
        if rnn is None:  # CellEncoder: one group per stacked layer
            groups += [(f"encoder.{k}", list(layer.parameters())) for k, layer in enumerate(self.encoder.layers)]
        else:
            for k in range(rnn.num_layers):
                # nn.RNN names layer k's weights weight_ih_lk, bias_hh_lk_reverse, ...
                params = [p for name, p in rnn.named_parameters() if re.search(r"_l(\d+)", name).group(1) == str(k)]
                groups.append((f"encoder.{k}", params))
        return groups + [("head", list(self.head.parameters()))]
