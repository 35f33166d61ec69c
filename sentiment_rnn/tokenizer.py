"""Word-level tokenizer on HF `tokenizers`: trained on the training split only, saved as tokenizer.json.

[PAD] is id 0 (the embedding's padding_idx) and [UNK] id 1. The pre-tokenizer is `Whitespace`
(`\\w+|[^\\w\\s]+`): it splits words from punctuation in one Rust pass, where `Whitespace` +
`Punctuation` or `BertPreTokenizer` take two.

Ids become a time-major padded batch here too (`pad_lists`, `pad_time_major`), for training (Arrow rows)
and predict (Python lists) alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from sentiment_rnn.config import TokenizerConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.runtime import gc_paused

PAD, UNK = "[PAD]", "[UNK]"
# A word before "n't" (does|n't, ca|n't as in PTB), the clitics themselves, other words, punctuation runs.
WORD_PATTERN = r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+|[^\w\s]"
CHARS_PER_TOKEN = 6  # characters read per kept token before falling back to the whole text (English: ~5)
CUT_TOKENS = 3  # tokens a cut can spoil at the end: a split word, or '!<br /' read as '!<', 'br', '/'


def untrained_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """An untrained word-level tokenizer: strip HTML line breaks (IMDB has them), lowercase, split."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " ")]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if cfg.split_contractions:
        # The Penn Treebank (SST-2, GloVe) writes "don't" as "do n't": split that way, a user's "don't"
        # becomes the tokens the model learned ("do", "n't") instead of "don", "'", "t".
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
        tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace("\u2019", "'")])  # don’t: don't
    return tok


def train_tokenizer(texts: Iterator[list[str]], cfg: TokenizerConfig, total: int | None = None) -> Tokenizer:
    """Learn the vocabulary from batches of training texts."""
    tok = untrained_tokenizer(cfg)
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
        raise SentimentRNNError(
            f"'{path}' is not a valid tokenizer file; the run directory is damaged, train again") from None
    if tok.token_to_id(PAD) != 0:
        raise SentimentRNNError(f"'{path}' has no [PAD] token at id 0; it was not written by sentiment-rnn")
    return tok


def encode_ids(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, cut to max_length; [UNK] alone for a text with no token.

    Tokenizing a whole IMDB review to keep its first 64 tokens wastes most of the work, so each text is
    first cut to CHARS_PER_TOKEN * max_length characters. A cut changes only the last CUT_TOKENS tokens
    at most, so where the cut text gives fewer than max_length + CUT_TOKENS tokens the whole text is
    tokenized again: the ids are exactly those of the uncut text.
    """
    cap = max_length * CHARS_PER_TOKEN
    unk = tokenizer.token_to_id(UNK)
    with gc_paused():
        # encode_batch_fast skips the character offsets we never read.
        encodings = tokenizer.encode_batch_fast([t[:cap] for t in texts], add_special_tokens=False)
        ids = [e.ids for e in encodings]
        redo = [i for i, t in enumerate(texts) if len(t) > cap and len(ids[i]) < max_length + CUT_TOKENS]
        if redo:
            again = tokenizer.encode_batch_fast([texts[i] for i in redo], add_special_tokens=False)
            for i, e in zip(redo, again, strict=True):
                ids[i] = e.ids
        return [x[:max_length] or [unk] for x in ids]


def unknown_shares(seqs: list[list[int]], unk: int) -> dict[str, float]:
    """How much of the scored text the vocabulary misses: the share of tokens that are [UNK] (id `unk`) and
    the share of texts holding at least one. A text with no token counts as its one [UNK]."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    if not len(values):
        return {"unknown_tokens": 0.0, "texts_with_unknown": 0.0}
    unknown = values == unk
    per_text = np.add.reduceat(unknown, np.cumsum(lengths) - lengths)  # every text has a token
    return {"unknown_tokens": float(unknown.mean()), "texts_with_unknown": float((per_text > 0).mean())}


def pad_time_major(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every token of a batch, sentence after sentence ([N]), and each sentence's length ([B]) -> [T, B] ids.

    One scatter instead of a tensor per sentence: pad_sequence over 256 small tensors cost more than
    the RNN's forward pass on them. [PAD] is 0 and T is the longest length.
    """
    column = np.repeat(np.arange(len(lengths)), lengths)  # [N] which sentence each token belongs to
    time = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # [N] its position
    input_ids = np.zeros((lengths.max(initial=1), len(lengths)), dtype=np.int64)  # [T, B]
    input_ids[time, column] = values
    return input_ids


def pad_lists(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Python lists of ids -> ([T, B] ids, [B] lengths)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return pad_time_major(values, lengths), lengths
