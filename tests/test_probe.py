"""Pins the shipped context probe and the strictness of its parser and scorer."""

import pytest

from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.probe import DEFAULT_PROBE, ProbePair, load_probe, score_probe


def test_shipped_probe_loads_with_at_least_40_opposite_label_pairs():
    pairs = load_probe()
    assert len(pairs) >= 40
    assert all({p.first_label, p.second_label} == {0, 1} for p in pairs)


def test_shipped_probe_has_no_duplicate_sentences_and_is_lowercase():
    texts = [t for p in load_probe() for t in (p.first_text, p.second_text)]
    assert len(texts) == len(set(texts))
    assert all(t == t.lower() for t in texts)


def test_shipped_probe_mixes_which_member_is_positive():
    firsts = [p.first_label for p in load_probe()]
    assert 0 < sum(firsts) < len(firsts)


def test_shipped_probe_file_is_strict_format_with_trailing_newline():
    raw = DEFAULT_PROBE.read_bytes()
    assert raw.endswith(b"\n") and b"\n\n" not in raw and b"\r" not in raw
    raw.decode("utf-8")


def test_explicit_path_loads_pairs_in_order(tmp_path):
    p = tmp_path / "probe.tsv"
    p.write_text("1\tgood film\n0\tnot a good film\n0\tbad day\n1\tnot a bad day\n", encoding="utf-8")
    assert load_probe(p) == [
        ProbePair("good film", 1, "not a good film", 0),
        ProbePair("bad day", 0, "not a bad day", 1),
    ]


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("1\tgood\n0 bad\n", ":2", "no tab"),
        ("1\tgood\n2\tbad\n", ":2", "not 0 or 1"),
        ("1\tgood\n0\t  \n", ":2", "empty"),
        ("1\tgood\n0\tbad\n1\tnice\n", ":3", "odd number"),
        ("1\tgood\n1\tnice\n", ":2", "same label"),
        ("", ":1", "empty"),
    ],
)
def test_malformed_probe_raises_naming_file_line_and_format(tmp_path, content, line, words):
    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(SentimentRNNError) as exc:
        load_probe(p)
    msg = str(exc.value)
    assert f"{p}{line}" in msg and words in msg and "label<TAB>text" in msg
    assert "\n" not in msg


def test_undecodable_bytes_raise_naming_the_line(tmp_path):
    p = tmp_path / "latin1.tsv"
    p.write_bytes(b"1\tgood\n0\tna\xefve and bad\n")
    with pytest.raises(SentimentRNNError, match=r":2: .*UTF-8"):
        load_probe(p)


def test_missing_probe_file_raises(tmp_path):
    with pytest.raises(SentimentRNNError, match="not found"):
        load_probe(tmp_path / "nope.tsv")


def test_score_probe_with_fixed_probabilities_gives_exact_numbers():
    pairs = [
        ProbePair("a", 1, "b", 0),  # 0.9/0.2: both right
        ProbePair("c", 0, "d", 1),  # 0.3/0.6: both right
        ProbePair("e", 1, "f", 0),  # 0.8/0.7: one right
        ProbePair("g", 0, "h", 1),  # 0.6/0.4: both wrong
    ]
    fixed = {"a": 0.9, "b": 0.2, "c": 0.3, "d": 0.6, "e": 0.8, "f": 0.7, "g": 0.6, "h": 0.4}
    seen = []

    def predict(texts):
        seen.append(list(texts))
        return [fixed[t] for t in texts]

    result = score_probe(pairs, predict)
    assert seen == [list("abcdefgh")]  # one batched call
    assert result["pairs"] == 4
    assert result["accuracy"] == 5 / 8
    assert result["flip_rate"] == 2 / 4
    assert result["mean_gap"] == pytest.approx(((0.9 - 0.2) + (0.6 - 0.3) + (0.8 - 0.7) + (0.4 - 0.6)) / 4)


def test_score_probe_counts_exactly_half_as_positive():
    result = score_probe([ProbePair("a", 1, "b", 0)], lambda texts: [0.5, 0.49])
    assert result["accuracy"] == 1.0 and result["flip_rate"] == 1.0


def test_score_probe_rejects_wrong_number_of_scores():
    with pytest.raises(SentimentRNNError, match="1 scores for 2 texts"):
        score_probe([ProbePair("a", 1, "b", 0)], lambda texts: [0.5])


def test_category_lines_group_the_pairs_below_them(tmp_path):
    p = tmp_path / "probe.tsv"
    p.write_text("1\tgood film\n0\tnot a good film\n# not -> positive\n0\tbad day\n1\tnot a bad day\n"
                 "# contrast\n1\tslow , but fun\n0\tfun , but slow\n", encoding="utf-8")
    pairs = load_probe(p)
    assert [pair.category for pair in pairs] == ["", "not -> positive", "contrast"]
    scored = score_probe(pairs, lambda texts: [0.9, 0.1, 0.1, 0.2, 0.8, 0.3])  # the middle pair: one side wrong
    assert scored["flip_rate"] == pytest.approx(2 / 3)
    assert scored["categories"] == {"": {"pairs": 1, "flip_rate": 1.0},
                                    "not -> positive": {"pairs": 1, "flip_rate": 0.0},
                                    "contrast": {"pairs": 1, "flip_rate": 1.0}}


def test_a_category_line_inside_a_pair_is_refused(tmp_path):
    p = tmp_path / "probe.tsv"
    p.write_text("1\tgood film\n# oops\n0\tnot a good film\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError, match=r"probe.tsv:2: a '# category' line splits a pair"):
        load_probe(p)


def test_shipped_probe_tests_negation_both_ways_and_each_category_has_pairs():
    """A "not means negative" shortcut must show: negation flips positive words AND negative words."""
    by_category = {}
    for pair in load_probe():
        by_category.setdefault(pair.category, []).append(pair)
    for name in ("negation of a positive word: not -> negative", "negation of a negative word: not -> positive",
                 "negation at a distance", "contrast with but", "intensifiers", "double negation"):
        assert len(by_category[name]) >= 6, name
    for pair in by_category["negation of a negative word: not -> positive"]:
        negated = pair.first_text if pair.first_label == 1 else pair.second_text
        assert any(w in negated.split() for w in ("not", "never", "nothing", "isn't", "wasn't", "don't")), negated
