"""Carve validation and test as whole sentences, for training data made of labeled phrases (SST-2).

SST-2's training split holds every labeled phrase of its sentences: "the flower is beautiful", "the flower",
"beautiful", ... each its own row. Carved row by row, a held-out sentence's own phrases stay in training, so
its score rewards memorising them and says little about sentences the model has never seen (the Hub's
labeled sentences, used as the test, share no phrase rows with training beyond the common ones).

With `data.carve_by_sentence`, the sentences (rows that lie inside no longer row) are carved, stratified
and seeded, and every other row follows the sentences it lies in: it trains when one of them trains, and is
left out when all of them are held out. The held-out parts hold the sentences alone, as the test does.
The phrases so left out chose nothing and never trained: `evaluate --split left-out` rebuilds and scores them.
"""

from __future__ import annotations

import numpy as np


def containing_sentences(texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """The sentences among `texts`, and for each row the sentences it lies in.

    A row lies in another when its words are a contiguous run of the other's words (whitespace-split, so
    "good" lies in "a good film" but not in "goodness"). Sentences are the rows that lie in no longer row;
    a repeated text lies in its first copy. Returns (sentence row numbers, for each row the indices into
    that array of the sentences holding it; a sentence holds itself).
    """
    words = [text.split() for text in texts]
    rows_of: dict[str, list[int]] = {}
    for row, tokens in enumerate(words):
        rows_of.setdefault(" ".join(tokens), []).append(row)
    holders: list[list[int]] = [[] for _ in texts]
    sentences: list[int] = []
    # Longest first: by the time a row is reached, every longer row that could hold it has been read.
    for row in sorted(range(len(texts)), key=lambda r: -len(words[r])):
        if holders[row]:
            continue
        index = len(sentences)
        sentences.append(row)
        tokens = words[row]
        for start in range(len(tokens)):
            for end in range(start + 1, len(tokens) + 1):
                for inner in rows_of.get(" ".join(tokens[start:end]), ()):
                    if not holders[inner] or holders[inner][-1] != index:
                        holders[inner].append(index)
    return np.asarray(sentences, dtype=np.int64), holders


def rows_following_sentences(holders: list[list[int]], training_sentences: np.ndarray) -> np.ndarray:
    """Row numbers that train: every row held by at least one training sentence (given as indices into the
    sentences array)."""
    training = set(map(int, training_sentences))
    return np.asarray([row for row, held in enumerate(holders) if not training.isdisjoint(held)], dtype=np.int64)


def left_out_rows(texts: list[str], held_out: set[int]) -> np.ndarray:
    """Row numbers of the phrases a carving left out of training: rows that lie only in the held-out
    sentences (`held_out`, row numbers of sentences), those sentences themselves not counted."""
    sentences, holders = containing_sentences(texts)
    training = np.flatnonzero(~np.isin(sentences, list(held_out)))
    trained = set(rows_following_sentences(holders, training).tolist())
    return np.asarray([row for row in range(len(texts)) if row not in trained and row not in held_out],
                      dtype=np.int64)
