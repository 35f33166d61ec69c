"""The language model's corpus and batches.

Corpus: by default the training rows of the embedded corpora, carved exactly as a config with the same
seed and data.split carves them (data.training_texts), so no validation or test row of a classifier
started from the LM was read. A share of those training documents (lm.held_out) is kept aside for
held-out perplexity.

Batching (lm.batching):
- "stream", as pytorch/examples word_language_model: all documents joined into one token stream ([EOS]
  after each), cut into batch_size parallel columns read in order, bptt tokens per step; the hidden state
  is carried from one segment to the next, so the model learns from context longer than a segment.
- "documents": each document cut into bptt-token windows, windows shuffled, each window read from a
  zero state, as the classifier reads a sentence. Padding targets are skipped by the loss.

"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch

from sentiment_rnn.config import Config, DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.inputs import lines
from sentiment_rnn.lm.tokenizer import EOS


def _text_file(path: Path) -> list[str]:
    try:
        return list(lines(path))  # split at "\n" only: U+2028 and friends are part of a document
    except UnicodeDecodeError:
        raise SentimentRNNError(
            f"lm.source '{path}' is not UTF-8 text; save it as UTF-8, one document per line") from None


def corpus_documents(config: Config) -> list[str]:
    """The non-empty documents of lm.source, in a seeded random order (so RT and IMDB are mixed)."""
    from sentiment_rnn import data as data_lib

    source = config.lm.source
    if source == "embedded":
        parts = data_lib.training_texts(list(config.lm.corpora), config)
        docs = [text for part in parts.values() for text in part]
    elif source.endswith(".txt") and Path(source).expanduser().is_file():
        docs = _text_file(Path(source).expanduser())
    else:  # any source data.py reads: a csv/json/parquet file, a folder, hf:<name>; its text column
        raw = data_lib.load_raw(DataConfig(source=source, text_column=config.data.text_column,
                                           train_split=config.data.train_split, hf_subset=config.data.hf_subset))
        split = raw.get(config.data.train_split)
        if split is None or config.data.text_column not in split.column_names:
            raise SentimentRNNError(f"lm.source '{source}' has no split '{config.data.train_split}' with a "
                                    f"'{config.data.text_column}' column; set data.train_split and data.text_column")
        docs = [t for t in split[config.data.text_column] if isinstance(t, str)]
    docs = [d for d in docs if d and d.strip()]
    if not docs:
        raise SentimentRNNError(f"the LM corpus '{source}' is empty (no non-empty document); give lm.source a text "
                                "file with one document per line")
    random.Random(config.seed).shuffle(docs)
    return docs


def split_held_out(docs: list[str], share: float) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents): the last `share` of the (already shuffled) documents."""
    n_held = max(1, round(len(docs) * share))
    if len(docs) - n_held < 1:
        raise SentimentRNNError(f"the LM corpus has {len(docs)} document(s): too few to keep lm.held_out={share} "
                                "aside and still train; add text to lm.source")
    return docs[:-n_held], docs[-n_held:]


def encode_documents(tokenizer, docs: list[str]) -> list[list[int]]:
    """Token ids of each document followed by [EOS]."""
    eos = tokenizer.token_to_id(EOS)
    return [e.ids + [eos] for e in tokenizer.encode_batch_fast(docs, add_special_tokens=False)]


def stream(encoded: list[list[int]]) -> torch.Tensor:
    """All documents' ids end to end: [N]."""
    return torch.tensor([i for doc in encoded for i in doc], dtype=torch.long)


def digest(ids: torch.Tensor) -> str:
    """sha256 of a token stream: a resume checks it reads exactly the tokens the run started with."""
    return hashlib.sha256(ids.numpy().tobytes()).hexdigest()


def batchify(ids: torch.Tensor, batch_size: int, bptt: int, what: str) -> torch.Tensor:
    """[N] -> [N // B, B]: B parallel columns, each a contiguous stretch of the stream (time-major)."""
    rows = ids.numel() // batch_size
    if rows < 2:
        raise SentimentRNNError(f"the LM {what} text has {ids.numel()} tokens, too few to fill one batch of "
                                f"{batch_size} columns x 2 tokens; add text to lm.source or lower the batch size")
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()  # [N/B, B]


def stream_segment(data: torch.Tensor, start: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of the segment starting at row `start`: both [T, B], T <= bptt."""
    length = min(bptt, data.shape[0] - 1 - start)
    return data[start:start + length], data[start + 1:start + 1 + length]


def document_windows(encoded: list[list[int]], bptt: int) -> torch.Tensor:
    """Each document cut into windows of bptt inputs + 1 target, right-padded with [PAD]=0: [S, bptt + 1].

    Windows overlap by one token, so every token of a document is predicted once.
    """
    windows = []
    for doc in encoded:
        for start in range(0, max(1, len(doc) - 1), bptt):
            piece = doc[start:start + bptt + 1]
            if len(piece) >= 2:
                windows.append(piece + [0] * (bptt + 1 - len(piece)))
    return torch.tensor(windows, dtype=torch.long).view(-1, bptt + 1)


def window_batch(windows: torch.Tensor, order: torch.Tensor, index: int, batch_size: int):
    """Inputs and targets of batch `index` in the given window order: both [T, B]. A window holds one token
    more than it reads."""
    rows = windows[order[index * batch_size:(index + 1) * batch_size]]  # [B, bptt + 1]
    return rows[:, :-1].t(), rows[:, 1:].t()  # [T, B] each


class StreamBatches:
    """Consecutive bptt-row segments of the batchified stream; the state carries from one to the next."""

    carries_state = True

    def __init__(self, data: torch.Tensor, bptt: int):
        self.data, self.bptt = data, bptt  # data [N/B, B]

    def __len__(self) -> int:
        return -(-(self.data.shape[0] - 1) // self.bptt)

    def batch(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return stream_segment(self.data, index * self.bptt, self.bptt)


class WindowBatches:
    """Document windows in a fresh seeded order each epoch (seed None: in their own order, for held-out
    scoring); each window starts from a zero state."""

    carries_state = False

    def __init__(self, windows: torch.Tensor, batch_size: int, seed: int | None):
        self.windows, self.batch_size, self.seed = windows, batch_size, seed  # windows [S, bptt + 1]
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return -(-self.windows.shape[0] // self.batch_size)

    def batch(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None or self._order[0] != epoch:  # a function of seed and epoch alone: resumable
            count = self.windows.shape[0]
            if self.seed is None:
                order = torch.arange(count)
            else:
                order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            self._order = (epoch, order)
        return window_batch(self.windows, self._order[1], index, self.batch_size)


def held_out_batches(encoded: list[list[int]], config: Config) -> StreamBatches:
    """What held-out perplexity is scored on: the held-out stream, state carried across segments."""
    bptt, batch_size = config.lm.bptt, config.lm.eval_batch_size
    return StreamBatches(batchify(stream(encoded), batch_size, bptt, "held-out"), bptt)


def training_batches(encoded: list[list[int]], config: Config):
    """The training batches lm.batching asks for; too little text for one batch is a one-line error."""
    bptt, batch_size = config.lm.bptt, config.train.batch_size
    if config.lm.batching == "stream":
        return StreamBatches(batchify(stream(encoded), batch_size, bptt, "training"), bptt)
    windows = document_windows(encoded, bptt)
    if windows.shape[0] < batch_size:
        raise SentimentRNNError(f"the LM training text gives {windows.shape[0]} windows of {bptt} tokens, too few to "
                                f"fill one batch of {batch_size}; add text to lm.source or lower train.batch_size")
    return WindowBatches(windows, batch_size, config.seed)
