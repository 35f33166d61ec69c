"""Predict and evaluate with an ONNX export (see export.py) through onnxruntime and `tokenizers` only.

This module never imports torch, directly or through the modules it uses: a machine without torch
runs `predict` and `evaluate` on an export (tests/test_export.py runs them in a venv without torch).
Loading checks that every file the export lists is there and unchanged (sha256 in meta.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sentiment_rnn import rundir
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.inputs import lines
from sentiment_rnn.records import add_predictions, check_output_file, prediction_records, scored_rows, stream_records
from sentiment_rnn.rundir import is_export, sha256
from sentiment_rnn.runtime import default_threads
from sentiment_rnn.tokenizer import UNK, encode_ids, load_tokenizer, pad_lists, unknown_shares

MODEL, LABELS, HELDOUT = rundir.ONNX_MODEL, "labels.json", "heldout.jsonl"
FILES = (MODEL, rundir.TOKENIZER, LABELS, rundir.CONFIG, HELDOUT)  # each one's sha256 is in meta.json
FORMAT = rundir.EXPORT_FORMAT
EXPORT_DIR = "onnx"  # where `export` writes inside a run by default
CHARS_PER_TOKEN_CAP = 64  # as predict.py: texts are cut at max_length * this many characters first


def resolve_export(model: Path | None) -> tuple[Path, str | None]:
    """An export directory: `model` itself, the export inside run `model`, or inside the latest run; and what
    to warn of when the export's run has trained since (train --resume): its answers are no longer the run's.
    The export inside a named run is refused then; one named itself is used, with that warning."""
    path = rundir.find_latest_run() if model is None else Path(model)
    if not path.is_dir():
        raise SentimentRNNError(f"'{path}' does not exist; pass an export directory written by 'sentiment-rnn export'")
    inside_run = not is_export(path) and (path / EXPORT_DIR).is_dir()
    if inside_run:
        path = path / EXPORT_DIR
    if not is_export(path):
        raise SentimentRNNError(f"'{path}' holds no ONNX export; write one with: sentiment-rnn export --model {path}")
    stale = None
    if (run := _trained_since(path)) is not None:
        stale = (f"'{path}' holds earlier weights of {run}, which has trained since; export it again: "
                 f"sentiment-rnn export --model {run} --overwrite")
        if inside_run:
            raise SentimentRNNError(stale + ", or use --backend torch")
    return path, stale


def load_export(model: Path | None, threads: int | None = None) -> tuple[OnnxPredictor, str | None]:
    """The export resolve_export finds, loaded, with what to warn of (None when it is current)."""
    path, stale = resolve_export(model)
    return OnnxPredictor.load(path, threads), stale


def _trained_since(export: Path) -> Path | None:
    """The run an export came from, when it is still there and its weights are no longer the exported ones."""
    try:
        meta = json.loads((export / rundir.META).read_text(encoding="utf-8"))
        run, exported = Path(meta["source_run"]), meta["source_weights_sha256"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None  # a damaged meta.json is verify_export's to report
    weights = run / rundir.WEIGHTS
    return run if weights.is_file() and sha256(weights) != exported else None


def verify_export(path: Path) -> dict:
    """meta.json of a complete, untouched export; a missing or changed file is a one-line error."""
    meta_path = path / rundir.META
    if not meta_path.is_file():
        raise SentimentRNNError(f"export '{path}' has no {rundir.META}: the export is incomplete; export the run again")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files, labels = dict(meta["files"]), list(meta["label_names"])
        int(meta["max_length"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SentimentRNNError(f"'{meta_path}' is damaged; export the run again") from None
    if meta.get("format") != FORMAT or not labels:
        raise SentimentRNNError(f"'{meta_path}' was not written by 'sentiment-rnn export'; export the run again")
    for name in FILES:
        if not (path / name).is_file():
            raise SentimentRNNError(f"export '{path}' has no {name}: the export is incomplete; export the run again")
        if sha256(path / name) != files.get(name):
            raise SentimentRNNError(f"'{path / name}' differs from the file that was exported (sha256 mismatch); "
                                    "it was changed or damaged, export the run again")
    return meta


def make_session(model_path: Path, threads: int | None = None):
    """An onnxruntime.InferenceSession on the CPU; onnxruntime is imported here, so is_export costs nothing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SentimentRNNError("onnxruntime is not installed; run: pip install 'sentiment-rnn[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1  # the graph is one chain of ops: nothing to run side by side
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types are not public
        raise SentimentRNNError(f"onnxruntime cannot load '{model_path}' ({str(exc).splitlines()[0][:120]}); "
                                "export the run again") from None


class OnnxPredictor:
    """An export loaded into onnxruntime: texts in, labels and class probabilities out (as predict.Predictor)."""

    def __init__(self, path: Path, session, tokenizer, meta: dict, batch_size: int = 256):
        self.path, self.session, self.tokenizer, self.meta = path, session, tokenizer, meta
        self.labels: list[str] = list(meta["label_names"])
        self.max_length = int(meta["max_length"])
        self.batch_size = batch_size

    @classmethod
    def load(cls, export_dir: Path, threads: int | None = None) -> OnnxPredictor:
        """Load a verified export; intra-op threads as torch's predict: every core, at most 4, unless given."""
        path = Path(export_dir)
        meta = verify_export(path)
        return cls(path, make_session(path / MODEL, threads), load_tokenizer(path / rundir.TOKENIZER), meta)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """[N, C] class probabilities for non-empty texts, in input order."""
        return self.probabilities_of_ids(self.token_ids(texts))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, as the model reads them."""
        cap = self.max_length * CHARS_PER_TOKEN_CAP  # a 10 MB line must not cost a 10 MB tokenization
        return encode_ids(self.tokenizer, [t[:cap] for t in texts], self.max_length)

    def probabilities_of_ids(self, ids: list[list[int]]) -> np.ndarray:
        """[N, C] class probabilities of token_ids' output, in input order; batches cut from the texts sorted
        by token count, so they carry little padding."""
        out = np.empty((len(ids), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            input_ids, lengths = pad_lists([ids[i] for i in chunk])  # [T, B] time-major, [B]
            out[chunk] = self.session.run(None, {"input_ids": input_ids, "lengths": lengths})[0]  # [B, C]
        return out

    def predict(self, texts: list[str]) -> list[dict]:
        """One record per text: label and probabilities, or an error for an empty text."""
        return prediction_records(texts, self.labels, self.probabilities)

    def stream(self, lines: Iterable[str], chunk_size: int = 4096) -> Iterator[dict]:
        """Predictions for any number of lines with flat memory: one chunk in flight at a time."""
        return stream_records(self.predict, lines, chunk_size)


def evaluate_export(export_dir: Path | None, split: str | None = "test", predictions: Path | None = None,
                    show_wrong: int = 0, overwrite: bool = False) -> dict:
    """Metrics of an export on the run's own held-out rows (heldout.jsonl), as `evaluate` reports a run's;
    predictions, show_wrong and overwrite as evaluate.evaluate_run's."""
    from sentiment_rnn.scoring import classification_metrics

    split = split or "test"  # evaluate's --split defaults to the test rows
    if split not in ("test", "validation"):
        raise SentimentRNNError(f"an export holds only its run's test and validation rows, not '{split}'; "
                                "evaluate the run directory it was exported from (with torch) for others")
    check_output_file(predictions, overwrite)
    predictor, stale = load_export(export_dir)
    rows = [json.loads(line) for line in lines(predictor.path / HELDOUT) if line]
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        raise SentimentRNNError(f"export '{predictor.path}' holds no {split} rows; evaluate the run directory instead")
    y_true = np.array([r["label"] for r in rows])
    ids = predictor.token_ids([r["text"] for r in rows])
    probs = predictor.probabilities_of_ids(ids)  # [N, C]
    loss = float(-np.log(np.clip(probs[np.arange(len(rows)), y_true], 1e-12, None)).mean())  # cross-entropy
    metrics = classification_metrics(y_true.tolist(), probs.argmax(1).tolist(), predictor.labels)
    source = predictor.meta.get("data_source", predictor.meta.get("source_run", ""))  # older exports: the run
    metrics.update(run=str(predictor.path), split=split, source=source, loss=loss,
                   numeric_precision="fp32", backend="onnx")
    metrics.update(unknown_shares(ids, predictor.tokenizer.token_to_id(UNK)))
    if stale:
        metrics["warning"] = stale
    if predictions is not None or show_wrong:
        rows = scored_rows([r["text"] for r in rows], y_true, probs, predictor.labels)
        add_predictions(metrics, rows, predictions, show_wrong)
    return metrics
