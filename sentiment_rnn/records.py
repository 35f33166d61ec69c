"""Prediction records shared by the torch and ONNX predictors; imports neither backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.rundir import SPLIT, atomic_writer, is_export

EMPTY_TEXT = "empty text: nothing to classify"


def prediction_records(texts: list[str], labels: Sequence[str], probabilities: Callable) -> list[dict]:
    """One record per text: label and probabilities, or an error for an empty text.

    probabilities: texts -> [N, C] (a torch tensor or a numpy array), called once on the non-empty texts.
    """
    records: list[dict] = [{"text": t} for t in texts]
    usable = [i for i, t in enumerate(texts) if t.strip()]
    probs = probabilities([texts[i] for i in usable]) if usable else []
    for row, i in enumerate(usable):
        p = probs[row]
        records[i].update(label=labels[int(p.argmax())], probability=round(float(p.max()), 6),
                          probabilities={n: round(float(v), 6) for n, v in zip(labels, p, strict=True)})
    for rec in records:
        if "label" not in rec:
            rec["error"] = EMPTY_TEXT
    return records


def with_top_k(records: Iterable[dict], k: int) -> Iterator[dict]:
    """predict --top-k: each record gains "top_k", its k most probable labels, most probable first, as
    fastText's predict-prob k. A k above the number of labels gives every label (as fastText does)."""
    for rec in records:
        if "probabilities" in rec:
            ranked = sorted(rec["probabilities"].items(), key=lambda item: -item[1])[:k]
            rec["top_k"] = [{"label": name, "probability": p} for name, p in ranked]
        yield rec


def top_k_text(rec: dict) -> str:
    """A record's top_k in one cell: 'positive 0.831, negative 0.169'."""
    return ", ".join(f"{entry['label']} {entry['probability']:.3f}" for entry in rec["top_k"])


def stream_records(predict: Callable[[list[str]], list[dict]], lines: Iterable[str],
                   chunk_size: int = 4096) -> Iterator[dict]:
    """Predictions for any number of lines with flat memory: one chunk in flight at a time."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) >= chunk_size:
            yield from predict(chunk)
            chunk = []
    if chunk:
        yield from predict(chunk)


def scored_rows(texts: Sequence[str], gold: Sequence[int], probs, labels: Sequence[str]) -> list[dict]:
    """evaluate --predictions: one record per scored row in the data's order (as run_glue's predict_results,
    plus the gold label). probs: [N, C] (a torch tensor or a numpy array) in the same order as texts."""
    rows = []
    for text, y, p in zip(texts, gold, probs, strict=True):
        rows.append({"text": text, "label": labels[int(y)], "predicted": labels[int(p.argmax())],
                     "probabilities": {n: round(float(v), 6) for n, v in zip(labels, p, strict=True)}})
    return rows


def most_confidently_wrong(rows: list[dict], n: int) -> list[dict]:
    """The n misclassified rows whose predicted label had the highest probability, highest first."""
    wrong = [r for r in rows if r["predicted"] != r["label"]]
    return sorted(wrong, key=lambda r: -r["probabilities"][r["predicted"]])[:n]


def check_output_file(path: Path | None, overwrite: bool = False, reading: str | None = None) -> None:
    """Refuse an output path that cannot become a file, before any work is done: a directory, a missing folder,
    a file in a run or export folder (which it would damage), the data being read, or, without overwrite, any
    existing file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise SentimentRNNError(f"cannot write '{path}': it is a directory; give a file path")
    if not path.parent.is_dir():
        raise SentimentRNNError(f"cannot write '{path}': its folder does not exist; create it or choose another path")
    if (path.parent / SPLIT).is_file() or is_export(path.parent):
        raise SentimentRNNError(f"cannot write '{path}': its folder is a run or an export, whose files the tool "
                                "reads; give a path outside it")
    source = Path(reading).expanduser() if reading is not None else None
    if source is not None and source.exists() and (path.parent.resolve() == source.resolve()
                                                   or path.exists() and path.samefile(source)):
        raise SentimentRNNError(f"cannot write '{path}': it is (or is in) the data being scored; give another path")
    if path.exists() and not overwrite:
        raise SentimentRNNError(f"'{path}' already exists; pass --overwrite to replace it or give another path")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """One JSON line per row, written whole or not at all (rundir.atomic_writer)."""
    with atomic_writer(Path(path), "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def add_predictions(metrics: dict, rows: list[dict], path: Path | None, show_wrong: int) -> None:
    """evaluate's --predictions FILE (every row) and --show-wrong N (the N most confidently wrong, in metrics)."""
    if path is not None:  # its callers checked the path before scoring (check_output_file)
        write_jsonl(path, rows)
        metrics["predictions"] = str(path)
    if show_wrong:
        metrics["most_confidently_wrong"] = most_confidently_wrong(rows, show_wrong)
