"""Data through HF `datasets`: sources (sources.py) and splits (splits.py), then encoding and batching here.

Everything stays an Arrow-backed `datasets.Dataset` (memory-mapped from the cache), so a file larger than
memory trains with flat RSS; batches are fetched by index, one gather of Arrow rows per batch.
"""

from __future__ import annotations

import math

import datasets
import numpy as np
import torch

from sentiment_rnn.config import Config, DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.runtime import gc_paused
from sentiment_rnn.sources import EMBEDDED, EMBEDDED_LABELS, FORMATS, embedded_csv, load_raw, resolve_source
from sentiment_rnn.splits import (
    ROW,
    Splits,
    column_numpy,
    describe_splits,
    label_names,
    load_eval_data,
    load_splits,
    recorded_split,
)
from sentiment_rnn.tokenizer import encode_ids, pad_time_major

__all__ = ["EMBEDDED", "EMBEDDED_LABELS", "FORMATS", "ROW", "BucketBatchSampler", "EncodedBatches", "Splits",
           "column_numpy", "describe_splits", "embedded_csv", "encode", "encode_splits", "label_names",
           "load_eval_data", "load_raw", "load_splits", "make_loader", "recorded_split", "resolve_source"]


class _EncodeBatch:
    """The function `encode` maps over a split. datasets names the cached result by hashing the input
    dataset and this object; it pickles as the tokenizer's JSON, so the same tokenizer finds the same cache."""

    def __init__(self, tokenizer, max_length: int, kept: list[str]):
        self.tokenizer, self.max_length, self.kept = tokenizer, max_length, kept

    def __reduce__(self):
        return _encoder_from_json, (self.tokenizer.to_str(), self.max_length, self.kept)

    def __call__(self, batch: dict) -> dict:
        ids = encode_ids(self.tokenizer, batch["text"], self.max_length)
        # The kept columns go out as new lists too: after a shuffled select they come in one Arrow chunk
        # per row, which datasets would otherwise cast chunk by chunk.
        return {**{k: batch[k] for k in self.kept}, "input_ids": ids, "length": [len(x) for x in ids]}


def _encoder_from_json(tokenizer_json: str, max_length: int, kept: list[str]) -> _EncodeBatch:
    from tokenizers import Tokenizer

    return _EncodeBatch(Tokenizer.from_str(tokenizer_json), max_length, kept)


def encode(ds: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Token ids and lengths through `encode_batch_fast`, cached by datasets under a fingerprint of the data,
    the tokenizer and max_length: a second run with the same data and tokenizer reads the cached Arrow file
    instead of tokenizing again. The result holds no text, and 2-byte ids where the vocabulary allows:
    training reads its pages at random, so all of them end up in memory.
    """
    id_type = "uint16" if tokenizer.get_vocab_size() <= 1 << 16 else "int32"
    kept = {k: v for k, v in ds.features.items() if k != "text"}
    features = datasets.Features({**kept, "input_ids": datasets.Sequence(datasets.Value(id_type)),
                                  "length": datasets.Value("int32")})
    # Paused for the whole map, not only while tokenizing: until datasets has turned a batch's lists of ids
    # into Arrow, every young-generation collection walks their millions of ints.
    with gc_paused():
        return ds.map(_EncodeBatch(tokenizer, max_length, list(kept)), batched=True, batch_size=10_000,
                      writer_batch_size=10_000, remove_columns=ds.column_names, features=features)


def encode_splits(splits: Splits, tokenizer, max_length: int) -> dict[str, datasets.Dataset]:
    """Encode train, validation and test; the splits then hold these encoded parts (ids, no text).

    Tokenizing reads every page of the source's text; once no dataset refers to it, its Arrow file is
    unmapped and those pages leave the process's memory.
    """
    encoded = {name: encode(getattr(splits, name), tokenizer, max_length) for name in ("train", "validation", "test")}
    splits.train, splits.validation, splits.test = encoded["train"], encoded["validation"], encoded["test"]
    return encoded


class BucketBatchSampler(torch.utils.data.Sampler):
    """Shuffle, then sort by length inside large random pools: batches of similar length waste little
    compute on padding, yet every epoch sees a different order.

    Under DDP (world_size > 1) every rank takes its own slice of the same batch: DDP averages the
    gradients, so N processes take the optimizer steps one process would take with the whole batch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool = True, pool: int = 50,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.pool, self.seed = batch_size, shuffle, pool, seed
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch's order; `start` skips the batches a resumed run already trained on."""
        self.epoch, self.start = epoch, start

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, n, size):
            chunk = order[start:start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        # A batch too small to give every rank a row is skipped: a rank without a step would leave the
        # others waiting in DDP's all-reduce forever.
        batches = [b for b in self._batches() if len(b) >= self.world_size]
        for b in batches[self.start:]:
            yield b[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        n = len(self.lengths)
        return math.ceil(n / self.batch_size) - (0 < n % self.batch_size < self.world_size)


class EncodedBatches(torch.utils.data.Dataset):
    """Fetches a whole batch by its row indices as one Arrow table and pads it time-major with numpy.

    Arrow rows, not datasets' numpy rows: no Python object per row, which over a large validation split
    costs seconds and memory. Not `pyarrow.Table.take` either: on a chunked column it first concatenates
    every chunk, for every batch; datasets' row lookup gathers one-row slices instead.
    """

    def __init__(self, ds: datasets.Dataset):
        self.ds = ds.select_columns(["input_ids", "label"]).with_format("arrow")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: list[int]):
        batch = self.ds[indices]
        ids = batch.column("input_ids").combine_chunks()
        lengths = ids.value_lengths().to_numpy().astype(np.int64)  # [B]
        input_ids = pad_time_major(ids.flatten().to_numpy(), lengths)  # [T, B], time-major
        labels = batch.column("label").to_numpy().astype(np.int64)  # [B]
        return torch.from_numpy(input_ids), torch.from_numpy(lengths), torch.from_numpy(labels)


def make_loader(ds: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False, workers: int = 0):
    """A DataLoader yielding (input_ids [T, B], lengths [B], labels [B]) in length buckets."""
    lengths = column_numpy(ds, "length")
    sampler = BucketBatchSampler(lengths, batch_size, shuffle, pool, seed, rank, world_size)
    # Its own generator: iter(loader) draws a seed, which must not shift torch's global RNG (dropout)
    # between an uninterrupted run and a resumed one.
    return torch.utils.data.DataLoader(EncodedBatches(ds), sampler=sampler, batch_size=None,
                                       pin_memory=pin_memory, num_workers=workers, generator=torch.Generator())


def check_sources(sources: list[str]) -> None:
    unknown = [s for s in sources if s not in EMBEDDED]
    if unknown or not sources:
        raise SentimentRNNError(f"unknown source(s) {', '.join(unknown) or '(none)'}; use --sources with "
                                f"{' and/or '.join(EMBEDDED)}, comma-separated")


def training_texts(sources: list[str], config: Config) -> dict[str, list[str]]:
    """Each source's training rows under the config's seed, split shares and limit; never held-out rows."""
    check_sources(sources)
    texts = {}
    for source in dict.fromkeys(sources):  # drop repeats, keep order
        data = DataConfig(source=source, split=config.data.split, limit=config.data.limit)
        texts[source] = load_splits(data, config.seed).train["text"]
    return texts


def longest_batch(loader: torch.utils.data.DataLoader):
    """The batch of a length-sorted, unshuffled loader that reaches furthest back in time: its last one.
    Only that batch's rows are read."""
    *_, last = iter(loader.sampler)  # row indices only
    return torch.utils.data.default_convert(loader.dataset[last])  # as the loader would hand it over
