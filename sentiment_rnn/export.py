"""Export a trained run to ONNX: a graph from token ids to class probabilities, plus what serving needs.

The export directory holds model.onnx, tokenizer.json, labels.json, config.yaml (the run's, for
/metadata), heldout.jsonl (the run's own test and validation rows, so `evaluate` scores an export with
neither torch nor datasets) and meta.json (versions, the source run's weights sha256, every file's
sha256), written last. onnx_backend.py loads it without torch.

The graph is traced from `ExportableClassifier`, a forward built from the model's public submodules
(embedding, the recurrent layers' weights, head) in ops every ONNX runtime has: one single-layer,
single-direction nn.RNN / nn.GRU / nn.LSTM per layer and direction, gathers for the last real token.
It never packs sequences: tests/test_export.py pins it to the model's own forward in torch and in
onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn import rundir
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.onnx_backend import EXPORT_DIR, FILES, FORMAT, HELDOUT, LABELS, MODEL, is_export, sha256

OPSET = 17  # ONNX opset of the graph: RNN, GRU and LSTM ops, GatherElements, Softmax on the last axis
PARITY_TOLERANCE = 1e-5  # max abs probability difference the export's self-check accepts
RNN_TYPES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _single_layer(kind: str, input_size: int, hidden_size: int, nonlinearity: str,
                  weights: dict[str, torch.Tensor]) -> nn.RNNBase:
    """A one-layer, one-direction nn.RNN/GRU/LSTM holding the given weight_ih/weight_hh/bias_ih/bias_hh."""
    kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    layer = RNN_TYPES[kind](input_size, hidden_size, bias="bias_ih" in weights, **kwargs)
    with torch.no_grad():
        for name, value in weights.items():
            getattr(layer, f"{name}_l0").copy_(value)
    return layer.eval()


def _from_cells(encoder: nn.Module) -> tuple[list[list[nn.RNNBase]], bool]:
    """The cells encoder's per-layer fwd/bwd cells as single-layer nn.RNN-family modules (same weights)."""
    layers = []
    for layer in encoder.layers:
        directions = []
        for name in ("fwd", "bwd")[: 2 if encoder.bidirectional else 1]:
            cell = layer[name]
            weights = {n: getattr(cell, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                       if getattr(cell, n, None) is not None}
            directions.append(_single_layer(encoder.cell, cell.input_size, cell.hidden_size,
                                            getattr(cell, "nonlinearity", "tanh"), weights))
        layers.append(directions)
    return layers, encoder.bidirectional


def _from_rnn(rnn: nn.RNNBase) -> tuple[list[list[nn.RNNBase]], bool]:
    """A multi-layer (bi)directional nn.RNN/GRU/LSTM split into single-layer, single-direction modules."""
    kind = {nn.RNN: "rnn", nn.GRU: "gru", nn.LSTM: "lstm"}.get(type(rnn))
    if kind is None or rnn.batch_first or getattr(rnn, "proj_size", 0):
        raise SentimentRNNError(f"cannot export a {type(rnn).__name__} with batch_first or proj_size; "
                                "only time-major nn.RNN, nn.GRU and nn.LSTM are exported")
    layers = []
    for k in range(rnn.num_layers):
        input_size = rnn.input_size if k == 0 else rnn.hidden_size * (2 if rnn.bidirectional else 1)
        directions = []
        for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
            weights = {n: getattr(rnn, f"{n}_l{k}{suffix}") for n in names}
            directions.append(_single_layer(kind, input_size, rnn.hidden_size,
                                            getattr(rnn, "nonlinearity", "tanh"), weights))
        layers.append(directions)
    return layers, rnn.bidirectional


def recurrent_layers(model: nn.Module) -> tuple[list[list[nn.RNNBase]], bool]:
    """The model's recurrence as [layer][direction] single-layer modules, and whether it is bidirectional."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(model, "embedding") or not hasattr(model, "head"):
        raise SentimentRNNError(f"cannot export a {type(model).__name__} model: only the recurrent classifier "
                                "(model.kind: rnn) is exported, not the per-word baseline")
    if getattr(model, "pooling", "last") != "last":
        raise SentimentRNNError(f"cannot export a run with model.pooling {model.pooling}: the export reads the "
                                "final state only; export a run trained with model.pooling: last")
    if isinstance(getattr(encoder, "layers", None), nn.ModuleList):
        return _from_cells(encoder)
    rnns = [m for m in encoder.modules() if isinstance(m, nn.RNNBase)]
    if len(rnns) != 1:
        raise SentimentRNNError(f"cannot export the encoder {type(encoder).__name__}: expected one nn.RNN, "
                                f"nn.GRU or nn.LSTM inside it, found {len(rnns)}")
    return _from_rnn(rnns[0])


class ExportableClassifier(nn.Module):
    """input_ids [T, B], lengths [B] -> class probabilities [B, C], as the classifier in eval mode.

    A backward direction reads each sentence reversed within its own length, so it starts at the real
    last token and never reads padding; the forward direction's state is taken at the last real token.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        layers, self.bidirectional = recurrent_layers(model)
        self.embedding, self.head = model.embedding, model.head
        self.layers = nn.ModuleList(nn.ModuleList(directions) for directions in layers)
        self.eval()

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(input_ids)  # [T, B, E]
        steps = torch.arange(x.shape[0], device=x.device).view(-1, 1)  # [T, 1]
        ends = lengths.view(1, -1)  # [1, B]
        reverse = torch.where(steps < ends, ends - 1 - steps, steps)  # [T, B]; its own inverse
        for directions in self.layers:
            out = directions[0](x)[0]  # [T, B, H]
            if self.bidirectional:
                backward = directions[1](x.gather(0, reverse.unsqueeze(-1).expand_as(x)))[0]  # [T, B, H], reversed
                backward = backward.gather(0, reverse.unsqueeze(-1).expand_as(backward))  # [T, B, H], in time order
                out = torch.cat([out, backward], dim=2)  # [T, B, 2H]
            x = out
        hidden = x.shape[2] // 2 if self.bidirectional else x.shape[2]
        last = (lengths - 1).view(1, -1, 1).expand(1, -1, hidden)  # [1, B, H]
        final = x[:, :, :hidden].gather(0, last).squeeze(0)  # [B, H] forward state at the last real token
        if self.bidirectional:
            final = torch.cat([final, x[0, :, hidden:]], dim=1)  # [B, 2H]: backward state after the first token
        return self.head(final).softmax(-1)  # [B, C]


def _example_inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A [T=5, B=3] batch of mixed lengths: with T and B both dynamic, the trace must not fix either."""
    input_ids = torch.randint(2, vocab_size, (5, 3))
    lengths = torch.tensor([5, 2, 3])
    input_ids[2:, 1], input_ids[3:, 2] = 0, 0
    return input_ids, lengths


def write_onnx(module: ExportableClassifier, path: Path, vocab_size: int) -> None:
    """Trace with torch.onnx's TorchScript exporter (T and B dynamic) and check the graph with onnx.checker.

    The dynamo exporter (torch.onnx.export's default) unrolls nn.RNN's time loop and so fixes T to the
    example's length; the TorchScript exporter writes ONNX's own RNN / GRU / LSTM ops, whose T is free.
    """
    import warnings

    try:
        import onnx
    except ImportError:
        raise SentimentRNNError("onnx is not installed; run: pip install 'sentiment-rnn[onnx]'") from None

    dynamic = {"input_ids": {0: "steps", 1: "batch"}, "lengths": {0: "batch"}, "probabilities": {0: "batch"}}
    try:
        with warnings.catch_warnings():  # its deprecation notice and RNN-in-batch warnings are not the user's to fix
            warnings.simplefilter("ignore")
            torch.onnx.export(module, _example_inputs(vocab_size), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["input_ids", "lengths"], output_names=["probabilities"],
                              dynamic_axes=dynamic)
    except Exception as exc:  # the exporter raises many types; the user needs one line naming the op
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SentimentRNNError(
            f"torch.onnx.export failed on this model ({first}); report it with the run's config") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).splitlines()[0][:160]
        raise SentimentRNNError(f"onnx.checker rejected the exported graph ({first})") from None


def _write_heldout(run: rundir.LoadedRun, record: dict, path: Path) -> list[str]:
    """The run's own test and validation rows (`record`: its split.json) as JSON lines {split, text, label};
    returns the test texts."""
    from sentiment_rnn import data as data_lib

    test_texts: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for part in ("test", "validation"):
            ds, _ = data_lib.recorded_split(run.config.data, record, part)
            texts, labels = ds["text"], ds["label"]
            for text, label in zip(texts, labels, strict=True):
                fh.write(json.dumps({"split": part, "text": text, "label": int(label)}, ensure_ascii=False) + "\n")
            if part == "test":
                test_texts = list(texts)
    return test_texts


def check_parity(run: rundir.LoadedRun, export_dir: Path, texts: list[str]) -> float:
    """Max abs difference between onnxruntime's and torch's probabilities on texts (mixed-length batches)."""
    from sentiment_rnn.onnx_backend import OnnxPredictor, make_session
    from sentiment_rnn.predict import Predictor

    usable = [t for t in texts if t.strip()]
    if not usable:
        return 0.0
    reference = Predictor(run).probabilities(usable).numpy()  # [N, C]
    onnx_predictor = OnnxPredictor(export_dir, make_session(export_dir / MODEL), run.tokenizer, run.meta)
    exported = onnx_predictor.probabilities(usable)  # [N, C]
    return float(abs(reference - exported).max())


def export_run(model_dir: Path | None, output: Path | None = None, overwrite: bool = False,
               quantize: bool = False) -> dict:
    """Write the ONNX export of a complete run; returns meta.json's content. quantize: the graph is replaced
    by its int8 dynamic quantization (quantize.py) once the fp32 one has passed the parity check.

    Everything goes to a temporary folder beside `output` first, which is renamed once meta.json is
    written: an interrupted export leaves no half-written directory.
    """
    run_path = rundir.resolve_run(model_dir)
    out = Path(output) if output is not None else run_path / EXPORT_DIR
    if out.exists() and not (out.is_dir() and is_export(out)):  # --overwrite replaces exports, nothing else
        raise SentimentRNNError(
            f"'{out}' exists and is not an export; pass an --output folder that is new or an export")
    if out.exists() and not overwrite:
        raise SentimentRNNError(f"'{out}' already exists; pass --overwrite to replace it or --output another folder")
    run = rundir.load_run(run_path)
    module = ExportableClassifier(run.model)  # fails first, with one line, on a model it cannot export
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    staging.chmod(0o755)  # mkdtemp makes it private; an export is meant to be read by a service user too
    try:
        write_onnx(module, staging / MODEL, int(run.meta["vocab_size"]))
        shutil.copyfile(run.path / rundir.TOKENIZER, staging / rundir.TOKENIZER)
        shutil.copyfile(run.path / rundir.CONFIG, staging / rundir.CONFIG)
        rundir.write_json(staging / LABELS, list(run.meta["label_names"]))
        record = rundir.read_json(run.path / rundir.SPLIT)
        test_texts = _write_heldout(run, record, staging / HELDOUT)
        parity = check_parity(run, staging, test_texts)
        if parity > PARITY_TOLERANCE:
            raise SentimentRNNError(f"the ONNX graph's probabilities differ from torch's by {parity:.2e} "
                                    f"(> {PARITY_TOLERANCE:g}) on the run's test rows; report it with the run's config")
        quantization = _quantize(staging, run, test_texts) if quantize else None
        meta = {**_meta(run, staging, parity, len(test_texts)), "quantization": quantization,
                # the data heldout.jsonl's rows came from, as evaluate on the run names it
                "data_source": record.get("source_given", record.get("source"))}
        rundir.write_json(staging / rundir.META, meta)  # last: its presence marks a complete export
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _quantize(staging: Path, run: rundir.LoadedRun, texts: list[str]) -> dict:
    """Quantize staging's model.onnx in place; what meta.json records about it (sizes, agreement with fp32)."""
    from sentiment_rnn.onnx_backend import OnnxPredictor, make_session
    from sentiment_rnn.quantize import agreement, quantize_in_place

    usable = [t for t in texts if t.strip()]
    fp32_bytes = (staging / MODEL).stat().st_size
    fp32 = OnnxPredictor(staging, make_session(staging / MODEL), run.tokenizer, run.meta).probabilities(usable)
    quantize_in_place(staging / MODEL)
    int8 = OnnxPredictor(staging, make_session(staging / MODEL), run.tokenizer, run.meta).probabilities(usable)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
            "fp32_bytes": fp32_bytes, "int8_bytes": (staging / MODEL).stat().st_size,
            **agreement(fp32, int8)}  # on the run's test rows, at export time


def _meta(run: rundir.LoadedRun, staging: Path, parity: float, parity_rows: int) -> dict:
    from importlib import metadata

    found = rundir.versions()
    for package in ("onnx", "onnxruntime"):
        found[package] = metadata.version(package)
    return {
        "format": FORMAT,
        "format_version": 1,
        "opset": OPSET,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_run": str(run.path.resolve()),
        "source_weights_sha256": sha256(run.path / rundir.WEIGHTS),
        "label_names": list(run.meta["label_names"]),
        "max_length": int(run.meta["max_length"]),
        "vocab_size": int(run.meta["vocab_size"]),
        "model": run.config.model.model_dump(mode="json"),
        "parity_max_abs_diff": parity,  # onnxruntime vs torch on the run's test rows, at export time
        "parity_rows": parity_rows,
        "versions": found,
        "files": {name: sha256(staging / name) for name in FILES},
    }


def export_summary(meta: dict, source: Path, out: Path) -> str:
    """export's closing message: which run (as the user named it, as `out`) went where, how closely it matches
    torch, how to use it."""
    text = (f"Exported {source} to {out} (ONNX opset {meta['opset']}); onnxruntime matches torch "
            f"within {meta['parity_max_abs_diff']:.1e} on {meta['parity_rows']} test rows.")
    if q := meta.get("quantization"):
        text += (f" Quantized to int8: {q['fp32_bytes'] / 1e6:.2f} MB -> {q['int8_bytes'] / 1e6:.2f} MB, labels "
                 f"equal to fp32's on {q['label_agreement']:.1%} of {q['rows']} test rows "
                 f"(max |dP| {q['max_abs_diff']:.1e}).")
    return text + f' Use it with: sentiment-rnn predict --model {out} "some text"'
