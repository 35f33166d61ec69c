"""Training rows that show negation both ways, made from the training phrases themselves (data.add_negated_predicates).

SST-2's phrases negate a positive phrase about three times as often as a negative one ("not a good movie"
against "never dull"), so a model trained on them can learn "not -> negative" and misread "not bad". For every
short predicate phrase that trains ("is masterly", "'s pathetic": a verb, then at most three words), this adds
the phrase negated ("is not masterly", "'s not pathetic") with the other label, as many of each direction.
One template, no hand-written sentence; the labels come from the data's own phrases.
"""

from __future__ import annotations

import datasets
import numpy as np

from sentiment_rnn.errors import SentimentRNNError

VERBS = ("is", "'s", "was", "are", "were")
NEGATORS = ("not", "n't", "never", "no", "hardly", "nothing", "without")


def negated(tokens: list[str], contracted: bool) -> str:
    """'is masterly' -> 'is not masterly' (or 'is n't masterly', as SST-2 writes "isn't"); "'s" takes 'not'."""
    negator = "n't" if contracted and tokens[0] != "'s" else "not"
    return " ".join([tokens[0], negator, *tokens[1:]])


def negated_predicates(train: datasets.Dataset, known: set[str], seed: int) -> datasets.Dataset:
    """The negated predicate phrases of `train` (binary labels), each with the other label, as many per label;
    a text in `known` (any row of the training split, held out or not) is never made."""
    known = set(known)
    rng = np.random.default_rng(seed)
    made: dict[int, list[str]] = {0: [], 1: []}
    for text, label in zip(train["text"], train["label"], strict=True):
        tokens = text.split()
        if 2 <= len(tokens) <= 4 and tokens[0] in VERBS and tokens[1] not in NEGATORS:
            flipped = negated(tokens, contracted=bool(rng.integers(2)))
            if flipped not in known:
                known.add(flipped)  # made once, even where two rows would make it
                made[1 - label].append(flipped)
    each = min(len(made[0]), len(made[1]))
    texts, labels = [], []
    for label, rows in made.items():
        keep = np.sort(rng.choice(len(rows), size=each, replace=False))
        texts += [rows[k] for k in keep]
        labels += [label] * each
    return datasets.Dataset.from_dict(
        {"text": texts, "label": labels, **{c: [-1] * len(texts) for c in train.column_names
                                            if c not in ("text", "label")}}, features=train.features)


def with_negated_predicates(rows: datasets.Dataset, training_split: np.ndarray, names: list[str],
                            seed: int) -> tuple[datasets.Dataset, int]:
    """The rows that train and their negated predicates, made from those rows only, never repeating a text of
    the training split (`training_split`: its texts, held-out rows included); also how many were added."""
    if len(names) != 2:
        raise SentimentRNNError(f"data.add_negated_predicates gives a negated phrase the other label, so it needs "
                                f"two labels (the data has {len(names)}); set it to false")
    made = negated_predicates(rows, set(training_split.tolist()), seed)
    return datasets.concatenate_datasets([rows, made]), len(made)
