"""Word-level tokenizer on HF `tokenizers`: trained on the training split only, saved as tokenizer.json.

[PAD] is id 0 (the embedding's padding_idx) and [UNK] id 1. The pre-tokenizer is `Whitespace`
(`\\w+|[^\\w\\s]+`): it already splits words from punctuation in one Rust pass, which keeps
`encode_batch` faster than a Python regex loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from sentiment_rnn.config import TokenizerConfig
from sentiment_rnn.errors import SentimentRNNError

PAD, UNK = "[PAD]", "[UNK]"


def build_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """An untrained word-level tokenizer: strip HTML line breaks (IMDB has them), lowercase, split."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " ")]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def train_tokenizer(texts: Iterator[list[str]], cfg: TokenizerConfig, total: int | None = None) -> Tokenizer:
    """Learn the vocabulary from batches of training texts."""
    tok = build_tokenizer(cfg)
    trainer = trainers.WordLevelTrainer(vocab_size=cfg.max_vocab, min_frequency=cfg.min_frequency,
                                        special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=total)
    if tok.token_to_id(PAD) != 0 or tok.token_to_id(UNK) != 1:
        raise SentimentRNNError("tokenizer did not place [PAD]=0 and [UNK]=1; this is a bug, please report it")
    return tok


def load_tokenizer(path: Path) -> Tokenizer:
    """Read tokenizer.json; a damaged file is a one-line error."""
    if not path.is_file():
        raise SentimentRNNError(f"'{path}' is missing; the run directory is incomplete, train again")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception:
        raise SentimentRNNError(f"'{path}' is not a valid tokenizer file; the run directory is damaged, train again") from None
    if tok.token_to_id(PAD) != 0:
        raise SentimentRNNError(f"'{path}' has no [PAD] token at id 0; it was not written by sentiment-rnn")
    return tok
