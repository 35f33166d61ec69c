"""`pretrain-embeddings` reads only training rows, tokenizes like the tokenizer, and never overwrites silently."""

import os
import subprocess
from pathlib import Path

import pytest

from sentiment_rnn.config import DataConfig, load_config
from sentiment_rnn.data import load_splits, training_texts
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.pretrain import tokenize
from sentiment_rnn.tokenizer import train_tokenizer

from in_process import run_cli

ROOT = Path(__file__).resolve().parent.parent
TINY = load_config(ROOT / "configs" / "tiny.yaml")  # limit 400 rows per source: seconds, not minutes


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sentiment-rnn", "pretrain-embeddings", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


def test_corpus_is_the_training_rows_and_never_a_held_out_row():
    texts = training_texts(["rotten_tomatoes"], TINY)["rotten_tomatoes"]
    splits = load_splits(DataConfig(source="rotten_tomatoes", limit=TINY.data.limit), TINY.seed)
    assert sorted(texts) == sorted(splits.train["text"])
    assert not set(texts) & (set(splits.validation["text"]) | set(splits.test["text"]))


def test_words_are_split_exactly_as_the_tokenizer_splits_them():
    text = "A <br />GREAT film,<br/>really... isn't it?"
    words = tokenize([text], TINY)[0]
    assert words == ["a", "great", "film", ",", "really", "...", "isn", "'", "t", "it", "?"]
    tok = train_tokenizer(iter([[text]]), TINY.tokenizer)
    assert tok.encode(text, add_special_tokens=False).tokens == words


def test_unknown_source_is_refused():
    with pytest.raises(SentimentRNNError, match="rotten_tomatoes and/or imdb"):
        training_texts(["yelp"], TINY)


def test_cli_writes_glove_vectors_whose_words_are_tokenizer_words_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "vectors" / "v.txt"
    result = cli("--config", "configs/tiny.yaml", "--epochs", "1", "--dim", "20", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "320 rotten_tomatoes, 320 imdb training texts" in result.stdout
    # the width differs from the config's embedding_dim (100), so the hint sets it too: the file must match it
    assert (f"Use it with --config configs/tiny.yaml --set model.embedding.pretrained={out} --set "
            "model.embedding_dim=20") in " ".join(result.stdout.split())
    assert "(20d, 1 epoch)" in result.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 1000
    for line in lines[:200]:
        word, *numbers = line.split(" ")
        assert len(numbers) == 20 and tokenize([word], TINY)[0] == [word]

    again = run_cli("pretrain-embeddings", "--config", "configs/tiny.yaml", "--epochs", "1", "--output", out, cwd=ROOT)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert out.read_text(encoding="utf-8").splitlines() == lines


def test_cli_unknown_source_fails_before_any_work(tmp_path):
    result = run_cli("pretrain-embeddings", "--sources", "rotten_tomatoes,yelp", "--output", tmp_path / "v.txt")
    assert result.returncode == 1 and result.stderr.startswith("Error: unknown source(s) yelp")
    assert not (tmp_path / "v.txt").exists()
