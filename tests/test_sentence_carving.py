"""data.carve_by_sentence: validation and test carved as whole sentences from data made of labeled phrases
(SST-2), each phrase training only when a training sentence holds it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_hub_data import WORDS, write_split

from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.evaluate import recorded_left_out
from sentiment_rnn.predict import Predictor
from sentiment_rnn.sentence_carving import containing_sentences, left_out_rows, rows_following_sentences
from sentiment_rnn.splits import ROW, describe_splits, load_splits, recorded_split
from sentiment_rnn.sweep import run_sweep

from conftest import TINY
from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")


def test_a_phrase_lies_in_the_sentences_holding_its_words_in_a_row():
    texts = ["a good film", "good", "a good", "goodness , at last", "film a", "bad day", "good", "day"]
    sentences, holders = containing_sentences(texts)
    assert sorted(texts[s] for s in sentences) == ["a good film", "bad day", "film a", "goodness , at last"]
    named = {texts[s]: k for k, s in enumerate(sentences)}
    assert holders[1] == holders[2] == holders[6] == [named["a good film"]]  # not "goodness", a repeat too
    assert holders[7] == [named["bad day"]]
    assert holders[0] == [named["a good film"]]  # a sentence holds itself
    assert holders[4] == [named["film a"]]  # "film a" is no run of "a good film"'s words


def test_a_phrase_twice_in_a_sentence_is_held_by_it_once():
    sentences, holders = containing_sentences(["so so good", "so"])
    assert sentences.tolist() == [0] and holders == [[0], [0]]


def test_a_phrase_held_by_two_sentences_trains_when_either_trains():
    texts = ["the plot is dull", "the cast is fine", "is", "the plot", "the cast"]
    sentences, holders = containing_sentences(texts)
    plot = int(next(k for k, s in enumerate(sentences) if texts[s] == "the plot is dull"))
    cast = 1 - plot
    assert sorted(holders[2]) == [0, 1]  # "is" lies in both
    assert rows_following_sentences(holders, [cast]).tolist() == [1, 2, 4]
    assert rows_following_sentences(holders, [plot]).tolist() == [0, 2, 3]


def test_the_phrases_left_out_are_those_only_held_out_sentences_hold():
    texts = ["the plot is dull", "the cast is fine", "is", "the plot", "the cast", "the plot"]
    assert left_out_rows(texts, {0}).tolist() == [3, 5]  # "is" also lies in the training sentence
    assert left_out_rows(texts, {0, 1}).tolist() == [2, 3, 4, 5]
    assert left_out_rows(texts, set()).tolist() == []


def phrases(n: int) -> dict:
    """n sentences, each followed by three of its phrases: its label word and "a WORD film" (both shared by
    other sentences) and "take K ." (its own alone)."""
    rows, labels = [], []
    for k in range(n):
        y, word = k % 2, WORDS[k % 2][k % 4]
        for text in (f"a {word} film , take {k} .", word, f"a {word} film", f"take {k} ."):
            rows.append(text)
            labels.append(y)
    return {"idx": list(range(len(rows))), "sentence": rows, "label": labels}


@pytest.fixture(scope="module")
def phrase_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phrases") / "sst2"
    write_split(folder, "train", phrases(60))
    write_split(folder, "validation", phrases(10))
    return folder


def config(folder: Path, by_sentence: bool = True) -> DataConfig:
    return DataConfig(source=str(folder), text_column="sentence", validation_split="train",
                      test_split="validation", carve_by_sentence=by_sentence)


def test_validation_holds_whole_sentences_and_their_own_phrases_leave_training(phrase_folder):
    splits = load_splits(config(phrase_folder), 0)
    held = splits.validation["text"]
    assert len(held) == 6 and all(text.startswith("a ") and text.endswith(" .") for text in held)
    takes = {text.split(", ")[1] for text in held}  # "take K ." of each held-out sentence
    training = set(splits.train["text"])
    assert not takes & training and not set(held) & training
    assert {"a dull film", "a boring film", "a great film", "a sharp film"} <= training  # shared: still train
    assert len(splits.train) == 240 - 2 * 6 and splits.record["carved_by_sentence"] == {"left_out": 6}
    assert splits.record["sizes"] == {"train": 228, "validation": 6, "test": 40}
    assert describe_splits(splits.record).endswith(
        "carved as whole sentences, 6 phrases that lie only in them left out of training")


def test_carving_by_sentence_is_seeded_and_rebuilt_from_the_record(phrase_folder):
    first, again, other = (load_splits(config(phrase_folder), seed) for seed in (0, 0, 1))
    assert first.validation["text"] == again.validation["text"] != other.validation["text"]
    assert first.train["text"] == again.train["text"]
    assert sorted(first.validation["label"]).count(1) == 3  # stratified: half of each label
    rebuilt, _ = recorded_split(config(phrase_folder), first.record, "validation", first.label_names)
    assert rebuilt["text"] == first.validation["text"]


@pytest.mark.parametrize("limit", [None, 200])
def test_the_left_out_phrases_are_rebuilt_from_the_record(phrase_folder, limit):
    """Rebuilt, they are exactly the rows the carving neither trained nor held out (within data.limit's sample)."""
    cfg = config(phrase_folder).model_copy(update={"limit": limit})
    splits = load_splits(cfg, 0)
    left = recorded_left_out(cfg, splits.record, splits.label_names)
    rows = {part: set(ds[ROW]) for part, ds in (("train", splits.train), ("validation", splits.validation),
                                                 ("left", left))}
    assert not rows["left"] & (rows["train"] | rows["validation"])
    assert sum(map(len, rows.values())) == (limit or 240)
    assert len(left) == splits.record["carved_by_sentence"]["left_out"]
    if limit is None:  # each held-out sentence's own phrase "take K .", with its sentence's label
        labels = {text.split(", ")[1]: y for text, y in zip(splits.validation["text"], splits.validation["label"],
                                                            strict=True)}
        assert dict(zip(left["text"], left["label"], strict=True)) == labels


def test_left_out_phrases_refuse_a_row_by_row_run_and_a_changed_source(phrase_folder):
    row_by_row = load_splits(config(phrase_folder, by_sentence=False), 0)
    with pytest.raises(SentimentRNNError, match="carved row by row, so it left no phrases out"):
        recorded_left_out(config(phrase_folder), row_by_row.record)
    record = load_splits(config(phrase_folder), 0).record
    record["carved_by_sentence"] = {"left_out": 7}
    with pytest.raises(SentimentRNNError, match=r"changed since training \(6 phrases left out now, 7 then\)"):
        recorded_left_out(config(phrase_folder), record)


def test_row_by_row_carving_keeps_a_held_out_sentences_phrases_in_training(phrase_folder):
    """What the option fixes: carved row by row, held-out sentences' own phrases train."""
    splits = load_splits(config(phrase_folder, by_sentence=False), 0)
    assert "carved_by_sentence" not in splits.record and len(splits.validation) == 24
    sentences = [t for t in splits.validation["text"] if t.startswith("a ") and t.endswith(" .")]
    own = {text.split(", ")[1] for text in sentences}
    assert own & set(splits.train["text"])


@pytest.mark.slow
def test_train_carves_by_sentence_through_the_installed_command(phrase_folder, tmp_path):
    run = tmp_path / "run"
    trained = subprocess.run([CLI, "train", "-c", str(TINY), "--set", f"data.source={phrase_folder}",
                              "--set", "data.text_column=sentence", "--set", "data.validation_split=train",
                              "--set", "data.test_split=validation", "--set", "data.carve_by_sentence=true",
                              "--set", "train.epochs=1", "--set", "train.grad_probe_epochs=[]", "-o", str(run)],
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "6 phrases that lie only in them left out of training" in " ".join(trained.stdout.split())
    assert json.loads((run / "metrics.json").read_text())["sizes"] == {"train": 228, "validation": 6, "test": 40}
    split = json.loads((run / "split.json").read_text())
    assert len(split["rows"]["validation"]) == 6 and split["carved_by_sentence"] == {"left_out": 6}
    rows = tmp_path / "left-out.jsonl"
    scored = run_cli("evaluate", "--model", run, "--split", "left-out", "--json", "--predictions", rows)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["split"] == "left-out"
    texts = [json.loads(line)["text"] for line in rows.read_text().splitlines()]
    assert len(texts) == 6 and all(t.startswith("take ") for t in texts)  # the held-out sentences' own phrases


def left_out_accuracy_by_hand(run: Path, folder: Path) -> float:
    """The held-out sentences' own "take K ." phrases, labeled as their sentences, classified by the run."""
    record = json.loads((run / "split.json").read_text())
    sentences, _ = recorded_split(config(folder), record, "validation")
    own = {text.split(", ")[1]: label for text, label in zip(sentences["text"], sentences["label"], strict=True)}
    names = json.loads((run / "meta.json").read_text())["label_names"]
    predicted = [names.index(p["label"]) for p in Predictor.from_dir(run).predict(list(own))]
    return sum(p == y for p, y in zip(predicted, own.values(), strict=True)) / len(own)


@pytest.mark.slow
def test_a_sweep_of_runs_carved_by_sentence_reports_their_left_out_phrases(phrase_folder, tmp_path):
    data = [f"data.source={phrase_folder}", "data.text_column=sentence", "data.validation_split=train",
            "data.test_split=validation", "train.grad_probe_epochs=[]", "stage_one.enabled=false",
            "train.epochs=8", "train.lr=0.01", "train.patience=8"]  # long enough to read the sentences' label words
    summary = run_sweep(TINY, [*data, "data.carve_by_sentence=true"], "0,1", tmp_path / "by-sentence")
    assert summary["figures"]["left_out_accuracy"] == "left-out phrases accuracy"
    assert summary["figure_panels"] == ["validation accuracy", "left-out phrases accuracy", "test accuracy",
                                        "probe pairs right"]  # sweep.png plots it beside validation
    for run in summary["settings"][0]["runs"]:
        # "take K ." holds no label word: the phrases are guessed while their sentences are read right
        assert run["left_out_accuracy"] == pytest.approx(left_out_accuracy_by_hand(Path(run["run"]), phrase_folder))
        assert run["left_out_accuracy"] < run["val_accuracy"]
    mixed = run_sweep(TINY, [*data, "data.carve_by_sentence=false,true"], "0", tmp_path / "mixed")
    assert "left_out_accuracy" not in mixed["figures"]  # a column only when every run has it
    assert "left-out phrases accuracy" not in mixed["figure_panels"]
    assert [("left_out_accuracy" in row["runs"][0]) for row in mixed["settings"]] == [False, True]


def test_left_out_of_a_run_that_left_no_phrases_out_is_a_one_line_error(tmp_path):
    from sentiment_rnn.config import load_config
    from sentiment_rnn.evaluate import evaluate_run
    from sentiment_rnn.train import train

    run = tmp_path / "run"  # Rotten Tomatoes holds whole sentences only: carving them leaves no phrase out
    train(load_config(TINY, ["data.carve_by_sentence=true", "train.epochs=1"]), run)
    assert json.loads((run / "split.json").read_text())["carved_by_sentence"]["left_out"] == 0
    with pytest.raises(SentimentRNNError, match="this run's carving left no phrases out"):
        evaluate_run(run, split="left-out")
