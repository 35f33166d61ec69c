"""What `train()` records adds up: per-step losses to the epoch's, early stopping to the history, the kept
epoch's weights to the test score, and the run directory to what the loop did.

Seconds per training on a 120-row file, in-process, so mutation testing (scripts/mutate.py train) can run
them against every mutant of sentiment_rnn/train.py.
"""

import json
import math
import shutil
import time

import pytest
import torch

from sentiment_rnn import checkpoint, rundir
from sentiment_rnn.checkpoint import Progress, Reporter
from sentiment_rnn.config import Config, LMRunConfig
from sentiment_rnn.data import describe_splits
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.evaluate import evaluate_run
from sentiment_rnn.plots import plot_gradient_norms
from sentiment_rnn.runtime import default_threads
from sentiment_rnn.train import keep_if_best, on_epoch_start, setup_model, train

STEPS = 6  # 96 training rows (the 80% share of 120) in batches of 16: every batch full


class Recorder(Reporter):
    """The loop's progress hooks, kept: (epoch, epochs, steps) per epoch start, and each step's report."""

    def __init__(self):
        self.stages, self.starts, self.steps, self.ends = [], [], [], []

    def stage(self, text: str) -> None:
        self.stages.append(text)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.starts.append((epoch, epochs, steps))
        self.steps.append([])

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        self.steps[-1].append((loss, tokens, accuracy))

    def epoch_end(self, record: dict) -> None:
        self.ends.append(record)


def config(path, model: dict | None = None, **train_keys) -> Config:
    return Config.model_validate({
        "name": "loop", "data": {"source": str(path), "max_length": 12}, "tokenizer": {"min_frequency": 1},
        "model": {"cell": "gru", "hidden_size": 8, "embedding_dim": 8, **(model or {})},
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.05, "patience": 1, "threads": 1, "device": "cpu",
                  **train_keys}})


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """120 sentences whose label is carried by one word among four, at a random place; one label in five flipped,
    so validation stops improving after a few epochs."""
    gen = torch.Generator().manual_seed(0)
    lines = []
    for i in range(120):
        words = [f"w{int(k)}" for k in torch.randint(0, 30, (int(torch.randint(2, 9, (1,), generator=gen)),),
                                                      generator=gen)]
        words.insert(int(torch.randint(0, len(words), (1,), generator=gen)), ["dull", "great", "awful", "fine"][i % 4])
        lines.append(f"{' '.join(words)},{(i + (i % 5 == 0)) % 2}\n")
    path = tmp_path_factory.mktemp("loop") / "reviews.csv"
    path.write_text("text,label\n" + "".join(lines))
    return path


@pytest.fixture  # one training per test: mutation testing counts a test as covering what its own setup called
def run(reviews, tmp_path):
    recorder = Recorder()
    out = tmp_path / "run"
    started = time.perf_counter()
    metrics = train(config(reviews), out, reporter=recorder)
    recorder.wall = time.perf_counter() - started
    return metrics, recorder, out


def test_each_epochs_record_is_the_sum_of_its_steps(run):
    metrics, recorder, _ = run
    history = metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert recorder.starts == [(h["epoch"], 6, STEPS) for h in history]
    assert recorder.ends == history
    split = json.loads((run[2] / rundir.SPLIT).read_text())
    assert recorder.stages == ["Loading data", describe_splits(split), "Training tokenizer", "Tokenizing",
                               "Scoring the test split"]
    for h, steps in zip(history, recorder.steps, strict=True):
        losses, tokens, accuracy = zip(*steps, strict=True)
        assert h["train_loss"] == pytest.approx(sum(losses) / STEPS)  # full batches: each weighs the same
        assert h["train_accuracy"] == accuracy[-1]
        assert h["tokens_per_s"] * h["seconds"] == pytest.approx(tokens[-1])
        assert tokens[-1] == tokens[0] * STEPS or tokens[-1] > tokens[0]  # counted over the epoch, not reset
        assert tokens[-1] == recorder.steps[0][-1][1]  # every epoch reads every training token once
    assert metrics["train_seconds"] == pytest.approx(sum(h["seconds"] for h in history))
    assert metrics["train_seconds"] < recorder.wall
    seen = [0, *(tokens for _, tokens, _ in recorder.steps[0])]  # running count over the first epoch
    batch_tokens = [seen[i + 1] - seen[i] for i in range(STEPS)]
    assert batch_tokens != sorted(batch_tokens)  # shuffled buckets, not the length-sorted order
    total = sum(h["tokens_per_s"] * h["seconds"] for h in history)
    assert metrics["tokens_per_s"] == pytest.approx(total / metrics["train_seconds"])
    norms = metrics["grad_norm_per_step"]
    assert len(norms) == STEPS * len(history) and all(math.isfinite(n) and n > 0 for n in norms)
    assert [p["epoch"] for p in metrics["grad_through_time"]] == [1] and metrics["grad_through_time"][0]["norms"]


def test_early_stopping_keeps_the_best_validation_epoch_and_stops_after_patience(run):
    metrics, _, _ = run
    history, best, stale = metrics["history"], (-1.0, -math.inf), 0
    for h in history:
        score = (h["val_accuracy"], -h["val_loss"])
        assert h["best"] == (score > best)
        best, stale = (max(score, best), 0 if h["best"] else stale + 1)
    assert stale == 1 and len(history) < 6  # patience 1: the first epoch without gain is the last
    kept = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert metrics["best_epoch"] == kept["epoch"] < len(history)
    assert metrics["validation"] == {"accuracy": kept["val_accuracy"], "loss": kept["val_loss"]}


def test_patience_counts_the_epochs_without_gain_since_the_last_one(reviews, tmp_path):
    history = train(config(reviews, epochs=12, patience=2), tmp_path / "run")["history"]
    gains = [h["best"] for h in history]
    assert gains[-2:] == [False, False] and len(history) < 12  # the second epoch in a row without gain is the last
    assert [False, False] not in [gains[i:i + 2] for i in range(len(gains) - 2)]  # and no earlier such pair


def test_the_saved_weights_are_the_kept_epochs_and_score_the_recorded_test_metrics(run):
    metrics, _, out = run
    validation = evaluate_run(out, split="validation")
    assert validation["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])
    assert validation["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-5)
    test = evaluate_run(out)
    assert {k: test[k] for k in metrics["test"]} == metrics["test"]


def test_the_run_directory_holds_what_rebuilds_and_audits_the_run(run, reviews, tmp_path):
    metrics, _, out = run
    plot_gradient_norms(metrics["grad_through_time"], tmp_path / "titled.png", "loop: gru")  # config name: cell
    assert (out / rundir.GRADIENTS).read_bytes() == (tmp_path / "titled.png").read_bytes()
    assert json.loads((out / rundir.METRICS).read_text()) == metrics
    assert not (out / rundir.CHECKPOINT).exists() and (out / "final_state.pt").is_file()
    assert (out / rundir.CURVES).is_file() and (out / rundir.GRADIENTS).is_file()
    assert rundir.read_config(out) == config(reviews)
    split = json.loads((out / rundir.SPLIT).read_text())
    assert metrics["sizes"] == split["sizes"] == {"train": 96, "validation": 12, "test": 12}
    loaded = rundir.load_run(out)
    assert {k: loaded.meta[k] for k in ("label_names", "vocab_size", "max_length", "model_kind", "init_from")} == {
        "label_names": ["0", "1"], "vocab_size": loaded.tokenizer.get_vocab_size(), "max_length": 12,
        "model_kind": "rnn", "init_from": None}
    assert loaded.tokenizer.get_vocab_size() == 36  # [PAD], [UNK], w0..w29 and the four label words
    assert metrics["parameters"]["total"] == sum(p.numel() for p in loaded.model.parameters())
    assert (metrics["device"], metrics["threads"], metrics["world_size"]) == ("cpu", 1, 1)
    assert metrics["class_weights"] is None and metrics["embedding_coverage"] is None


def test_max_steps_cuts_every_epoch_and_class_weights_reach_the_metrics(reviews, tmp_path):
    recorder = Recorder()
    metrics = train(config(reviews, epochs=2, patience=2, max_steps=2, class_weights=[1, 3], grad_probe_epochs=[]),
                    tmp_path / "run", reporter=recorder)
    assert recorder.starts == [(1, 2, 2), (2, 2, 2)] and [len(s) for s in recorder.steps] == [2, 2]
    assert len(metrics["grad_norm_per_step"]) == 4 and metrics["grad_through_time"] == []
    assert metrics["class_weights"] == [1.0, 3.0]
    assert not (tmp_path / "run" / rundir.GRADIENTS).exists()


def test_the_same_config_trains_the_same_run_whatever_ran_before_and_overwrite_replaces_a_run(reviews, run, tmp_path):
    metrics, _, out = run
    again = shutil.copytree(out, tmp_path / "again")
    (again / "stale.txt").write_text("from an older run")
    with pytest.raises(SentimentRNNError, match="already exists"):
        train(config(reviews), again)
    torch.manual_seed(123)  # global generators moved: the run seeds its own
    torch.rand(7)
    retrained = train(config(reviews), again, overwrite=True)
    assert not (again / "stale.txt").exists()
    drop = ("seconds", "tokens_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in retrained["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in metrics["history"]]
    assert retrained["grad_norm_per_step"] == metrics["grad_norm_per_step"] and retrained["test"] == metrics["test"]
    assert (again / rundir.WEIGHTS).read_bytes() == (out / rundir.WEIGHTS).read_bytes()


def test_a_finished_run_continued_with_more_epochs_is_the_longer_run(reviews, tmp_path):
    short, longer = config(reviews, epochs=2, patience=5), config(reviews, epochs=3, patience=5)
    train(short, tmp_path / "continued")
    recorder = Recorder()
    continued = train(longer, tmp_path / "continued", reporter=recorder, resume=True)
    whole = train(longer, tmp_path / "whole")
    assert [s for s in recorder.stages if s.startswith("Resuming")] == [
        f"Resuming from {tmp_path / 'continued' / rundir.CHECKPOINT}"]
    assert "Continuing the finished run with epoch 3" in recorder.stages
    assert recorder.starts == [(3, 3, STEPS)]  # only the new epoch trains
    drop = ("seconds", "tokens_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in continued["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in whole["history"]]
    assert continued["test"] == whole["test"] and continued["grad_norm_per_step"] == whole["grad_norm_per_step"]
    assert not (tmp_path / "continued" / rundir.CHECKPOINT).exists()


def glove(path, words: dict[str, list[float]]):
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items()))
    return path


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_vectors_start_the_embedding_and_a_frozen_one_stays_through_gradual_unfreezing(reviews, tmp_path,
                                                                                                  freeze):
    vectors = {w: [round(0.1 * k + 0.01 * j, 2) for j in range(8)] for k, w in enumerate(["great", "dull", "w3"])}
    path = glove(tmp_path / "vectors.txt", vectors)
    embedding = {"pretrained": str(path), "freeze": freeze}
    cfg = config(reviews, {"embedding": embedding}, epochs=3, patience=5, max_steps=2, unfreeze=1)
    metrics = train(cfg, tmp_path / "run")
    assert metrics["embedding_coverage"] == pytest.approx(3 / 34)  # of the 34 words besides [PAD] and [UNK]
    loaded = rundir.load_run(tmp_path / "run")
    rows = loaded.model.embedding.weight[[loaded.tokenizer.token_to_id(w) for w in vectors]]  # [3, E]
    # epoch 3 opens the embedding's layer group: only a frozen embedding keeps the vectors as they were
    assert torch.allclose(rows, torch.tensor(list(vectors.values()))) == freeze


def test_a_missing_vectors_file_or_an_unknown_tracker_fails_before_anything_is_written(reviews, tmp_path):
    with pytest.raises(SentimentRNNError, match="model.embedding.pretrained '.*missing.txt' not found"):
        train(config(reviews, {"embedding": {"pretrained": str(tmp_path / "missing.txt")}}), tmp_path / "run")
    with pytest.raises(SentimentRNNError, match=r"'glove-6b-100d' not found: it is neither a file nor a named set "
                                                r"\(glove-6b-50d\); name one"):
        train(config(reviews, {"embedding": {"pretrained": "glove-6b-100d"}}), tmp_path / "run")
    with pytest.raises(SentimentRNNError, match="glove-6b-50d has 50 dimensions but model.embedding_dim is 8"):
        train(config(reviews, {"embedding": {"pretrained": "glove-6b-50d"}}), tmp_path / "run")
    with pytest.raises(SentimentRNNError, match="unknown --report-to 'wandb'"):
        train(config(reviews), tmp_path / "run", report_to="wandb")
    assert not (tmp_path / "run").exists()


def test_report_to_tensorboard_writes_each_steps_loss_gradient_norm_and_scheduled_rate(reviews, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recorder = Recorder()
    cfg = config(reviews, epochs=1, max_steps=4, schedule="warmup_linear", warmup_steps=3)
    metrics = train(cfg, tmp_path / "run", reporter=recorder, report_to="tensorboard")
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    tags = ("step/loss", "step/grad_norm", "step/lr")
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}
    assert scalars["step/loss"] == [(k, pytest.approx(loss)) for k, (loss, _, _) in enumerate(recorder.steps[0], 1)]
    assert [v for _, v in scalars["step/grad_norm"]] == pytest.approx(metrics["grad_norm_per_step"], rel=1e-4)
    # the rate after each step: linear warm-up over 3 steps, then down to zero at the 4th and last
    assert [v for _, v in scalars["step/lr"]] == pytest.approx([0.025, 0.0375, 0.05, 0.0])


class Crash(Recorder):
    """Fails at the given step report, as a kill would: after that step's update, before its checkpoint."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.count = at, 0

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        super().step(loss, tokens, accuracy)
        self.count += 1
        if self.count == self.at:
            raise KeyboardInterrupt


def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint_to_the_uninterrupted_runs_result(reviews, tmp_path):
    cfg = config(reviews, epochs=2, patience=5, checkpoint_every=2, schedule="warmup_linear", warmup_steps=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", reporter=Crash(at=3))
    saved = checkpoint.read(tmp_path / "run" / rundir.CHECKPOINT)
    assert saved["progress"]["batches_done"] == 2 and saved["scheduler"]["last_epoch"] == 2
    saved["progress"]["seconds"] = 3600.0  # as if its first two steps had taken an hour: the epoch's time counts them
    torch.save(saved, tmp_path / "run" / rundir.CHECKPOINT)
    recorder = Recorder()
    resumed = train(cfg, tmp_path / "run", reporter=recorder, resume=True)
    whole = train(cfg, tmp_path / "whole")
    assert recorder.starts == [(1, 2, STEPS - 2), (2, 2, STEPS)]  # the first epoch's last four steps, then all
    drop = ("seconds", "tokens_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in whole["history"]]
    assert resumed["grad_norm_per_step"] == whole["grad_norm_per_step"] and resumed["test"] == whole["test"]
    assert (tmp_path / "run" / rundir.WEIGHTS).read_bytes() == (tmp_path / "whole" / rundir.WEIGHTS).read_bytes()
    first, second = (h["seconds"] for h in resumed["history"])
    assert 3600 < first < 3600 + 10 * whole["train_seconds"] and 0 < second < 10 * whole["train_seconds"]
    assert resumed["train_seconds"] == pytest.approx(first + second)


def test_a_non_finite_loss_names_its_step_and_leaves_nothing_behind(reviews, tmp_path):
    cfg = config(reviews, class_weights=[1, 1e39])  # inf in float32: the very first loss is not finite
    with pytest.raises(SentimentRNNError) as error:
        train(cfg, tmp_path / "run")
    assert str(error.value) == ("loss became nan at epoch 1 step 1, before the first checkpoint; lower train.lr "
                                "(now 0.05) or set a smaller train.clip_grad_norm (now 1.0) and train again")
    assert not (tmp_path / "run").exists()


def test_gradient_clipping_changes_the_training_and_none_turns_it_off(reviews, tmp_path):
    weights = {}
    for clip in (1e-4, None):
        metrics = train(config(reviews, epochs=1, max_steps=3, clip_grad_norm=clip), tmp_path / str(clip))
        weights[clip] = (tmp_path / str(clip) / rundir.WEIGHTS).read_bytes()
        assert all(n > 1e-4 for n in metrics["grad_norm_per_step"])  # recorded before clipping
    assert weights[1e-4] != weights[None]


def test_init_from_a_run_reuses_its_tokenizer_and_starts_from_its_embedding_and_encoder(run, reviews, tmp_path):
    _, _, source = run
    recorder = Recorder()
    cfg = config(reviews, {"init_from": str(source)}, epochs=1, max_steps=1, lr=1e-9)  # one step that moves nothing
    train(cfg, tmp_path / "tuned", reporter=recorder)
    assert f"Reusing the tokenizer of {source.resolve()}" in recorder.stages
    before, after = rundir.load_run(source), rundir.load_run(tmp_path / "tuned")
    assert after.tokenizer.to_str() == before.tokenizer.to_str()
    assert after.meta["init_from"] == {"path": str(source.resolve()), "weights_sha256": before.meta["weights_sha256"]}
    theirs, ours = before.model.state_dict(), after.model.state_dict()
    shared = [k for k in ours if k.startswith(("embedding.", "encoder."))]
    assert shared and all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in shared)


def test_resuming_refuses_data_that_changed_since_the_run_started(reviews, tmp_path):
    data = shutil.copy(reviews, tmp_path / "reviews.csv")
    cfg = config(data, epochs=1, max_steps=1)
    train(cfg, tmp_path / "run")
    checkpoint.reopen(tmp_path / "run")  # unfinished again: the next train(resume=True) continues it
    data.write_text(data.read_text() + "".join(f"w{i} great,1\nw{i} dull,0\n" for i in range(10)))  # 20 more rows
    with pytest.raises(SentimentRNNError, match="changed since training started"):
        train(cfg, tmp_path / "run", resume=True)


def test_the_per_word_baseline_trains_through_the_same_loop_with_the_configured_threads(reviews, tmp_path):
    threads, before = (2 if default_threads() == 1 else 1), torch.get_num_threads()  # not the default's number
    try:
        metrics = train(config(reviews, {"kind": "per_word_linear"}, epochs=1, max_steps=2, threads=threads),
                        tmp_path / "run")
    finally:
        torch.set_num_threads(before)
    loaded = rundir.load_run(tmp_path / "run")
    assert loaded.meta["model_kind"] == "per_word_linear" and len(metrics["grad_norm_per_step"]) == 2
    assert metrics["threads"] == threads


def test_a_frozen_pretrained_embedding_stays_out_of_the_gradients_when_its_layer_group_opens(reviews):
    # Left to gradual unfreezing, it would get gradients: no update (the optimizer never held it), but its norm
    # would join the recorded gradient norms and the clipping of every other parameter.
    cfg = config(reviews, {"embedding": {"pretrained": "vectors.txt", "freeze": True}}, unfreeze=1)
    model = setup_model(cfg, vocab_size=36, num_classes=2, device=torch.device("cpu"))
    for epoch in (1, 3):
        on_epoch_start(model, epoch, cfg)
    assert not model.embedding.weight.requires_grad
    assert all(p.requires_grad for p in [*model.encoder.parameters(), *model.head.parameters()])


def test_training_accuracy_counts_the_training_rows_the_model_classifies_right(reviews, tmp_path):
    # lr 1e-9: the weights the epoch trained with are the saved ones, so the training rows' correct answers are
    # the whole file's less the validation and test rows'
    metrics = train(config(reviews, epochs=1, lr=1e-9), tmp_path / "run")
    whole = evaluate_run(tmp_path / "run", source=str(reviews))
    held_out = 12 * metrics["validation"]["accuracy"] + 12 * metrics["test"]["accuracy"]
    correct = 96 * metrics["history"][0]["train_accuracy"]
    assert round(correct) == round(120 * whole["accuracy"] - held_out) and correct != 48  # 48: right == wrong


def test_train_bucket_pool_sets_how_many_batches_are_sorted_by_length_together(reviews, run, tmp_path):
    recorder = Recorder()
    train(config(reviews, epochs=1, bucket_pool=1), tmp_path / "pool", reporter=recorder)

    def batch_tokens(steps):
        seen = [0, *(tokens for _, tokens, _ in steps)]
        return sorted(seen[i + 1] - seen[i] for i in range(STEPS))

    # the default pool holds all 96 rows: whatever the seed, its batches are the same length-sorted sixths
    assert batch_tokens(recorder.steps[0]) != batch_tokens(run[1].steps[0])


def test_a_later_epoch_that_only_ties_the_best_validation_score_is_not_kept():
    model, progress = torch.nn.Linear(2, 2), Progress()
    assert keep_if_best(progress, model, {"accuracy": 0.75, "loss": 0.5}, epoch=1)
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not keep_if_best(progress, model, {"accuracy": 0.75, "loss": 0.5}, epoch=2)
    assert (progress.best["epoch"], progress.stale) == (1, 1) and torch.equal(progress.best["state"]["weight"], kept)


def test_config_yaml_holds_a_classifiers_keys_only_even_from_a_pretrain_lm_config(reviews, tmp_path):
    cfg = LMRunConfig.model_validate({**config(reviews, epochs=1, max_steps=1).model_dump(), "lm": {"bptt": 20}})
    train(cfg, tmp_path / "run")
    import yaml

    assert set(yaml.safe_load((tmp_path / "run" / rundir.CONFIG).read_text())) == set(Config.model_fields)


def test_the_gradient_probe_reads_the_longest_validation_sentences_among_several_batches(tmp_path):
    # 264 validation rows, two batches of 256 and 8; one row in fifty is 20 words long, the others 2 or 3:
    # the long ones are all in the batch of 8
    lines = [f"{' '.join(f'w{(i + k) % 30}' for k in range(20 if i % 50 == 0 else 2 + i % 2))},{i % 2}\n"
             for i in range(330)]
    path = tmp_path / "long.csv"
    path.write_text("text,label\n" + "".join(lines))
    raw = config(path, epochs=1, max_steps=1).model_dump()
    cfg = Config.model_validate({**raw, "data": {**raw["data"], "split": [0.1, 0.8, 0.1], "max_length": 24}})
    metrics = train(cfg, tmp_path / "run")
    assert metrics["sizes"]["validation"] == 264
    assert len(metrics["grad_through_time"][0]["norms"]) == 20  # steps back from the last token of the longest
