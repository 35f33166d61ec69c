"""`sentiment-rnn pretrain-lm`: train the classifier's embedding and encoder as a next-word language model.

Reads top to bottom: config -> corpus -> tokenizer -> batches -> model -> optimizer -> explicit loop ->
save. The run scaffold is train's: the output checks and run writer (rundir.py), the progress object,
checkpoints and reporter hooks (checkpoint.py), the optimizer and schedule (optim.py); the loop is its own,
since it carries the hidden state across segments. The optimizer, epochs, batch size, threads and
checkpointing are the train.* keys; corpus and batching are lm.* (config.py). Held-out perplexity is scored
every epoch on lm.held_out of the corpus's own training documents, never on a classifier's validation or
test rows.

Run directory: config.yaml, tokenizer.json, corpus.json (what was read, checked on --resume), then at the
end model.safetensors (embedding.*, encoder.*, head.*), meta.json, curves.png and metrics.json last;
checkpoint.pt while training. A resume restores model, optimizer, schedule, RNG and the carried hidden
state, so it ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn import checkpoint, optim, rundir, runtime
from sentiment_rnn.checkpoint import Progress, Reporter
from sentiment_rnn.config import Config, dump_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.finetune import InitSource, read_init_source
from sentiment_rnn.lm import data as lm_data
from sentiment_rnn.lm.model import build_language_model, check_model_config, detach
from sentiment_rnn.lm.tokenizer import train_lm_tokenizer
from sentiment_rnn.tokenizer import load_tokenizer

CORPUS = rundir.CORPUS


class LMInterrupted(TrainingInterrupted):
    """Ctrl-C stopped pretraining after a checkpoint; the message gives the pretrain-lm resume command."""

    def __init__(self, run, epoch: int, batches_done: int):
        super().__init__(run, epoch, batches_done)
        self.resume_command = f"sentiment-rnn pretrain-lm --resume {shlex.quote(str(run))}"
        Exception.__init__(self, f"pretraining stopped at epoch {epoch} after {batches_done} batches; checkpoint "
                                 f"saved. Resume with: {self.resume_command}")


@dataclass
class Parts:
    """What the loop works with, each built by its own setup function in _pretrain_into."""

    config: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # train.schedule's torch.optim.lr_scheduler, stepped per batch, or None
    batches: object  # lm.data.StreamBatches or WindowBatches
    held: object  # the held-out batches
    output: Path
    reporter: Reporter

    @property
    def checkpoint_path(self) -> Path:
        return self.output / rundir.CHECKPOINT


def read_lm_source(config: Config) -> InitSource | None:
    """model.init_from for pretrain-lm: a language model to continue (ULMFiT's second step, the LM fine-tuned
    on the target task's own text), checked as train checks it; it must have an output softmax."""
    source = read_init_source(config)
    if source is None:
        return None
    if not source.lm_softmax:
        raise SentimentRNNError(f"model.init_from '{config.model.init_from}' is a classifier run; pretrain-lm "
                                "continues a pretrain-lm run (it needs that run's output softmax)")
    # A sequence-autoencoder run (lm.objective: autoencoder, removed) has a softmax trained on its decoder's
    # states: continuing it as a language model would start from a head trained for another input.
    if rundir.read_json(source.path / rundir.META).get("objective", "next_word") != "next_word":
        raise SentimentRNNError(f"model.init_from '{config.model.init_from}' is a sequence-autoencoder run (removed); "
                                "pretrain-lm continues language models only: start a new one (train's "
                                "model.init_from still starts a classifier from it)")
    return source


@torch.no_grad()
def held_out_loss(model: nn.Module, batches) -> float:
    """Mean per-token loss over the held-out batches (lm.data.held_out_batches): next-word loss over the
    stream, state carried across segments."""
    model.eval()
    total, count, hidden = 0.0, 0, None
    for index in range(len(batches)):
        inputs, targets = batches.batch(index, 0)  # [T, B] each
        loss, n, hidden = model.loss(inputs, targets, hidden if batches.carries_state else None)
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / count


def finish_epoch(p: Progress, seconds: float, val_loss: float) -> dict:
    """The epoch's record (losses, perplexities, speed), appended to the history."""
    train_loss = p.loss_sum / max(1, p.tokens)
    record = {"epoch": p.epoch, "train_loss": train_loss, "train_perplexity": math.exp(train_loss),
              "held_out_loss": val_loss, "held_out_perplexity": math.exp(val_loss), "steps": p.batches_done,
              "tokens": p.tokens, "seconds": seconds, "tokens_per_s": p.tokens / seconds}
    p.history.append(record)
    p.train_seconds, p.train_tokens = p.train_seconds + seconds, p.train_tokens + p.tokens
    return record


def prepare_data(config: Config, output: Path, resume: bool, reporter: Reporter, source: InitSource | None = None):
    """Corpus -> tokenizer (model.init_from's, when continuing a language model) -> encoded training batches
    and held-out batches, and the corpus record."""
    reporter.stage("Reading the corpus")
    train_docs, held_docs = lm_data.split_held_out(lm_data.corpus_documents(config), config.lm.held_out)
    if resume:
        tokenizer = load_tokenizer(output / rundir.TOKENIZER)
    elif source is not None:
        reporter.stage(f"Reusing the tokenizer of {source.path}")
        tokenizer = load_tokenizer(source.path / rundir.TOKENIZER)
    else:
        reporter.stage(f"Training the tokenizer on {len(train_docs):,} documents")
        tokenizer = train_lm_tokenizer(train_docs, config.tokenizer)
    reporter.stage("Tokenizing")
    encoded = lm_data.encode_documents(tokenizer, train_docs)
    batches = lm_data.training_batches(encoded, config)
    held_encoded = lm_data.encode_documents(tokenizer, held_docs)
    held, held_ids = lm_data.held_out_batches(held_encoded, config), lm_data.stream(held_encoded)
    train_ids = lm_data.stream(encoded)
    record = {"source": config.lm.source, "corpora": list(config.lm.corpora), "seed": config.seed,
              "split": list(config.data.split), "documents": len(train_docs), "held_out_documents": len(held_docs),
              "tokens": int(train_ids.numel()), "held_out_tokens": int(held_ids.numel()),
              "sha256": lm_data.digest(train_ids), "held_out_sha256": lm_data.digest(held_ids)}
    if resume and rundir.read_json(output / CORPUS) != record:
        raise SentimentRNNError(f"the corpus of '{output}' changed since pretraining started ({CORPUS} no longer "
                                "matches); restore it or start again with --overwrite")
    return tokenizer, batches, held, record


def pretrain_lm(config: Config, output: Path, reporter: Reporter | None = None, overwrite: bool = False,
                resume: bool = False) -> dict:
    """Pretrain and save a language-model run; returns metrics.json's content.

    A run that fails never looks complete (metrics.json is written last); its directory is kept if it has
    a checkpoint to resume from, removed otherwise.
    """
    reporter = reporter or Reporter()
    output = Path(output)
    check_model_config(config.model)
    if resume:
        checkpoint.check_resumable(output)
    else:
        rundir.check_output(output, overwrite)
    threads = runtime.configure_threads(config.train.threads)
    checkpoint.seed_everything(config.seed)
    if note := runtime.oversubscribed(config.train.threads):
        reporter.stage(note)
    source = read_lm_source(config)
    tokenizer, batches, held, record = prepare_data(config, output, resume, reporter, source)
    replaced = None if resume else rundir.prepare_output(output, overwrite)
    try:
        if not resume:
            rundir.atomic_write(output / rundir.CONFIG, dump_config(config))
            rundir.atomic_write(output / rundir.TOKENIZER, tokenizer.to_str())
            rundir.write_json(output / CORPUS, record)
        return _pretrain_into(config, output, tokenizer, batches, held, record, threads, reporter, resume, source)
    except BaseException:
        if not rundir.is_complete(output) and not (output / rundir.CHECKPOINT).is_file():
            shutil.rmtree(output, ignore_errors=True)  # failed before its first checkpoint: nothing to resume
        raise
    finally:
        rundir.settle_replaced(replaced, output)  # the run it replaced comes back if it left nothing


def setup_model(config: Config, vocab_size: int, source: InitSource | None) -> nn.Module:
    """The language model, freshly seeded, or continuing model.init_from's run with every one of its tensors."""
    checkpoint.seed_everything(config.seed)
    model = build_language_model(config.model, config.lm, vocab_size)
    if source is not None:
        try:
            model.load_state_dict({**source.state, **source.lm_softmax})  # every tensor: strict
        except RuntimeError:
            raise SentimentRNNError(f"model.init_from '{source.path}' has another output softmax; give lm.cutoffs "
                                    "and lm.div_value the values of its config.yaml") from None
    return model


def steps_per_epoch(batches, cfg) -> int:
    return min(len(batches), cfg.max_steps or len(batches))


def _pretrain_into(config: Config, output: Path, tokenizer, batches, held, record: dict,
                   threads: int, reporter: Reporter, resume: bool, source: InitSource | None) -> dict:
    model = setup_model(config, tokenizer.get_vocab_size(), source)
    optimizer = optim.build_optimizer(model, config.train)
    scheduler = optim.build_scheduler(optimizer, config.train, steps_per_epoch(batches, config.train))
    parts = Parts(config, model, optimizer, scheduler, batches, held, output, reporter)
    progress, hidden = Progress(), None
    if resume:
        reporter.stage(f"Resuming from {parts.checkpoint_path}")
        progress, hidden = checkpoint.load(parts.checkpoint_path, model, optimizer, config.train.lr, scheduler)
    model.train()
    progress = train_epochs(parts, progress, hidden)
    metrics = {"history": progress.history, "held_out_perplexity": progress.history[-1]["held_out_perplexity"],
               "train_seconds": progress.train_seconds,
               "tokens_per_s": progress.train_tokens / max(progress.train_seconds, 1e-9),
               "parameters": sum(t.numel() for t in model.parameters()), "threads": threads,
               "corpus": record, "loss_per_step": progress.losses}
    save_run(output, model, tokenizer, config, metrics, source)
    parts.checkpoint_path.unlink(missing_ok=True)  # the run is complete: the checkpoint has served
    return metrics


def train_epochs(parts: Parts, p: Progress, hidden) -> Progress:
    """The loop: one truncated-BPTT step per batch, held-out perplexity after each epoch, a checkpoint after
    every train.checkpoint_every steps and each epoch (with the carried state, so a resume is exact)."""
    cfg, time_limit = parts.config.train, parts.config.lm.time_limit_s
    with checkpoint.StopOnInterrupt() as interrupt:
        while p.epoch <= cfg.epochs:
            steps = steps_per_epoch(parts.batches, cfg)
            parts.reporter.epoch_start(p.epoch, cfg.epochs, steps - p.batches_done)
            start = time.perf_counter() - p.seconds
            for index in range(p.batches_done, steps):
                hidden = train_step(parts, p, index, hidden)
                if p.batches_done >= steps or (time_limit and time.perf_counter() - start >= time_limit):
                    break  # the end-of-epoch checkpoint below covers the last step
                if interrupt.requested or checkpoint.due(cfg, p):
                    p.seconds = time.perf_counter() - start
                    save_checkpoint(parts, p, hidden)
                    if interrupt.requested:
                        raise LMInterrupted(parts.output, p.epoch, p.batches_done)
            held_out = held_out_loss(parts.model, parts.held)
            parts.reporter.epoch_end(finish_epoch(p, time.perf_counter() - start, held_out))
            p.next_epoch()
            hidden = None  # each epoch reads the stream from its start
            save_checkpoint(parts, p, hidden)
            if interrupt.requested:
                raise LMInterrupted(parts.output, p.epoch, 0)
    return p


def train_step(parts: Parts, p: Progress, index: int, hidden):
    """Forward, loss, backward, clip, step on batch `index`; returns the state to carry into the next one."""
    inputs, targets = parts.batches.batch(index, p.epoch)  # [T, B] each
    # Truncated BPTT: the state flows on into this segment, its gradient stops at the boundary.
    carried = detach(hidden) if parts.batches.carries_state and hidden is not None else None
    loss, n, hidden = parts.model.loss(inputs, targets, carried)
    if not torch.isfinite(loss):
        raise checkpoint.non_finite_loss(loss.item(), p.epoch, index + 1, parts.config.train,
                                         parts.checkpoint_path, "pretrain-lm")
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Gradients through time can explode: clip their global norm.
    nn.utils.clip_grad_norm_(parts.model.parameters(), parts.config.train.clip_grad_norm or float("inf"))
    parts.optimizer.step()
    if parts.scheduler is not None:
        parts.scheduler.step()  # schedules count batches, not epochs
    p.batches_done, p.step = index + 1, p.step + 1
    p.loss_sum, p.tokens = p.loss_sum + loss.item() * n, p.tokens + n
    p.losses.append(round(loss.item(), 4))
    parts.reporter.step(loss.item(), p.tokens)
    return hidden


def save_checkpoint(parts: Parts, p: Progress, hidden) -> None:
    checkpoint.save(parts.checkpoint_path, parts.model, parts.optimizer, p, parts.scheduler, hidden)


def save_run(output: Path, model: nn.Module, tokenizer, config: Config, metrics: dict,
             source: InitSource | None = None) -> None:
    """The run directory's files (rundir.save_run, metrics.json last); meta.json marks it a language model."""
    from sentiment_rnn.plots import plot_lm_curve

    meta = {"kind": "language_model", "vocab_size": tokenizer.get_vocab_size(), "cutoffs": model.head.cutoffs[:-1],
            "shared_prefixes": ["embedding.", "encoder."], "batching": config.lm.batching,
            "init_from": source.record() if source else None}
    rundir.save_run(output, model, meta, metrics, lambda: plot_lm_curve(metrics, output / rundir.CURVES))
