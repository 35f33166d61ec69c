"""Hub datasets as users meet them: a folder in the Hub's layout (data/<split>-00000-of-00001.parquet) read
with or without `hf:`, its ClassLabel names, an unlabeled test split (label -1, as in every GLUE test split)
never scored, names for bare integer labels, and one line when the Hub cannot be reached."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from sentiment_rnn.cli import app
from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.splits import describe_splits, load_splits

from conftest import TINY
from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")
FAST = ["--set", "train.epochs=1", "--set", "train.grad_probe_epochs=[]", "--set", "data.text_column=sentence"]
NAMES = ["negative", "positive"]
WORDS = (["dull", "awful", "boring", "flat"], ["lovely", "great", "moving", "sharp"])


def sentences(n: int, labeled: bool = True, offset: int = 0) -> dict:
    """n phrases whose words give their label away, so a tiny model learns them; -1 labels when unlabeled."""
    labels = [(k + offset) % 2 for k in range(n)]
    return {"idx": list(range(n)),
            "sentence": [f"a {WORDS[y][k % 4]} film , take {k}" for k, y in enumerate(labels)],
            "label": labels if labeled else [-1] * n}


def write_split(folder: Path, split: str, data: dict, features=None) -> None:
    features = features or datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                                              "label": datasets.ClassLabel(names=NAMES)})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(data, features=features).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    """stanfordnlp/sst2 in miniature: labeled train and validation, a test split labeled -1 throughout."""
    folder = tmp_path_factory.mktemp("hub") / "sst2"
    write_split(folder, "train", sentences(120))
    write_split(folder, "validation", sentences(20, offset=1))
    write_split(folder, "test", sentences(30, labeled=False))
    return folder


def test_a_hub_layout_folder_reads_the_same_with_or_without_hf_and_as_its_data_folder(hub_folder):
    plain = load_splits(DataConfig(source=str(hub_folder), text_column="sentence"), 0)
    prefixed = load_splits(DataConfig(source=f"hf:{hub_folder}", text_column="sentence"), 0)
    shards = load_splits(DataConfig(source=str(hub_folder / "data"), text_column="sentence"), 0)  # its shard files
    assert plain.label_names == prefixed.label_names == shards.label_names == NAMES
    assert plain.record["sizes"] == prefixed.record["sizes"] == shards.record["sizes"]
    assert plain.record["rows"] == prefixed.record["rows"] == shards.record["rows"]


@pytest.mark.parametrize("given", [{}, {"validation_split": "validation"}])
def test_one_split_as_validation_and_test_is_refused_and_carving_validation_is_the_fix(hub_folder, given):
    cfg = DataConfig(source=str(hub_folder), text_column="sentence", test_split="validation", **given)
    with pytest.raises(SentimentRNNError, match="data.validation_split and data.test_split are both 'validation'; "
                                                "set data.validation_split: train"):
        load_splits(cfg, 0)  # the epoch would have been chosen on the test rows
    carved = load_splits(cfg.model_copy(update={"validation_split": "train"}), 0)
    assert carved.record["splits"] == {"train": "train", "validation": "train", "test": "validation"}


def test_an_unlabeled_test_split_is_never_scored_and_the_data_line_says_so(hub_folder):
    splits = load_splits(DataConfig(source=str(hub_folder), text_column="sentence"), 0)
    assert splits.record["splits"] == {"train": "train", "validation": "validation", "test": "train"}
    assert splits.record["unlabeled"] == {"test": 30}
    assert "-1" not in set(map(str, splits.test["label"]))
    line = describe_splits(splits.record)
    assert "test 12 rows (carved from 'train')" in line
    assert line.endswith("split 'test' (30 rows) has no labels and is never scored")


def test_validation_carved_from_train_and_the_hubs_validation_as_test(hub_folder):
    """configs/sst2.yaml's arrangement: the epoch is chosen on training rows, the given split chose nothing."""
    cfg = DataConfig(source=str(hub_folder), text_column="sentence", validation_split="train",
                     test_split="validation")
    splits = load_splits(cfg, 0)
    assert splits.record["splits"] == {"train": "train", "validation": "train", "test": "validation"}
    assert splits.record["sizes"] == {"train": 108, "validation": 12, "test": 20}
    assert "validation 12 rows (carved from 'train'), test 20 rows (split 'validation')" in describe_splits(
        splits.record)


def test_naming_an_unlabeled_split_as_the_test_is_a_one_line_error(hub_folder):
    with pytest.raises(SentimentRNNError, match=r"split 'test' .* has no labels \(every label is -1 or empty\).*"
                                                r"set data.test_split to a labeled split, or to train"):
        load_splits(DataConfig(source=str(hub_folder), text_column="sentence", test_split="test"), 0)


def test_a_split_with_some_labels_missing_is_refused_with_the_row(tmp_path):
    folder = tmp_path / "partly"
    write_split(folder, "train", sentences(40))
    data = sentences(10)
    data["label"][6] = -1
    write_split(folder, "validation", data)
    with pytest.raises(SentimentRNNError, match=r"split 'validation' row 7 has no label \(-1 or empty\)"):
        load_splits(DataConfig(source=str(folder), text_column="sentence"), 0)


def test_label_names_name_bare_integer_labels(tmp_path):
    folder = tmp_path / "ints"
    ints = datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                              "label": datasets.Value("int64")})
    write_split(folder, "train", sentences(40), ints)
    assert load_splits(DataConfig(source=str(folder), text_column="sentence"), 0).label_names == ["0", "1"]
    named = load_splits(DataConfig(source=str(folder), text_column="sentence", label_names=NAMES), 0)
    assert named.label_names == NAMES and set(named.train["label"]) == {0, 1}
    with pytest.raises(SentimentRNNError, match=r"data.label_names names labels 0..2, but the data has label '3'"):
        data = sentences(40)
        data["label"][5] = 3
        write_split(folder, "train", data, ints)
        load_splits(DataConfig(source=str(folder), text_column="sentence", label_names=["a", "b", "c"]), 0)
    write_split(folder, "train", sentences(40), ints)
    with pytest.raises(SentimentRNNError, match=r"data.label_names names label 2 \('neutral'\), which no training "
                                                r"row has; give one name per label the data has"):
        load_splits(DataConfig(source=str(folder), text_column="sentence", label_names=[*NAMES, "neutral"]), 0)


@pytest.mark.slow
def test_a_hub_layout_folder_trains_predicts_and_never_scores_its_unlabeled_split(hub_folder, tmp_path):
    """End to end through the installed command, as a user with an offline copy of a Hub dataset would."""
    run = tmp_path / "run"
    trained = subprocess.run([CLI, "train", "-c", str(TINY), "--set", f"data.source={hub_folder}", *FAST,
                              "-o", str(run)], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "split 'test' (30 rows) has no labels and is never scored" in " ".join(trained.stdout.split())
    assert json.loads((run / "metrics.json").read_text())["sizes"]["test"] == 12  # carved, labeled rows
    predicted = run_cli("predict", "--model", run, "--format", "json", "a lovely film")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["label"] in NAMES
    scored = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--data", str(hub_folder), "--split", "test"])
    assert scored.exit_code == 1
    assert scored.output.startswith("Error: split 'test' of ") and scored.output.count("\n") == 1
    assert "has no labels" in scored.output and "--split (train, validation)" in scored.output


def test_label_names_come_through_to_predict_for_integer_labels(tmp_path):
    folder = tmp_path / "ints"
    ints = datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                              "label": datasets.Value("int64")})
    write_split(folder, "train", sentences(60), ints)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "--set", f"data.source={folder}", *FAST,
                                      "--set", "data.label_names=[negative, positive]", "-o", str(run)])
    assert result.exit_code == 0, result.output
    predicted = CliRunner().invoke(app, ["predict", "--model", str(run), "--format", "json", "a great film"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output)[0]["label"] in NAMES


def test_an_unreachable_hub_is_one_line_naming_the_local_copy_fix(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # never touches the network
    result = subprocess.run([CLI, "train", "-c", str(TINY), "--set", "data.source=hf:nobody/no-such-dataset",
                             "-o", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach the Hugging Face Hub for 'hf:nobody/no-such-dataset'")
    assert "--set data.source=/path/to/folder" in result.stderr and "Hub's layout" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr + result.stdout
    assert "check the file's format" not in result.stderr
    assert not (tmp_path / "run").exists()
