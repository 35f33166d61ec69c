"""Data loading through `datasets`: every supported source, label mapping, reproducible stratified splits."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_rnn.config import DataConfig, TokenizerConfig
from sentiment_rnn.data import encode, load_splits, make_loader, recorded_split
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.tokenizer import train_tokenizer

ROWS = [(f"{'great lovely' if i % 2 else 'awful dull'} film number {i}", "pos" if i % 2 else "neg") for i in range(60)]


def write(path, fmt, rows=ROWS, text="review", label="sentiment"):
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text(f"{text}{sep}{label}\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in rows))
    elif fmt == "json":
        path.write_text(json.dumps([{text: t, label: lab} for t, lab in rows]))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({text: t, label: lab}) + "\n" for t, lab in rows))
    else:
        pq.write_table(pa.table({text: [t for t, _ in rows], label: [lab for _, lab in rows]}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_local_format_loads_with_string_labels_mapped_to_ids(tmp_path, fmt):
    path = write(tmp_path / f"reviews.{fmt}", fmt)
    splits = load_splits(DataConfig(source=str(path), text_column="review", label_column="sentiment"), seed=0)
    assert splits.label_names == ["neg", "pos"]
    assert sum(splits.record["sizes"].values()) == 60
    assert set(splits.train["label"]) == {0, 1}


def split_folder(folder, **named):
    """train.csv (all ROWS) plus one 10-row file per named split; load it with those splits named."""
    write(folder / "train.csv", "csv")
    for k, part in enumerate(named):
        write(folder / f"{part}.csv", "csv", rows=ROWS[10 * k:10 * k + 10])
    cfg = DataConfig(source=str(folder), text_column="review", label_column="sentiment",
                     **{f"{part}_split": part for part in named})
    return load_splits(cfg, seed=0)


def test_folder_with_one_file_per_split_uses_its_own_test_split(tmp_path):
    splits = split_folder(tmp_path, test=True)
    assert len(splits.test) == 10
    assert splits.record["splits"]["test"] == "test"


def test_given_validation_and_test_splits_leave_every_training_row_to_train(tmp_path):
    splits = split_folder(tmp_path, validation=True, test=True)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (60, 10, 10)


def test_a_given_validation_split_returns_the_carved_validation_rows_to_training(tmp_path):
    splits = split_folder(tmp_path, validation=True)
    assert len(splits.validation) == 10
    assert len(splits.train) + len(splits.test) == 60  # no row is dropped
    assert not set(splits.train["text"]) & set(splits.test["text"])


def test_hub_layout_folder_loads_through_the_hub_code_path(tmp_path):
    # The Hub's parquet layout: data/<split>-00000-of-00001.parquet; `hf:` takes a Hub id or such a folder.
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "train-00000-of-00001.parquet", "parquet", text="sentence", label="label")
    write(tmp_path / "data" / "validation-00000-of-00001.parquet", "parquet", rows=ROWS[:12], text="sentence",
          label="label")
    cfg = DataConfig(source=f"hf:{tmp_path}", text_column="sentence", validation_split="validation")
    splits = load_splits(cfg, seed=0)
    assert len(splits.validation) == 12
    assert splits.label_names == ["neg", "pos"]


def test_embedded_rotten_tomatoes_is_the_standard_8530_sentences_split_stratified():
    splits = load_splits(DataConfig(), seed=0)
    sizes = splits.record["sizes"]
    assert sum(sizes.values()) == 8530
    assert sizes == {"train": 6824, "validation": 853, "test": 853}
    assert splits.label_names == ["negative", "positive"]
    for part in (splits.train, splits.validation, splits.test):
        share = np.mean(part["label"])
        assert 0.49 < share < 0.51  # stratified: the CSV's positives-first order does not leak into a part


def test_split_is_deterministic_and_recorded_rows_rebuild_the_test_split():
    cfg = DataConfig(limit=500)
    first, second = load_splits(cfg, seed=3), load_splits(cfg, seed=3)
    assert first.record == second.record
    assert load_splits(cfg, seed=4).record["rows"] != first.record["rows"]
    rebuilt, names = recorded_split(cfg, first.record, "test")
    assert rebuilt["text"] == first.test["text"] and names == first.label_names


def test_encoding_is_cached_and_batches_are_time_major_and_bucketed(tmp_path):
    splits = load_splits(DataConfig(limit=400, max_length=16), seed=0)
    tok = train_tokenizer((b["text"] for b in splits.train.iter(100)), TokenizerConfig(min_frequency=1))
    enc = encode(splits.train, tok, 16)
    assert encode(splits.train, tok, 16).cache_files == enc.cache_files  # the second call reads the first's file
    assert max(enc["length"]) <= 16 and min(enc["length"]) >= 1
    loader = make_loader(enc, batch_size=32, shuffle=True, seed=0)
    input_ids, lengths, labels = next(iter(loader))
    assert input_ids.shape == (int(lengths.max()), 32)  # [T, B]
    assert (input_ids[lengths - 1, range(32)] != 0).all()  # last real token is not padding
    padded = sum(int(n.max()) * len(n) - int(n.sum()) for _, n, _ in loader)
    naive = sum(16 * len(n) - int(n.sum()) for _, n, _ in loader)
    assert padded < naive / 2  # length buckets waste far less compute on padding


def test_one_class_only_is_refused(tmp_path):
    path = write(tmp_path / "one.csv", "csv", rows=[(t, "pos") for t, _ in ROWS])
    with pytest.raises(SentimentRNNError, match="one class only"):
        load_splits(DataConfig(source=str(path), text_column="review", label_column="sentiment"), seed=0)


def test_split_seed_fixes_the_carving_whatever_the_runs_seed():
    fixed = DataConfig(limit=200, split_seed=7)
    a, b = load_splits(fixed, seed=0), load_splits(fixed, seed=1)
    assert a.record["rows"] == b.record["rows"] and a.record["seed"] == 7
    sampled = [load_splits(DataConfig(limit=200), seed=seed).record["rows"] for seed in (0, 1)]
    assert sampled[0] != sampled[1]
