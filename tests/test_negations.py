"""data.add_negated_predicates: "is not X" for each training phrase "is X", with the other label."""

from pathlib import Path

import datasets
import pytest
from test_hub_data import WORDS, write_split

from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.negations import negated, negated_predicates, with_negated_predicates
from sentiment_rnn.splits import ROW, describe_splits, load_splits

FEATURES = datasets.Features({"text": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["negative", "positive"]),
                              ROW: datasets.Value("int64")})


def rows(labeled: dict[str, int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": list(labeled), "label": list(labeled.values()),
                                       ROW: list(range(len(labeled)))}, features=FEATURES)


def test_a_predicate_is_negated_after_its_verb_and_s_takes_not():
    assert negated(["is", "masterly"], contracted=False) == "is not masterly"
    assert negated(["was", "great", "fun"], contracted=True) == "was n't great fun"
    assert negated(["'s", "a", "joy"], contracted=True) == "'s not a joy"


def test_negated_predicates_take_the_other_label_as_many_each_way_and_never_a_known_text():
    train = rows({"is masterly": 1, "'s a joy": 1, "was great fun": 1, "masterly": 1,
                  "is pathetic": 0, "are a mess": 0, "is not good": 0, "is a film that runs too long": 0})
    known = {"is not pathetic", "is n't pathetic"}
    made = negated_predicates(train, known, seed=0)
    by_label = {y: [t for t, label in zip(made["text"], made["label"], strict=True) if label == y] for y in (0, 1)}
    assert by_label[1] in (["are not a mess"], ["are n't a mess"])  # "is pathetic"'s negations were known
    assert len(by_label[0]) == 1  # one of the three positives' negations: as many as the other way
    assert by_label[0][0] in {"is not masterly", "is n't masterly", "'s not a joy", "was not great fun",
                              "was n't great fun"}
    assert made[ROW] == [-1, -1] and made.features == train.features  # no source row: never recorded as held out
    assert negated_predicates(train, known, seed=0)["text"] == made["text"]  # seeded


def test_a_label_set_of_three_is_refused_in_one_line():
    with pytest.raises(SentimentRNNError, match=r"needs two labels \(the data has 3\); set it to false"):
        with_negated_predicates(rows({"is fine": 1}), rows({"is fine": 1})["text"], ["a", "b", "c"], 0)


def predicate_phrases(n: int) -> dict:
    """n sentences "the film is WORD take K .", each with its phrases "is WORD" (shared with other sentences)
    and "is WORD take K" (its own alone)."""
    texts, labels = [], []
    for k in range(n):
        y, word = k % 2, WORDS[k % 2][k % 4]
        for text in (f"the film is {word} take {k} .", f"is {word}", f"is {word} take {k}"):
            texts.append(text)
            labels.append(y)
    return {"idx": list(range(len(texts))), "sentence": texts, "label": labels}


def test_the_negations_come_from_the_training_rows_alone(tmp_path: Path):
    folder = tmp_path / "phrases"
    write_split(folder, "train", predicate_phrases(40))
    write_split(folder, "validation", predicate_phrases(6))
    cfg = DataConfig(source=str(folder), text_column="sentence", validation_split="train", test_split="validation",
                     carve_by_sentence=True, add_negated_predicates=True)
    splits = load_splits(cfg, 0)
    made = splits.train.filter(lambda row: row[ROW] < 0)
    source = splits.train.filter(lambda row: row[ROW] >= 0)
    label_of = dict(zip(source["text"], source["label"], strict=True))
    assert len(made) == splits.record["negated_predicates"] > 0
    for text, label in zip(made["text"], made["label"], strict=True):
        verb, negator, *rest = text.split()
        assert negator in ("not", "n't") and label == 1 - label_of[" ".join([verb, *rest])]  # a training row's
    held_out = {text.split(" take ")[1] for text in splits.validation["text"]}  # "K ." of each held-out sentence
    assert not {text.split(" take ")[-1] + " ." for text in made["text"]} & held_out
    assert describe_splits(splits.record).endswith(f"; {len(made)} negated predicates added to training")
    assert load_splits(cfg.model_copy(update={"add_negated_predicates": False}), 0).train["text"] == source["text"]
