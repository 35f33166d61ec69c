"""Where the texts of `predict` and `explain` come from: TEXT arguments, a file, or stdin ('-').

A file is any path that can be opened for reading: a regular file, a named pipe, /dev/stdin or a shell's
`<(...)`. Lines end at "\\n" only: str.splitlines() also splits at U+0085, U+2028 and other characters
that can sit inside a sentence or a JSON string, and so would cut one text (or one JSON record) in two.
Imports neither torch nor onnxruntime: the ONNX backend reads its held-out rows through `lines`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.records import with_top_k

UNDECODABLE = "\0undecodable"  # stands in for a line that is not UTF-8 until it becomes an error record
PAST = {"classify": "classified", "explain": "explained"}


def lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, split at "\\n" only, without their line ending ("\\n" or "\\r\\n")."""
    with open(path, encoding="utf-8", newline="\n") as fh:  # newline="\n": no other character ends a line
        for line in fh:
            yield line.removesuffix("\n").removesuffix("\r")


def open_file(path: Path) -> BinaryIO:
    """Open any readable path for reading now, so that a wrong one fails before a model is loaded."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller's stream closes it once read
    except FileNotFoundError:
        raise SentimentRNNError(
            f"input file '{path}' not found; pass an existing text file, one text per line") from None
    except IsADirectoryError:
        raise SentimentRNNError(f"input file '{path}' is a directory; pass a text file, one text per line") from None
    except OSError as exc:
        raise SentimentRNNError(f"cannot read input file '{path}' ({exc.strerror}); check the path and its "
                                "permissions") from None


def open_texts(texts: list[str], file: Path | None, verb: str) -> list[str] | BinaryIO:
    """TEXT arguments as given, or the binary stream to read one text per line from: --file's or stdin's ('-')."""
    if texts and file is not None:
        raise SentimentRNNError("give either TEXT arguments or --file, not both")
    if file is not None:
        stream = sys.stdin.buffer if str(file) == "-" else open_file(file)  # --file -: stdin, as '-' alone
        return _not_empty(stream, "stdin" if stream is sys.stdin.buffer else f"input file '{file}'", verb)
    if not texts:
        raise SentimentRNNError(f"nothing to {verb}; give TEXT arguments, --file PATH or '-' for stdin")
    if texts == ["-"]:
        return _not_empty(sys.stdin.buffer, "stdin", verb)
    if "-" in texts:
        raise SentimentRNNError("'-' reads the texts from stdin and stands alone; give TEXT arguments or '-', "
                                "not both")
    empty = [number for number, text in enumerate(texts, 1) if not text.strip()]
    if empty:
        raise SentimentRNNError(f"TEXT argument {empty[0]} of {len(texts)} is empty; an empty text cannot be "
                                f"{PAST[verb]}, so pass a non-empty sentence there")
    return texts


def _not_empty(stream: BinaryIO, name: str, verb: str) -> BinaryIO:
    """stream, refused before a model is loaded when it holds no byte at all (an empty pipe or file)."""
    if hasattr(stream, "peek"):  # a pipe or file: look at the first byte without consuming it
        empty = not stream.peek(1)
    else:  # an in-memory stream, as a test runner's stdin
        position = stream.tell()
        empty = not stream.read(1)
        stream.seek(position)
    if empty:
        _close(stream)
        raise SentimentRNNError(f"{name} is empty; nothing to {verb}: give one text per line")
    return stream


def decode_lines(source: Iterable[bytes]) -> Iterator[str]:
    """Decode line by line so one bad line becomes one error record, not a crash. A UTF-8 byte order mark
    (as some editors write) is not part of the first text."""
    for number, raw in enumerate(source):
        if number == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            yield UNDECODABLE


def prediction_stream(predictor, source: list[str] | BinaryIO, top_k: int | None = None) -> Iterator[dict]:
    """predictor's records for TEXT arguments, or streamed for the lines of a file or stdin; with top_k, each
    record also lists its top_k most probable labels (records.with_top_k)."""
    records = _records(predictor, source)
    return with_top_k(records, top_k) if top_k else records


def _records(predictor, source: list[str] | BinaryIO) -> Iterator[dict]:
    if isinstance(source, list):
        yield from predictor.predict(source)
        return
    try:
        for rec in predictor.stream(decode_lines(source)):
            yield {"text": None, "error": "line is not valid UTF-8"} if rec["text"] == UNDECODABLE else rec
    finally:
        _close(source)


def _close(source: BinaryIO) -> None:
    if source is not sys.stdin.buffer:  # a file this module opened; stdin stays the process's
        source.close()


def texts_to_explain(texts: list[str], file: Path | None) -> list[str]:
    """TEXT arguments, or the lines of --file or stdin ('-'); all checked before a model is loaded."""
    source = open_texts(texts, file, "explain")
    if isinstance(source, list):
        return source
    try:
        read = list(decode_lines(source))
    finally:
        _close(source)
    where = "line {} of stdin" if source is sys.stdin.buffer else f"line {{}} of '{file}'"
    for number, line in enumerate(read, 1):
        if line == UNDECODABLE:
            raise SentimentRNNError(f"{where.format(number)} is not valid UTF-8; save the file as UTF-8")
        if not line.strip():
            raise SentimentRNNError(f"{where.format(number)} is empty; explain needs one non-empty text per line")
    return read


def parse_label_map(spec: str, model_labels: list[str]) -> dict[str, str]:
    """evaluate --label-map 'pos=positive,neg=negative': data label -> model label, every target checked."""
    mapping: dict[str, str] = {}
    for pair in spec.split(","):
        source, sep, target = (part.strip() for part in pair.partition("="))
        if not sep or not source or not target:
            raise SentimentRNNError(f"--label-map entry '{pair}' is not DATA_LABEL=MODEL_LABEL; "
                                    "write it as pos=positive,neg=negative")
        if target not in model_labels:
            raise SentimentRNNError(f"--label-map maps '{source}' to '{target}', which is not one of the model's "
                                    f"labels ({', '.join(model_labels)})")
        mapping[source] = target
    return mapping
