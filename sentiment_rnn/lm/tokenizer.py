"""The language model's word-level tokenizer: one vocabulary for PTB-tokenized and raw review text.

Rotten Tomatoes sentences are PTB-tokenized ("does n't", "it 's", "-lrb-", "``"), IMDB reviews are raw
("doesn't", "it's", "(", "<br />"). The normalizer folds both spellings of brackets, quotes and
apostrophes into one, and the pre-tokenizer splits the clitics "n't" and "'s" / "'re" / "'ve" / "'ll" /
"'d" / "'m" off their word as PTB does, so both corpora yield the same tokens ("does", "n't").
[PAD] is id 0 (the classifier's padding_idx), [UNK] id 1, [EOS] id 2 (the end of each document in the
stream); the other ids follow word frequency, most frequent first, as the adaptive softmax expects.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from sentiment_rnn.config import TokenizerConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.tokenizer import WORD_PATTERN

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
SPECIAL = [PAD, UNK, EOS]
PTB_SPELLINGS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
                 "``": '"', "''": '"'}  # after lowercasing


def build_lm_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """An untrained tokenizer with the normalizer and pre-tokenizer described above."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.Replace("\u2019", "'")]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    steps += [normalizers.Replace(ptb, plain) for ptb, plain in PTB_SPELLINGS.items()]
    tok.normalizer = normalizers.Sequence(steps)
    # invert=True: the pattern matches the pieces to keep; whitespace between them is dropped.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    return tok


def train_lm_tokenizer(documents: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Learn the vocabulary (cfg.max_vocab words seen at least cfg.min_frequency times) from the documents."""
    tok = build_lm_tokenizer(cfg)
    trainer = trainers.WordLevelTrainer(vocab_size=cfg.max_vocab, min_frequency=cfg.min_frequency,
                                        special_tokens=SPECIAL, show_progress=False)
    tok.train_from_iterator(documents, trainer=trainer)
    if [tok.token_to_id(t) for t in SPECIAL] != [0, 1, 2]:
        raise SentimentRNNError(
            "the LM tokenizer did not place [PAD]=0, [UNK]=1, [EOS]=2; this is a bug, please report it")
    return tok


def words(tokenizer: Tokenizer, text: str) -> list[str]:
    """The tokens a text becomes (unknown words included as themselves), for tests and inspection."""
    normalized = tokenizer.normalizer.normalize_str(text)
    return [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
