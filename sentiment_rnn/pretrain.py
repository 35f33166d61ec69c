"""`sentiment-rnn pretrain-embeddings`: word vectors from unlabeled in-domain text, offline.

The corpus is the training rows of each embedded source (Rotten Tomatoes sentences, IMDB reviews),
split exactly as a config splits them (data.load_splits with its seed and shares): a run of that config
never meets, in its validation or test rows, a text the vectors were trained on. A config with another
seed or split holds out other rows, which the vectors may have read; train vectors for it with
`--config` (or `--set seed=N`). Texts are normalised and split by the project tokenizer's own
normalizer and pre-tokenizer, so the vectors' words are exactly the vocabulary's words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sentiment_rnn.config import Config
from sentiment_rnn.data import EMBEDDED, training_texts
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.tokenizer import untrained_tokenizer

DEFAULT_OUTPUT = Path("vectors/movie-reviews-100d.txt")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse to replace vectors by accident, before any time is spent."""
    if output.is_dir():
        raise SentimentRNNError(f"'{output}' is a directory; give --output a file path such as {DEFAULT_OUTPUT}")
    if output.exists() and not overwrite:
        raise SentimentRNNError(
            f"'{output}' already exists; pass --overwrite to replace it or --output FILE to write elsewhere")


def tokenize(texts: list[str], config: Config) -> list[list[str]]:
    """Words as the tokenizer sees them: same normalizer (<br /> removed, lowercase) and pre-tokenizer."""
    tok = untrained_tokenizer(config.tokenizer)
    normalize, split = tok.normalizer.normalize_str, tok.pre_tokenizer.pre_tokenize_str
    return [[word for word, _ in split(normalize(text))] for text in texts]


def pretrain_embeddings(output: Path, config: Config, sources: list[str] | None = None, dim: int = 100,
                        epochs: int = 5, overwrite: bool = False,
                        on_epoch: Callable[[int, int], None] | None = None) -> dict:
    """Train skip-gram word vectors on the sources' training rows and write them as GloVe text."""
    from sentiment_rnn.embeddings import train_word_vectors

    output = Path(output)
    check_output(output, overwrite)
    start = time.perf_counter()
    texts = training_texts(list(sources or EMBEDDED), config)
    sentences = tokenize([t for part in texts.values() for t in part], config)
    info = train_word_vectors(sentences, output, dim=dim, epochs=epochs, seed=config.seed, on_epoch=on_epoch)
    return {**info, "texts": {source: len(part) for source, part in texts.items()},
            "tokens": sum(len(s) for s in sentences), "seed": config.seed, "split": list(config.data.split),
            "seconds": time.perf_counter() - start}
