"""`sentiment-rnn inspect`: every parameter and every tensor shape of a model, in the tutorial's terms.

Nothing is written down by hand: parameter shapes are read off the built module, and tensor shapes
come from a real forward pass over a random batch, caught with forward hooks. PyTorch's names map to
the tutorial's: weight_ih -> W_xh, bias_ih -> b_xh, weight_hh -> W_hh, bias_hh -> b_hh. GRU and LSTM
keep their gates' weights stacked in one matrix, rows in PyTorch's order (GRU r|z|n, LSTM i|f|g|o);
they are shown stacked, as stored, with the gate order in the name: nn.GRU(100, 20) has
W_xh (r|z|n) [60, 100].
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn.config import Config, LMRunConfig, load_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import build_model
from sentiment_rnn.models.cells import CellEncoder

TUTORIAL = {"weight_ih": "W_xh", "bias_ih": "b_xh", "weight_hh": "W_hh", "bias_hh": "b_hh"}
ORDER = list(TUTORIAL.values())  # the tutorial's order within a layer: W_xh, b_xh, W_hh, b_hh
GATES = {"rnn": "", "gru": "r|z|n", "lstm": "i|f|g|o"}  # PyTorch's row order of the stacked gates
OTHERS = {"embedding.weight": "embedding", "head.weight": "W_hy", "head.bias": "b_hy"}
LAYER_PARAM = re.compile(r"encoder\.rnn\.(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
CELL_PARAM = re.compile(r"encoder\.layers\.(\d+)\.(fwd|bwd)\.(weight_ih|weight_hh|bias_ih|bias_hh)$")
BATCH, SEQ_LEN = 3, 10  # the tutorial's example batch: 3 sentences of 10 words
NUM_CLASSES = 2  # without data, assume binary sentiment (the embedded corpora's negative/positive)


def _label(name: str, shape: list[int]) -> str:
    return f"{name} [{', '.join(str(d) for d in shape)}]"


def _parameter_row(torch_name: str, param: nn.Parameter, cell: str) -> dict:
    """One parameter, named as in the tutorial, with its layer and direction when it has them."""
    layer, direction, name = None, None, OTHERS.get(torch_name, torch_name)
    if match := LAYER_PARAM.match(torch_name):
        kind, layer, direction = match[1], int(match[2]), "backward" if match[3] else "forward"
        name = TUTORIAL[kind]
    elif match := CELL_PARAM.match(torch_name):
        layer, direction, kind = int(match[1]), "backward" if match[2] == "bwd" else "forward", match[3]
        name = TUTORIAL[kind]
    shape = list(param.shape)
    shown = f"{name} ({GATES[cell]})" if layer is not None and GATES[cell] else name
    return {"name": name, "gates": GATES[cell] if layer is not None else "", "shape": shape,
            "label": _label(shown, shape), "layer": layer, "direction": direction, "torch_name": torch_name,
            "count": param.numel()}


def _parameter_rows(model: nn.Module, cell: str) -> list[dict]:
    rows = [_parameter_row(n, p, cell) for n, p in model.named_parameters()]

    def position(row: dict) -> tuple:
        group = 0 if row["name"] == "embedding" else 2 if row["layer"] is None else 1
        within = ORDER.index(row["name"]) if row["name"] in ORDER else 0
        return group, row["layer"] or 0, row["direction"] != "forward", within

    return sorted(rows, key=position)


def _shapes_of(value) -> list[list[int]]:
    """Shapes of a tensor or of a tuple of tensors (LSTM states come as (h, c))."""
    if isinstance(value, torch.Tensor):
        return [list(value.shape)]
    return [list(v.shape) for v in value]


def _stage(name: str, shape: list[int], dims: str, note: str = "") -> dict:
    return {"stage": name, "shape": shape, "label": _label(name, shape), "dims": dims, "note": note}


def _trace_layer_encoder(encoder: nn.Module, seen: dict) -> list[torch.utils.hooks.RemovableHandle]:
    def grab(module, args, output):
        seen["h_n"] = output[1]  # [L*D, B, H], or (h_n, c_n) for LSTM

    return [encoder.rnn.register_forward_hook(grab)]


def _trace_cells(encoder: CellEncoder, seen: dict) -> list[torch.utils.hooks.RemovableHandle]:
    """Per cell: its first step's input x_t and state h0, and its last step's output h."""
    handles = []
    for k, layer in enumerate(encoder.layers):
        cell = layer["fwd"]

        def before(module, args, k=k):
            seen.setdefault(("x_t", k), args[0])
            seen.setdefault(("h0", k), args[1])

        def after(module, args, output, k=k):
            seen[("h", k)] = output  # overwritten every step: the last call's is the final state

        handles += [cell.register_forward_pre_hook(before), cell.register_forward_hook(after)]
    return handles


def _state_stages(prefix: str, value, dims: str, note: str, lstm: bool) -> list[dict]:
    shapes = _shapes_of(value)
    names = [prefix, prefix.replace("h", "c", 1)] if lstm else [prefix]
    return [_stage(n, s, dims, note if i == 0 else "LSTM cell state, same shape")
            for i, (n, s) in enumerate(zip(names, shapes, strict=True))]


def trace_shapes(model: nn.Module, config: Config, batch: int, seq_len: int, vocab_size: int) -> list[dict]:
    """Run one forward pass over random word ids and report the shape at every stage."""
    cfg = config.model
    seen: dict = {}
    handles = [model.embedding.register_forward_hook(lambda m, a, out: seen.__setitem__("x", out))]
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, CellEncoder):
        handles += _trace_cells(encoder, seen)
    elif encoder is not None:
        handles += _trace_layer_encoder(encoder, seen)
    if encoder is not None:
        handles.append(encoder.register_forward_hook(lambda m, a, out: seen.update(out=out[0], final=out[1])))
        handles.append(model.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("head_in", a[0])))
    input_ids = torch.randint(2, max(vocab_size, 3), (seq_len, batch))  # [T, B], no [PAD]/[UNK]
    lengths = torch.full((batch,), seq_len)  # [B]
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids, lengths)  # [B, C]
            if encoder is not None and not isinstance(encoder, CellEncoder) and "h_n" not in seen:
                encoder.rnn(seen["x"])  # the bidirectional path runs each direction alone; every length is T here
    finally:
        for handle in handles:
            handle.remove()

    lstm, dirs = cfg.cell == "lstm", "2*" if cfg.bidirectional else ""
    stages = [_stage("input_ids", list(input_ids.shape), "[seq_len, batch]", "word ids, time-major"),
              _stage("x", list(seen["x"].shape), "[seq_len, batch, embedding_dim]", "word vectors")]
    if isinstance(encoder, CellEncoder):
        for k in range(len(encoder.layers)):
            width, below = f"[batch, hidden_size[{k}]]", f"[batch, {dirs}hidden_size[{k - 1}]]"
            stages += _state_stages(f"h0 (layer {k})", seen[("h0", k)], width,
                                    "zeros, one per layer and direction, own width", lstm)
            stages.append(_stage(f"x_t (layer {k})", list(seen[("x_t", k)].shape),
                                 "[batch, embedding_dim]" if k == 0 else below,
                                 "one time step's input to this layer's cell"))
            stages += _state_stages(f"h (layer {k})", seen[("h", k)], width,
                                    "forward state after the last step", lstm)
    elif encoder is not None:
        stack = "[num_layers*2, batch, hidden_size]" if cfg.bidirectional else "[num_layers, batch, hidden_size]"
        stages += _state_stages("h0", seen["h_n"], stack, "zeros: nn.RNN's default when no h0 is passed", lstm)
    if encoder is not None:
        width = "hidden_size[-1]" if isinstance(encoder, CellEncoder) else "hidden_size"
        stages.append(_stage("out", list(seen["out"].shape), f"[seq_len, batch, {dirs}{width}]",
                             "top layer's h_t at every step"))
        if not isinstance(encoder, CellEncoder):
            stages += _state_stages("h", seen["h_n"], stack, "every layer's state after the last step", lstm)
        ends = "forward at the last token, backward at the first" if cfg.bidirectional else "at the last real token"
        concat = getattr(model, "pooling", "last") == "concat"
        stages.append(_stage("final", list(seen["final"].shape), f"[batch, {dirs}{width}]",
                             f"{'' if concat else 'what the head reads: '}top state {ends}"))
        if concat:
            stages.append(_stage("pooled", list(seen["head_in"].shape), f"[batch, 3*{dirs}{width}]",
                                 "what the head reads: [final, max over time, mean over time]"))
    stages.append(_stage("logits", list(logits.shape), "[batch, classes]", "one score per class"))
    return stages


def describe_model(model: nn.Module, config: Config, vocab_size: int, num_classes: int, batch: int = BATCH,
                   seq_len: int = SEQ_LEN, source: str = "", notes: list[str] | None = None) -> dict:
    """Parameters (tutorial names and shapes), stage shapes of a real forward pass, and totals."""
    cfg = config.model
    parameters = _parameter_rows(model, cfg.cell)
    embedding = model.embedding.weight.numel()
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("head."))
    total = sum(p.numel() for p in model.parameters())
    frozen = embedding if cfg.embedding.pretrained and cfg.embedding.freeze else 0
    return {
        "source": source,
        "notes": notes or [],
        "model": {"kind": cfg.kind, "cell": cfg.cell, "nonlinearity": cfg.nonlinearity if cfg.cell == "rnn" else None,
                  "encoder": cfg.encoder, "embedding_dim": cfg.embedding_dim, "layer_sizes": cfg.layer_sizes(),
                  "bidirectional": cfg.bidirectional, "vocab_size": vocab_size, "num_classes": num_classes},
        "batch": batch,
        "seq_len": seq_len,
        "parameters": parameters,
        "shapes": trace_shapes(model, config, batch, seq_len, vocab_size),
        "totals": {"total": total, "trainable": total - frozen, "embedding": embedding,
                   "encoder": total - embedding - head, "head": head},
    }


def describe_config(path: Path, overrides: list[str] | None = None, batch: int = BATCH, seq_len: int = SEQ_LEN) -> dict:
    """Describe the model a config builds, instantly: no data is loaded, the vocabulary is tokenizer.max_vocab."""
    config = load_config(path, overrides)
    if isinstance(config, LMRunConfig):  # pretrain-lm's: its head is an adaptive softmax over words, not a classifier
        raise SentimentRNNError(f"'{path}' configures pretrain-lm: a language model, which inspect does not describe; "
                                "inspect a classifier that starts from it, e.g. inspect --config finetune")
    vocab_size = config.tokenizer.max_vocab
    torch.manual_seed(config.seed)
    model = build_model(config.model, vocab_size, NUM_CLASSES, config.data.max_length)
    notes = [f"vocab_size {vocab_size:,} is the config's tokenizer.max_vocab, an upper bound: no data was loaded; "
             "a trained run's vocabulary may be smaller (inspect --model RUN)",
             f"{NUM_CLASSES} classes assumed (binary sentiment); a run takes its classes from the data"]
    return describe_model(model, config, vocab_size, NUM_CLASSES, batch, seq_len, str(path), notes)


def describe_run(run: Path | None, batch: int = BATCH, seq_len: int = SEQ_LEN) -> dict:
    """Describe a trained run's model, with its real vocabulary and classes."""
    from sentiment_rnn.rundir import load_run

    loaded = load_run(run)
    vocab_size, num_classes = int(loaded.meta["vocab_size"]), len(loaded.meta["label_names"])
    notes = [f"vocab_size {vocab_size:,} and classes {', '.join(loaded.meta['label_names'])} from the run"]
    return describe_model(loaded.model, loaded.config, vocab_size, num_classes, batch, seq_len,
                          str(loaded.path), notes)
