"""A recurrent encoder unrolled by hand with nn.RNNCell / nn.GRUCell / nn.LSTMCell.

This is the teaching twin of nn.RNN: the same weights give the same outputs and h_n,
but the time loop is plain Python so every step h_t = cell(x_t, h_{t-1}) is visible.
Padding is handled with a [T, B] mask instead of packed sequences.
"""

from __future__ import annotations

import torch
from torch import nn

from sentiment_rnn.errors import SentimentRNNError

NONLINEARITIES = ("tanh", "relu")

State = tuple[torch.Tensor, ...]  # (h,) for rnn/gru, (h, c) for lstm; each [B, H]


def _make_cell(cell: str, input_size: int, hidden_size: int, nonlinearity: str) -> nn.RNNCellBase:
    """One cell per layer and direction; weight names match nn.RNN's per-layer weights."""
    if cell == "rnn":
        return nn.RNNCell(input_size, hidden_size, nonlinearity=nonlinearity)
    if cell == "gru":
        return nn.GRUCell(input_size, hidden_size)
    return nn.LSTMCell(input_size, hidden_size)


class CellEncoder(nn.Module):
    """Stacked (optionally bidirectional) recurrent encoder with an explicit time loop."""

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise SentimentRNNError(
                f"unknown nonlinearity {nonlinearity!r}: use one of {', '.join(NONLINEARITIES)}"
            )
        if cell != "rnn" and nonlinearity != "tanh":
            raise SentimentRNNError(
                f"nonlinearity {nonlinearity!r} only applies to cell 'rnn': use nonlinearity 'tanh' with {cell!r}"
            )
        hidden_sizes = list(hidden_sizes)
        if input_size < 1 or not hidden_sizes or min(hidden_sizes) < 1:
            raise SentimentRNNError(
                f"bad sizes input_size={input_size} hidden_sizes={hidden_sizes}: "
                "use positive integers, at least one layer"
            )
        if not 0.0 <= dropout < 1.0:
            raise SentimentRNNError(f"dropout {dropout} out of range: use a value in [0, 1)")

        self.input_size = input_size
        self.hidden_sizes = hidden_sizes
        self.cell = cell
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_sizes[-1]

        # layers.{i}.fwd / layers.{i}.bwd ("forward" is taken by nn.Module.forward).
        self.layers = nn.ModuleList()
        layer_input_size = input_size
        for hidden_size in hidden_sizes:
            directions = {"fwd": _make_cell(cell, layer_input_size, hidden_size, nonlinearity)}
            if bidirectional:
                directions["bwd"] = _make_cell(cell, layer_input_size, hidden_size, nonlinearity)
            self.layers.append(nn.ModuleDict(directions))
            layer_input_size = self.num_directions * hidden_size  # next layer reads [fwd, bwd]
        self.dropout = nn.Dropout(dropout)

    def _check_inputs(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Fail early with a readable message instead of a shape error deep in the loop."""
        if x.dim() != 3 or x.size(2) != self.input_size:
            raise SentimentRNNError(
                f"input shape {tuple(x.shape)} is wrong: pass time-major [seq_len, batch, {self.input_size}]"
            )
        if lengths.dim() != 1 or lengths.size(0) != x.size(1) or lengths.is_floating_point():
            raise SentimentRNNError(
                f"lengths shape {tuple(lengths.shape)} dtype {lengths.dtype} is wrong: "
                f"pass a LongTensor [batch={x.size(1)}]"
            )
        lengths = lengths.to(x.device)
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > x.size(0)):
            raise SentimentRNNError(
                f"lengths must lie in [1, seq_len={x.size(0)}]: drop empty sentences or pad x to the longest"
            )
        return lengths

    def _step(self, cell: nn.RNNCellBase, x_t: torch.Tensor, state: State) -> State:
        """One time step; LSTM carries (h, c), the others only h."""
        if self.cell == "lstm":
            return cell(x_t, state)  # ([B, H], [B, H])
        return (cell(x_t, state[0]),)  # ([B, H],)

    def _run_direction(
        self, cell: nn.RNNCellBase, x: torch.Tensor, mask: torch.Tensor, reverse: bool,
        step_states: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Unroll one cell over time; masked steps keep the old state so padding has no effect.

        Forward: the state freezes after the last real token. Backward: the state stays at
        h0 = 0 over the padding, so each sentence really starts at its own last token.
        step_states, if given, receives h_t [B, H] for t = 0..T-1 in time order: the very tensors
        the next step reads, so their .grad after backward() is the full dLoss/dh_t through time.
        """
        seq_len, batch = mask.shape  # [T, B]
        h0 = x.new_zeros(batch, cell.hidden_size)  # [B, H]
        state: State = (h0, h0.clone()) if self.cell == "lstm" else (h0,)
        outputs: list[torch.Tensor] = [h0] * seq_len
        steps = reversed(range(seq_len)) if reverse else range(seq_len)
        for t in steps:
            real = mask[t].unsqueeze(1)  # [B, 1]
            new_state = self._step(cell, x[t], state)  # x[t]: [B, in]
            state = tuple(torch.where(real, new, old) for new, old in zip(new_state, state, strict=True))
            outputs[t] = torch.where(real, state[0], torch.zeros_like(state[0]))  # [B, H], 0 at padding
            if step_states is not None:
                step_states.append(state[0])
        if step_states is not None and reverse:
            step_states.reverse()  # time order
        return torch.stack(outputs), state  # [T, B, H]

    def forward_with_states(self, x: torch.Tensor, lengths: torch.Tensor,
                            step_states: list[list[torch.Tensor]] | None = None):
        """Return (out, h_n) laid out like nn.RNN: h_n lists layer0-fwd, layer0-bwd, layer1-fwd, ...

        out is [T, B, dirs*H_last] with zeros at padding; h_n is a list of [B, H_i]
        (for LSTM a tuple (h_n, c_n) of such lists). step_states, if given, receives one list of
        per-step states h_t per layer and direction, in h_n's order (see _run_direction).
        """
        lengths = self._check_inputs(x, lengths)
        seq_len = x.size(0)
        mask = torch.arange(seq_len, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)  # [T, B]
        h_n: list[torch.Tensor] = []
        c_n: list[torch.Tensor] = []
        layer_input = x  # [T, B, input_size]
        for i, layer in enumerate(self.layers):
            if i > 0:
                layer_input = self.dropout(layer_input)  # between layers only, like nn.RNN
            outputs = []
            for name, reverse in (("fwd", False), ("bwd", True))[: self.num_directions]:
                steps = None if step_states is None else []
                out, state = self._run_direction(layer[name], layer_input, mask, reverse, steps)  # [T, B, H_i]
                if step_states is not None:
                    step_states.append(steps)
                outputs.append(out)
                h_n.append(state[0])  # [B, H_i]
                if self.cell == "lstm":
                    c_n.append(state[1])  # [B, H_i]
            layer_input = torch.cat(outputs, dim=2)  # [T, B, dirs*H_i]
        if self.cell == "lstm":
            return layer_input, (h_n, c_n)
        return layer_input, h_n

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                step_states: list[list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (out [T, B, dirs*H_last], final [B, dirs*H_last]) for a right-padded batch."""
        out, h_n = self.forward_with_states(x, lengths, step_states)
        if self.cell == "lstm":
            h_n = h_n[0]  # keep h, drop c
        final = torch.cat(h_n[-self.num_directions :], dim=1)  # [B, dirs*H_last], [fwd, bwd]
        return out, final


def cell_encoder_from_rnn(rnn: nn.RNNBase) -> CellEncoder:
    """Build a CellEncoder holding a copy of an nn.RNN/GRU/LSTM's weights, to show they compute the same thing.

    The returned encoder is time-major ([T, B, F]) even if rnn was built with batch_first.
    """
    if isinstance(rnn, nn.LSTM):
        cell, nonlinearity = "lstm", "tanh"
        if rnn.proj_size:
            raise SentimentRNNError("LSTM with proj_size has no LSTMCell equivalent: build it with proj_size=0")
    elif isinstance(rnn, nn.GRU):
        cell, nonlinearity = "gru", "tanh"
    elif isinstance(rnn, nn.RNN):
        cell, nonlinearity = "rnn", rnn.nonlinearity
    else:
        raise SentimentRNNError(f"cannot copy {type(rnn).__name__}: pass an nn.RNN, nn.GRU or nn.LSTM")
    if not rnn.bias:
        raise SentimentRNNError("the cells always have biases: build the recurrent module with bias=True")

    encoder = CellEncoder(
        rnn.input_size,
        [rnn.hidden_size] * rnn.num_layers,
        cell=cell,
        nonlinearity=nonlinearity,
        bidirectional=rnn.bidirectional,
        dropout=rnn.dropout,
    )
    reference = rnn.weight_ih_l0
    encoder.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        for k, layer in enumerate(encoder.layers):
            for name, suffix in (("fwd", ""), ("bwd", "_reverse"))[: encoder.num_directions]:
                for weight in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer[name], weight).copy_(getattr(rnn, f"{weight}_l{k}{suffix}"))
    encoder.train(rnn.training)
    return encoder
