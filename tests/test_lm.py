"""pretrain-lm: tokenizer that reads RT and IMDB alike, a loss that falls, exact resume, bad input, the CLI."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sentiment_rnn import rundir
from sentiment_rnn.config import TokenizerConfig, load_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.lm import data as lm_data
from sentiment_rnn.lm.model import build_language_model
from sentiment_rnn.lm.pretrain import Reporter, pretrain_lm
from sentiment_rnn.lm.tokenizer import build_lm_tokenizer, train_lm_tokenizer, words
from sentiment_rnn.models import build_model

ROOT = Path(__file__).resolve().parent.parent
LM = ROOT / "configs" / "lm.yaml"
# A few hundred Rotten Tomatoes training sentences, a small LSTM: seconds per run.
TINY = ["data.limit=400", "lm.corpora=[rotten_tomatoes]", "model.hidden_size=24", "model.num_layers=2",
        "tokenizer.max_vocab=500", "train.batch_size=8", "train.epochs=2", "train.threads=1",
        "lm.eval_batch_size=2", "lm.bptt=12", "train.checkpoint_every=null"]


def tiny_config(*extra: str):
    return load_config(LM, [*TINY, *extra])


@pytest.mark.parametrize(("ptb", "raw"), [
    ("it does n't work , and it 's -lrb- sadly -rrb- `` bad '' ...", 'It doesn\'t work, and it\'s (sadly) "bad"...'),
    ("i ca n't believe they 're here", "I can't believe they're here<br /><br />"),
    ("the film 's stars wo n't shine", "The film’s stars won't shine"),
])
def test_ptb_tokenized_and_raw_reviews_give_the_same_tokens(ptb, raw):
    tok = build_lm_tokenizer(TokenizerConfig())
    assert words(tok, ptb) == words(tok, raw)
    assert "n't" in words(tok, ptb) + words(tok, "doesn't") and "<" not in words(tok, raw)


def test_special_tokens_come_first_and_words_follow_frequency():
    docs = ["a a a a b b b c c d"] * 3
    tok = train_lm_tokenizer(docs, TokenizerConfig(min_frequency=1))
    assert [tok.id_to_token(i) for i in range(7)] == ["[PAD]", "[UNK]", "[EOS]", "a", "b", "c", "d"]


def test_language_model_overfits_one_batch():
    config = tiny_config()
    torch.set_num_threads(1)  # as pretrain-lm runs with train.threads=1; a spinning second thread stalls a busy CPU
    torch.manual_seed(0)
    model = build_language_model(config.model, config.lm, vocab_size=50)
    ids = torch.randint(3, 50, (9, 2))  # [T+1, B]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(80):
        loss, n, _ = model.loss(ids[:-1], ids[1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert n == 8 * 2
    assert losses[-1] < 0.2 * losses[0], losses[::10]


def test_state_dict_keys_are_the_classifiers_embedding_and_encoder_keys():
    config = tiny_config()
    lm = build_language_model(config.model, config.lm, vocab_size=100)
    classifier = build_model(config.model, 100, 2, 64)
    shared = {k: v.shape for k, v in lm.state_dict().items() if not k.startswith("head.")}
    expected = {k: v.shape for k, v in classifier.state_dict().items() if k.startswith(("embedding.", "encoder."))}
    assert shared == expected and "embedding.weight" in shared


def test_document_windows_predict_every_token_once_and_padding_is_not_scored():
    windows = lm_data.document_windows([[5, 6, 7, 8, 2], [9, 2]], bptt=3)
    assert windows.tolist() == [[5, 6, 7, 8], [8, 2, 0, 0], [9, 2, 0, 0]]
    config = tiny_config("lm.bptt=3")
    model = build_language_model(config.model, config.lm, vocab_size=12)
    _, n, _ = model.loss(windows[:, :-1].t(), windows[:, 1:].t())
    assert n == 4 + 1  # targets 6 7 8 2 | 2; the [PAD] targets are skipped


class InterruptAt(Reporter):
    """Sends this process a real SIGINT (Ctrl-C) after `step` steps."""

    def __init__(self, step: int):
        self.at, self.seen = step, 0

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("settings", [["lm.batching=stream"], ["lm.batching=documents"],
                                      ["train.schedule=warmup_linear", "train.warmup_steps=3"]],
                         ids=["stream", "documents", "schedule"])
def test_resume_after_ctrl_c_gives_the_weights_of_an_uninterrupted_run(tmp_path, settings):
    config = tiny_config(*settings, "model.embedding_dropout=0.2")  # dropout: RNG state matters
    straight = pretrain_lm(config, tmp_path / "straight")
    with pytest.raises(TrainingInterrupted, match="pretrain-lm --resume"):
        pretrain_lm(config, tmp_path / "cut", InterruptAt(5))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = pretrain_lm(config, tmp_path / "cut", resume=True)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight_perplexities = [h["held_out_perplexity"] for h in straight["history"]]
    assert straight_perplexities == [h["held_out_perplexity"] for h in resumed["history"]]
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()


def test_empty_corpus_and_too_small_corpus_fail_in_one_line_and_write_nothing(tmp_path):
    empty, small = tmp_path / "empty.txt", tmp_path / "small.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    small.write_text("a fine film\nbad\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError, match="is empty"):
        pretrain_lm(tiny_config(f"lm.source={empty}"), tmp_path / "run1")
    with pytest.raises(SentimentRNNError, match="too few to fill one batch"):
        pretrain_lm(tiny_config(f"lm.source={small}", "lm.held_out=0.4"), tmp_path / "run2")
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()


def in_process(*args: str):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    return CliRunner().invoke(app, ["pretrain-lm", *args])


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sentiment-rnn", "pretrain-lm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_cli_pretrains_a_tiny_lm_and_refuses_bad_input(tmp_path):
    run = tmp_path / "lm"
    sets = [arg for item in TINY for arg in ("--set", item)]
    proc = cli("--config", str(LM), *sets, "--output", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Held-out perplexity" in proc.stdout
    files = {p.name for p in run.iterdir()}
    assert {"config.yaml", "tokenizer.json", "model.safetensors", "meta.json", "metrics.json", "curves.png"} <= files
    assert "checkpoint.pt" not in files
    # The refusals run in-process (the same Typer app and error boundary), which spares a start-up each.
    again = in_process("--config", str(LM), *sets, "--output", str(run))
    assert again.exit_code == 1 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    finished = in_process("--resume", str(run))
    assert finished.exit_code == 1 and "already finished" in finished.stderr
    assert "train.epochs" not in finished.stderr  # an LM run keeps no final_state.pt: more epochs cannot continue it
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    bad = in_process("--config", str(LM), *sets, "--set", f"lm.source={empty}", "--output", str(tmp_path / "nothing"))
    assert bad.exit_code == 1 and bad.stderr.startswith("Error:") and "empty" in bad.stderr
    assert not (tmp_path / "nothing").exists()


def test_corpus_reads_a_text_file_or_a_data_file_s_text_column(tmp_path):
    text, table = tmp_path / "reviews.txt", tmp_path / "reviews.csv"
    text.write_text("a fine film\n\nbad acting\n", encoding="utf-8")
    table.write_text('review,stars\n"a fine film",5\n"bad acting",1\n', encoding="utf-8")
    assert sorted(lm_data.corpus_documents(tiny_config(f"lm.source={text}"))) == ["a fine film", "bad acting"]
    docs = lm_data.corpus_documents(tiny_config(f"lm.source={table}", "data.text_column=review"))
    assert sorted(docs) == ["a fine film", "bad acting"]


def test_default_corpus_is_training_rows_only():
    from sentiment_rnn.config import DataConfig
    from sentiment_rnn.data import load_splits

    config = tiny_config()
    held = load_splits(DataConfig(source="rotten_tomatoes", limit=400), config.seed)
    docs = set(lm_data.corpus_documents(config))
    assert docs and not docs & (set(held.validation["text"]) | set(held.test["text"]))


def test_the_removed_autoencoder_objective_is_a_one_line_error_naming_the_removal_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from sentiment_rnn.cli import app

    result = CliRunner().invoke(app, ["pretrain-lm", "--config", str(LM), "--set", "lm.objective=autoencoder",
                                      "--output", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: --set lm.objective=autoencoder"), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "lm.objective was removed" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("user, treebank", [("i don't like it", "i do n't like it"),
                                             ("it can’t be bad , it's fun", "it ca n't be bad , it 's fun")])
def test_split_contractions_reads_a_users_dont_as_the_treebank_writes_it(user, treebank):
    """tokenizer.split_contractions (configs/sst2.yaml): SST-2 and GloVe write "do n't"; a user writes "don't"."""
    from sentiment_rnn.tokenizer import untrained_tokenizer

    def pieces(tok, text):
        return [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]

    split = untrained_tokenizer(TokenizerConfig(split_contractions=True))
    assert pieces(split, user) == pieces(split, treebank) == treebank.split()
    plain = untrained_tokenizer(TokenizerConfig())
    assert pieces(plain, user) != pieces(plain, treebank)  # the default splits at every apostrophe


def test_resume_refuses_a_changed_corpus_and_overwrite_replaces_the_run(tmp_path):
    corpus, run = tmp_path / "corpus.txt", tmp_path / "lm"
    lines = [f"the {w} film was {v} and the cast was {w} too" for w in ("long", "short", "odd") for v in
             ("great", "dull", "fine", "bad")] * 20
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tiny_config(f"lm.source={corpus}", "lm.held_out=0.1", "train.checkpoint_every=1")
    with pytest.raises(TrainingInterrupted):
        pretrain_lm(config, run, InterruptAt(2))
    corpus.write_text("\n".join([*lines, "one more review was added"]) + "\n", encoding="utf-8")
    with pytest.raises(SentimentRNNError, match=f"the corpus of '{run}' changed since pretraining started"):
        pretrain_lm(config, run, resume=True)
    assert (run / rundir.CHECKPOINT).is_file() and not rundir.is_complete(run)  # still resumable

    (run / "notes.txt").write_text("left by hand")
    pretrain_lm(config, run, overwrite=True)
    assert rundir.is_complete(run) and not (run / rundir.CHECKPOINT).exists() and not (run / "notes.txt").exists()
    record = json.loads((run / "corpus.json").read_text())
    assert record["documents"] + record["held_out_documents"] == len(lines) + 1  # the new corpus, every line of it


def test_a_checkpoint_in_the_earlier_pretrain_lm_format_is_a_one_line_error_saying_how_to_go_on(tmp_path):
    from sentiment_rnn import checkpoint

    path = tmp_path / rundir.CHECKPOINT
    torch.save({"format": "lm-1", "model": {}, "optimizer": {}, "progress": {}, "rng": {}, "hidden": []}, path)
    with pytest.raises(SentimentRNNError, match="written by an earlier pretrain-lm.*start the run again with "
                                                "--overwrite") as err:
        checkpoint.read(path)
    assert "\n" not in str(err.value)


def test_pretrain_lm_with_more_threads_than_cores_says_so(tmp_path):
    import torch

    from sentiment_rnn import runtime

    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")  # fails after the note, before any data is read
    threads, before = runtime.usable_cores() + 1, torch.get_num_threads()
    sets = [arg for item in [*TINY, f"train.threads={threads}", f"lm.source={empty}"] for arg in ("--set", item)]
    try:
        result = in_process("--config", str(LM), *sets, "--output", str(tmp_path / "lm"))
    finally:
        torch.set_num_threads(before)
    assert f"Note: train.threads={threads} is more than the {threads - 1} core(s)" in " ".join(result.stdout.split())
