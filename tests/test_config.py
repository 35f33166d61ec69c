"""The config edge: YAML + overrides become typed objects, and every mistake is one readable error."""

import pytest

from sentiment_rnn.config import dump_config, load_config, parse_config
from sentiment_rnn.errors import SentimentRNNError


def test_defaults_describe_the_tutorial_embedding_and_a_tanh_rnn():
    cfg = load_config(None)
    assert cfg.model.embedding_dim == 100
    assert (cfg.model.cell, cfg.model.nonlinearity, cfg.model.kind) == ("rnn", "tanh", "rnn")
    assert cfg.data.source == "rotten_tomatoes"


def test_dotted_overrides_are_parsed_as_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden_size: 8\n")
    cfg = load_config(path, ["model.hidden_size=256", "model.bidirectional=true", "train.lr=1e-3", "data.limit=null"])
    assert cfg.model.hidden_size == 256 and cfg.model.bidirectional is True
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.data.limit is None
    assert cfg.name == "c"  # the file's stem names the run unless the file says otherwise


def test_relu_is_accepted_for_the_vanilla_rnn_and_tanh_for_every_cell():
    assert parse_config({"model": {"cell": "rnn", "nonlinearity": "relu"}}).model.nonlinearity == "relu"
    assert parse_config({"model": {"cell": "lstm", "nonlinearity": "tanh"}}).model.cell == "lstm"  # saved runs say tanh


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["model.cell=gru", "model.num_layers=2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("raw, expected", [
    ({"model": {"hiden_size": 3}}, "did you mean 'model.hidden_size'"),
    ({"trian": {}}, "did you mean 'train'"),
    ({"model": {"hidden_size": "big"}}, "model.hidden_size must be a positive width"),
    ({"model": {"hidden_size": -4}}, "config: model.hidden_size must be a positive width"),
    ({"lr": 0.001}, "unknown key 'lr'; did you mean 'train.lr'?"),
    ({"model": {"cell": "transformer"}}, "'rnn', 'gru' or 'lstm'"),
    ({"data": {"split": [0.5, 0.5, 0.5]}}, "sum to 1"),
    ({"model": {"cell": "lstm", "nonlinearity": "relu"}}, "model.nonlinearity: relu is for cell: rnn, not lstm"),
    ({"model": {"cell": "gru", "encoder": "cells", "nonlinearity": "relu"}}, "relu is for cell: rnn, not gru"),
    ({"seed": -5}, "'seed': Input should be greater than or equal to 0"),  # numpy refused it mid-run, a traceback
    ({"seed": 1 << 32}, "'seed': Input should be less than 4294967296"),
    ({"data": {"split_seed": 1 << 32}}, "'data.split_seed': Input should be less than 4294967296"),
])
def test_invalid_values_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(SentimentRNNError) as err:
        parse_config(raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_yaml_are_one_line_errors(tmp_path):
    with pytest.raises(SentimentRNNError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [1, 2\n")
    with pytest.raises(SentimentRNNError, match="YAML syntax error at line"):
        load_config(bad)


def test_override_without_equals_sign_explains_the_syntax():
    with pytest.raises(SentimentRNNError, match="KEY=VALUE"):
        load_config(None, ["model.hidden_size"])


def test_retired_keys_load_at_their_off_value_and_are_refused_otherwise_naming_the_removal(tmp_path):
    # A run saved before the removal holds both keys at their "off" value in its config.yaml: it still loads.
    saved = tmp_path / "config.yaml"
    saved.write_text("train:\n  lm_loss_weight: 0.0\nlm:\n  objective: next_word\n")
    assert "lm_loss_weight" not in dump_config(load_config(saved))
    for item, reason in [("train.lm_loss_weight=0.5", "auxiliary next-word loss tripled training time for no gain"),
                         ("lm.objective=autoencoder", "sequence autoencoder scored below training from scratch")]:
        with pytest.raises(SentimentRNNError, match=f"^--set {item}: .* was removed \\(the {reason}") as err:
            load_config(saved, [item])
        assert len(str(err.value).splitlines()) == 1 and "delete the key" in str(err.value)


def test_a_classifier_run_saves_only_classifier_keys_and_an_older_run_with_an_lm_section_still_loads(tiny_run,
                                                                                                      tmp_path):
    import shutil

    import yaml

    from sentiment_rnn import rundir
    from sentiment_rnn.config import Config
    from sentiment_rnn.predict import Predictor

    saved = yaml.safe_load((tiny_run / rundir.CONFIG).read_text())
    assert set(saved) == set(Config.model_fields) and "lm" not in saved
    old = tmp_path / "old"  # as runs saved before pretrain-lm's keys left the classifier's config
    shutil.copytree(tiny_run, old)
    (old / rundir.CONFIG).write_text(yaml.safe_dump({**saved, "lm": {"objective": "next_word", "bptt": 35}}))
    assert rundir.read_config(old).model == rundir.read_config(tiny_run).model
    assert Predictor.from_dir(old).probabilities(["a fine film"]).shape == (1, 2)


def test_lm_keys_in_a_classifier_config_are_one_line_error_naming_pretrain_lm():
    from sentiment_rnn.config import Config, LMRunConfig

    said = "'lm' configures a language model, which `sentiment-rnn pretrain-lm --config` trains; .*drop the lm: s"
    with pytest.raises(SentimentRNNError, match=said) as err:
        parse_config({"lm": {"bptt": 20}}, schema=Config)
    assert "\n" not in str(err.value)
    assert isinstance(parse_config({"lm": {"bptt": 20}}), LMRunConfig)  # pretrain-lm's configs keep them
    assert "lm:" not in dump_config(parse_config({"lm": {"bptt": 20}}), Config)
