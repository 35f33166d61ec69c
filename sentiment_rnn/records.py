"""Prediction records shared by the torch and ONNX predictors; imports neither backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

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
