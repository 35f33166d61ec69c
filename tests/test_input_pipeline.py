"""The fast input pipeline gives exactly what the plain one gives: ids, splits, batches; and it caches."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch

from sentiment_rnn import data as data_lib
from sentiment_rnn import splits as splits_lib
from sentiment_rnn.config import DataConfig, TokenizerConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.tokenizer import encode_ids, train_tokenizer

TRICKY = [
    "a " * 40,  # many short tokens: the cut text alone has enough
    "word " * 3 + "x" * 200 + " end",  # one token longer than the cut
    "nice!!<br /><br />then more words after the break " * 3,  # the cut can split '<br />' after punctuation
    " " * 300 + "late start of the text",  # nothing but spaces before the cut
    "Ünïcödé ÇAFÉ naïve façade ½ " * 10,
    "short",
]


@pytest.mark.parametrize("max_length", [1, 2, 5, 9, 64])
def test_encode_ids_equals_tokenizing_the_whole_text_then_truncating(max_length):
    tok = train_tokenizer(iter([TRICKY]), TokenizerConfig(min_frequency=1))
    texts = TRICKY + [t[:k] for t in TRICKY for k in range(1, 120, 7)]  # cuts landing anywhere
    full = [e.ids[:max_length] or [1] for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert encode_ids(tok, texts, max_length) == full


def test_a_carved_split_uses_every_row_once_and_keeps_each_labels_share():
    labels = np.random.default_rng(1).integers(0, 3, 500)
    rows = np.arange(1000, 1500)[::-1] - 1000  # any row numbers: the split draws among these
    train, test = splits_lib._stratified_split(rows, labels, 0.2, seed=7, label_names=["a", "b", "c"])
    assert sorted(list(train) + list(test)) == list(range(500)) and len(test) == 100
    for c in range(3):
        assert abs(np.mean(labels[test] == c) - np.mean(labels == c)) < 0.01
    again, _ = splits_lib._stratified_split(rows, labels, 0.2, seed=7, label_names=["a", "b", "c"])
    assert list(again) == list(train)  # seeded: the same rows every time


def test_carving_draws_the_rows_a_split_of_the_dataset_then_of_its_held_out_part_draws():
    from sklearn.model_selection import train_test_split

    labels = np.random.default_rng(2).integers(0, 2, 400)
    features = datasets.Features({"label": datasets.ClassLabel(names=["a", "b"]), "row": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"label": labels, "row": np.arange(400)}, features=features)
    kept, validation, test = splits_lib._carve(ds, (0.8, 0.1, 0.1), seed=3)
    # The same draws on the datasets themselves: the held-out dataset is split again by its own positions.
    k, h = train_test_split(np.arange(400), test_size=80, stratify=labels, random_state=3)
    held_out = ds.select(h)
    v, t = train_test_split(np.arange(80), test_size=40, stratify=held_out["label"], random_state=3)
    assert list(kept["row"]) == list(ds.select(k)["row"])
    assert list(validation["row"]) == list(held_out.select(v)["row"])
    assert list(test["row"]) == list(held_out.select(t)["row"])


def test_a_label_with_a_single_row_is_a_one_line_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"film number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
                    + "odd one out,meh\n")
    with pytest.raises(SentimentRNNError, match="label 'meh' has a single row"):
        data_lib.load_splits(DataConfig(source=str(path)), seed=0)


def test_encode_keeps_every_rows_label_and_row_number_with_its_ids_after_a_shuffled_select():
    texts = [f"{'good' if i % 3 else 'bad'} film number{i}" for i in range(90)]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [int(i % 3 > 0) for i in range(90)],
                                     data_lib.ROW: list(range(90))},
                                    features=datasets.Features({"text": datasets.Value("string"),
                                                                "label": datasets.ClassLabel(names=["neg", "pos"]),
                                                                data_lib.ROW: datasets.Value("int64")}))
    picked = ds.shuffle(seed=1).select(range(5, 80))  # rows reach map one Arrow chunk per row
    tok = train_tokenizer(iter([texts]), TokenizerConfig(min_frequency=1))
    encoded = data_lib.encode(picked, tok, max_length=8)
    assert encoded.features["label"] == ds.features["label"]
    for row, label, ids in zip(encoded[data_lib.ROW], encoded["label"], encoded["input_ids"], strict=True):
        assert label == int(row % 3 > 0)
        assert ids == tok.encode(texts[row], add_special_tokens=False).ids


def test_column_numpy_reads_a_selection_of_rows_in_its_order():
    ds = datasets.Dataset.from_dict({"x": np.arange(100) * 3})
    picked = ds.shuffle(seed=0).select(range(10, 60))
    assert data_lib.column_numpy(picked, "x").tolist() == list(picked["x"])


def test_arrow_batches_equal_pad_sequence_for_flat_and_selected_datasets():
    splits = data_lib.load_splits(DataConfig(limit=300, max_length=12), seed=0)
    tok = train_tokenizer((b["text"] for b in splits.train.iter(100)), TokenizerConfig(min_frequency=1))
    enc = data_lib.encode(splits.train, tok, 12)
    for ds in (enc, enc.select(np.random.default_rng(0).permutation(len(enc))[:100])):
        idx = [7, 0, 31, 3, 42, 99]
        input_ids, lengths, labels = data_lib.EncodedBatches(ds)[idx]
        rows = [ds[i] for i in idx]
        assert torch.equal(input_ids, torch.nn.utils.rnn.pad_sequence([torch.tensor(r["input_ids"]) for r in rows]))
        assert lengths.tolist() == [len(r["input_ids"]) for r in rows]
        assert labels.tolist() == [r["label"] for r in rows]


ENCODE_IN_A_NEW_PROCESS = """
import json, sys, time
from pathlib import Path
from sentiment_rnn import data as data_lib
from sentiment_rnn.config import DataConfig
from sentiment_rnn.tokenizer import load_tokenizer
splits = data_lib.load_splits(DataConfig(limit=300), seed=0)
before = set(Path(sys.argv[1]).rglob("*.arrow"))
data_lib.encode(splits.train, load_tokenizer(Path(sys.argv[2])), 64)
print(json.dumps(len(set(Path(sys.argv[1]).rglob("*.arrow")) - before)))
"""


@pytest.mark.slow
def test_a_second_run_reads_the_encoding_cache_instead_of_tokenizing_again(tmp_path):
    cache = tmp_path / "hf"
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache)}
    splits = data_lib.load_splits(DataConfig(limit=300), seed=0)  # the tokenizer is trained here, the cache is not
    train_tokenizer((b["text"] for b in splits.train.iter(100)), TokenizerConfig()).save(str(tmp_path / "tok.json"))
    written = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", ENCODE_IN_A_NEW_PROCESS, str(cache), str(tmp_path / "tok.json")],
                             env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        written.append(json.loads(run.stdout.strip().splitlines()[-1]))
    assert written == [1, 0]  # the first run writes the encoded split; the second finds it by fingerprint


def test_pad_lists_equals_pad_sequence_time_major():
    from sentiment_rnn.tokenizer import pad_lists

    seqs = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    ids, lengths = pad_lists(seqs)
    expected = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs])  # [T, B], zeros after each end
    assert torch.equal(torch.from_numpy(ids), expected)
    assert lengths.tolist() == [3, 1, 4, 2]


def test_encode_ids_restores_the_garbage_collector_as_it_found_it():
    import gc

    tok = train_tokenizer(iter([TRICKY]), TokenizerConfig(min_frequency=1))
    assert gc.isenabled()
    encode_ids(tok, TRICKY, 5)
    assert gc.isenabled()
    gc.disable()
    try:
        encode_ids(tok, TRICKY, 5)
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
