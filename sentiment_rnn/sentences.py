"""The embedded IMDB reviews as labeled sentences (`data.source: imdb_sentences`): distant supervision.

Each review is split into sentences and every sentence carries its review's label. The labels are noisy
(a positive review's plot summary is neutral), but 25,000 reviews give some 290,000 sentences: enough to
learn what RT's 8,500 sentences cannot, such as negation. `split_sentences` is the one splitting rule.
"""

from __future__ import annotations

import re

import datasets

LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # IMDB's HTML line breaks
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a split point: whitespace after . ! or ?
# Words whose final period does not end a sentence ("Mr. Smith"), lowercased, without the period.
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "etc", "e.g", "i.e",
                           "no", "vol", "mt", "lt", "col", "gen", "sgt", "capt", "rev", "ft", "approx"})
MIN_WORDS, MAX_WORDS = 4, 60  # shorter pieces carry little; longer ones are run-ons the splitter missed


def _ends_with_abbreviation(piece: str) -> bool:
    """The piece ends in a known abbreviation or an initial ("J."), so the period did not end a sentence."""
    last = piece.rsplit(None, 1)[-1].lower() if piece.strip() else ""
    if not last.endswith("."):
        return False
    word = last.rstrip(".").lstrip("(\"'")
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(review: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """The review's sentences of min_words to max_words words: `<br />` removed, split after . ! or ?
    followed by whitespace, except after an abbreviation or an initial; empty pieces dropped."""
    pieces: list[str] = []
    for piece in SENTENCE_END.split(LINE_BREAK.sub(" ", review).strip()):
        if pieces and _ends_with_abbreviation(pieces[-1]):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    kept = (" ".join(piece.split()) for piece in pieces)
    return [s for s in kept if min_words <= len(s.split()) <= max_words]


def _explode(batch: dict) -> dict:
    """datasets' batched map: one output row per sentence, each with its review's label."""
    texts, labels = [], []
    for review, label in zip(batch["text"], batch["label"], strict=True):
        sentences = split_sentences(review)
        texts += sentences
        labels += [label] * len(sentences)
    return {"text": texts, "label": labels}


def review_sentences(reviews: datasets.Dataset) -> datasets.Dataset:
    """The reviews' sentences with their review's label; datasets caches the result under the reviews'
    fingerprint and this module's function, so a second run reads it from the cache."""
    features = datasets.Features({"text": datasets.Value("string"), "label": reviews.features["label"]})
    return reviews.map(_explode, batched=True, batch_size=1000, remove_columns=reviews.column_names,
                       features=features)
