"""Context probe: paired sentences whose sentiment flips through negation or contrast.

A bag-of-words model scores both members of a pair alike, so the flip rate shows
whether a classifier actually reads word order and context. A line '# name' starts a category (negation
of a positive word, contrast with but, ...): the pairs below it are also scored as a group, so a shortcut
such as "not means negative" shows up as one category right and its mirror wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sentiment_rnn.errors import SentimentRNNError

DEFAULT_PROBE = Path(__file__).resolve().parent / "assets" / "context_probe.tsv"

_FORMAT = ("expected 'label<TAB>text' lines (label 0 or 1), pairs on consecutive lines with opposite labels, "
           "and optional '# category' lines between pairs")


@dataclass(frozen=True)
class ProbePair:
    """Two sentences that share most words but carry opposite sentiment."""

    first_text: str
    first_label: int
    second_text: str
    second_label: int
    category: str = ""  # the '# category' line above the pair, if any


README_PAIR = ProbePair("the flower is so beautiful", 1, "i do not think the flower is beautiful", 0, "the README pair")


def _fail(path: Path, lineno: int, problem: str) -> SentimentRNNError:
    return SentimentRNNError(f"{path}:{lineno}: {problem}; {_FORMAT}")


def _parse_line(path: Path, lineno: int, line: str) -> tuple[int, str]:
    if "\t" not in line:
        raise _fail(path, lineno, "line has no tab between label and text")
    label_s, text = line.split("\t", 1)
    if label_s not in ("0", "1"):
        raise _fail(path, lineno, f"label {label_s!r} is not 0 or 1")
    text = text.strip()
    if not text:
        raise _fail(path, lineno, "text is empty")
    return int(label_s), text


def load_probe(path: str | Path | None = None) -> list[ProbePair]:
    """Parse a probe file strictly, so a broken probe fails loudly instead of skewing scores."""
    path = Path(path) if path is not None else DEFAULT_PROBE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SentimentRNNError(f"{path}: probe file not found; pass an existing file, {_FORMAT}") from None
    except OSError as exc:
        raise SentimentRNNError(
            f"{path}: cannot read probe file ({exc.strerror}); check the path and permissions") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(path, lineno, "bytes are not valid UTF-8; save the file as UTF-8") from None
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the trailing newline
    if not lines:
        raise _fail(path, 1, "file is empty")
    rows, category = [], ""  # rows: (line number, label, text, category)
    for i, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line.startswith("#"):
            if len(rows) % 2:
                raise _fail(path, i, "a '# category' line splits a pair")
            category = line.lstrip("#").strip()
            continue
        rows.append((i, *_parse_line(path, i, line), category))
    if not rows:
        raise _fail(path, len(lines), "file holds no pair")
    if len(rows) % 2:
        raise _fail(path, rows[-1][0], f"odd number of sentences ({len(rows)}): the last one has no partner")
    pairs = []
    for (n1, l1, t1, cat), (n2, l2, t2, _) in zip(rows[::2], rows[1::2], strict=True):
        if l1 == l2:
            raise _fail(path, n2, f"pair on lines {n1}-{n2} has the same label {l1} twice")
        pairs.append(ProbePair(t1, l1, t2, l2, cat))
    return pairs


def score_probe(
    pairs: Sequence[ProbePair], predict_proba: Callable[[list[str]], Sequence[float]]
) -> dict:
    """Score a classifier on the probe; flip_rate counts pairs where both members are right."""
    if not pairs:
        raise SentimentRNNError("probe has no pairs; pass a probe file with at least one pair")
    texts = [t for p in pairs for t in (p.first_text, p.second_text)]
    labels = [lab for p in pairs for lab in (p.first_label, p.second_label)]
    probs = [float(x) for x in predict_proba(texts)]
    if len(probs) != len(texts):
        raise SentimentRNNError(
            f"predict_proba returned {len(probs)} scores for {len(texts)} texts; return one P(positive) per text"
        )
    right = [(p >= 0.5) == bool(lab) for p, lab in zip(probs, labels, strict=True)]
    both = [right[2 * i] and right[2 * i + 1] for i in range(len(pairs))]
    flips = sum(both)
    categories: dict[str, list[bool]] = {}
    for pair, ok in zip(pairs, both, strict=True):
        categories.setdefault(pair.category, []).append(ok)
    gaps = []
    for i, pair in enumerate(pairs):
        p1, p2 = probs[2 * i], probs[2 * i + 1]
        gaps.append(p1 - p2 if pair.first_label == 1 else p2 - p1)
    return {
        "accuracy": sum(right) / len(right),
        "flip_rate": flips / len(pairs),
        "pairs": len(pairs),
        "mean_gap": sum(gaps) / len(gaps),
        # pairs right on both sides, per '# category' of the probe file ("" for pairs above any category)
        "categories": {name: {"pairs": len(oks), "flip_rate": sum(oks) / len(oks)} for name, oks in categories.items()},
    }


def score_predictor(pairs: Sequence[ProbePair], predictor, positive: str) -> dict:
    """score_probe for a trained run's Predictor, reading P(`positive`), plus readme_pair_right: whether both
    sentences of the README pair are classified right (the pair the project's claim is about)."""
    column = predictor.labels.index(positive)

    def p_positive(texts: list[str]) -> list[float]:
        return predictor.probabilities(texts)[:, column].tolist()

    scored = score_probe(pairs, p_positive)
    scored["readme_pair_right"] = score_probe([README_PAIR], p_positive)["flip_rate"] == 1.0
    return scored
