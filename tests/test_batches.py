"""Batching: every row once per epoch, in length buckets, reproducible per seed and epoch, split across ranks.

In-process and on in-memory datasets (no datasets cache), so mutation testing (scripts/mutate.py data) can
run them against every mutant of sentiment_rnn/data.py in seconds.
"""

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from sentiment_rnn import data as data_lib
from sentiment_rnn.config import Config, DataConfig, TokenizerConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.tokenizer import train_tokenizer

ROWS = 41  # batches of 8 leave a last batch of one row


def texts(rows: int = ROWS) -> list[str]:
    return [" ".join(["good" if i % 2 else "bad"] + [f"w{i % 7}"] * (i * 5 % 13)) for i in range(rows)]


def encoded(rows: int = ROWS) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": texts(rows), "label": [i % 2 for i in range(rows)]}, features=features)
    tok = train_tokenizer(iter([texts(rows)]), TokenizerConfig(min_frequency=1))
    return data_lib.encode(ds, tok, max_length=16)


def flat(batches) -> list[int]:
    return sorted(int(i) for b in batches for i in b)


def test_an_unshuffled_loader_gives_every_row_once_sorted_by_length_with_integer_labels():
    enc = encoded()
    loader = data_lib.make_loader(enc, batch_size=8, shuffle=False)
    batches = list(loader)  # no set_epoch: evaluation's loaders are read as they are made
    assert len(batches) == len(loader) == 6  # 5 full batches and the last row alone
    lengths = torch.cat([n for _, n, _ in batches]).tolist()
    assert lengths == sorted(enc["length"])
    labels = torch.cat([y for _, _, y in batches])
    assert labels.dtype == torch.int64  # what cross_entropy takes as class indices
    assert sorted(labels.tolist()) == sorted(enc["label"])
    order = [i for b in loader.sampler for i in b]
    assert order == sorted(range(ROWS), key=lambda i: enc["length"][i])  # ties in row order, whatever numpy sorts with


def test_the_longest_batch_is_the_last_of_the_sorted_loader():
    enc = encoded()
    input_ids, lengths, labels = data_lib.longest_batch(data_lib.make_loader(enc, batch_size=8, shuffle=False))
    assert lengths.tolist() == sorted(enc["length"])[-1:]
    assert input_ids.shape == (lengths.max(), 1) and labels.dtype == torch.int64


def epoch(sampler: data_lib.BucketBatchSampler, number: int, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(number, start=start)
    return list(sampler)


@pytest.mark.parametrize("seed", [0, 5])
def test_shuffled_batches_hold_every_row_once_per_epoch_and_an_order_fixed_by_seed_and_epoch(seed):
    lengths = np.random.default_rng(0).integers(1, 40, 203)
    sampler = data_lib.BucketBatchSampler(lengths, 8, shuffle=True, pool=3, seed=seed)  # pools of 24 rows
    first, second = epoch(sampler, 0), epoch(sampler, 1)
    for batches in (first, second):
        assert flat(batches) == list(range(203)) and len(batches) == len(sampler)
        assert sorted(len(b) for b in batches)[:2] == [3, 8]  # the last pool's 11 rows: 8 and 3
        assert all(list(lengths[b]) == sorted(lengths[b]) for b in batches)  # each batch is a slice of a sorted pool
    assert first != second  # every epoch sees another order
    assert first != [b.tolist() for b in np.array_split(np.argsort(lengths, kind="stable"), range(8, 203, 8))]
    again = data_lib.BucketBatchSampler(lengths, 8, shuffle=True, pool=3, seed=seed)
    assert epoch(again, 1) == second  # a resumed run sees the same batches
    assert epoch(again, 1, start=4) == second[4:]  # ... less those it already trained on
    other = data_lib.BucketBatchSampler(lengths, 8, shuffle=True, pool=3, seed=seed + 1)
    assert epoch(other, 1) != second


def test_rows_of_equal_length_keep_their_shuffled_order_when_a_pool_is_sorted():
    lengths = np.random.default_rng(0).integers(3, 6, 160)  # few lengths: many ties
    # one batch holding one pool: the batch is the epoch's shuffle, sorted by length
    shuffled, = epoch(data_lib.BucketBatchSampler(np.ones(160), 160, shuffle=True, pool=1, seed=1), 2)
    bucket, = epoch(data_lib.BucketBatchSampler(lengths, 160, shuffle=True, pool=1, seed=1), 2)
    assert bucket == sorted(shuffled, key=lambda i: lengths[i])  # which rows share a batch: the seed's choice alone


def test_training_texts_are_each_sources_own_training_rows_under_the_configs_split():
    cfg = Config.model_validate({"data": {"limit": 200, "split": [0.5, 0.25, 0.25]}, "seed": 4})
    texts = data_lib.training_texts(["imdb", "rotten_tomatoes", "imdb"], cfg)
    assert list(texts) == ["imdb", "rotten_tomatoes"]
    for source, rows in texts.items():
        splits = data_lib.load_splits(DataConfig(source=source, limit=200, split=(0.5, 0.25, 0.25)), seed=4)
        assert rows == splits.train["text"] and len(rows) == 100


def test_a_shuffled_loader_leaves_torchs_global_random_state_alone():
    loader = data_lib.make_loader(encoded(), batch_size=8, shuffle=True, seed=3)
    state = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), state)  # dropout draws the same numbers, resumed or not
    assert [b.tolist() for _, b, _ in batches] != [b.tolist() for _, b, _ in data_lib.make_loader(
        encoded(), batch_size=8, shuffle=False)]


def test_each_rank_loads_its_own_share_of_every_batch():
    enc = encoded()
    whole = [b for b in data_lib.make_loader(enc, batch_size=8, shuffle=True, seed=2).sampler if len(b) > 1]
    ranks = [list(data_lib.make_loader(enc, batch_size=8, shuffle=True, seed=2, rank=r, world_size=2).sampler)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)  # the one-row batch cannot be shared
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert not set(a) & set(b) and sorted(a + b) == sorted(whole[step])


def test_ids_past_65535_survive_encoding_and_small_vocabularies_keep_two_byte_ids():
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    big = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    big.pre_tokenizer = pre_tokenizers.Whitespace()
    ds = datasets.Dataset.from_dict({"text": ["w69999 w3 w65534 w65535", "w1"], "label": [0, 1]})
    enc = data_lib.encode(ds, big, max_length=8)
    assert enc["input_ids"] == [[70_001, 5, 65_536, 65_537], [3]]
    assert enc.features["input_ids"].feature.dtype == "int32"
    small = encoded()
    assert small.features["input_ids"].feature.dtype == "uint16"  # half the memory of int32
    assert "text" not in small.column_names  # the text's pages can leave memory once encoded


def test_encode_splits_replaces_each_part_by_its_ids_in_row_order(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(texts(60))))
    splits = data_lib.load_splits(DataConfig(source=str(path)), seed=0)
    before = {name: getattr(splits, name)["text"] for name in ("train", "validation", "test")}
    tok = train_tokenizer(iter([texts(60)]), TokenizerConfig(min_frequency=1))
    parts = data_lib.encode_splits(splits, tok, max_length=6)
    for name, rows in before.items():
        assert getattr(splits, name) is parts[name]
        assert parts[name]["input_ids"] == [e.ids[:6] for e in tok.encode_batch(rows, add_special_tokens=False)]


@pytest.mark.parametrize("sources, named", [([], "(none)"), (["imdb", "yelp", "x"], "yelp, x")])
def test_unknown_sources_are_named_with_the_valid_ones(sources, named):
    with pytest.raises(SentimentRNNError) as error:
        data_lib.check_sources(sources)
    assert str(error.value) == (f"unknown source(s) {named}; use --sources with rotten_tomatoes and/or imdb, "
                                "comma-separated")
