"""Token ids to a time-major padded batch, shared by training (Arrow rows) and predict (Python lists)."""

from __future__ import annotations

import itertools

import numpy as np


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
