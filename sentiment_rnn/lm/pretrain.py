"""`sentiment-rnn pretrain-lm`: train the classifier's embedding and encoder as a next-word language model.

Reads top to bottom: config -> corpus -> tokenizer -> batches -> model -> optimizer -> explicit loop ->
save. The optimizer, epochs, batch size, threads and checkpointing are the train.* keys; corpus and
batching are lm.* (config.py). Held-out perplexity is scored every epoch on lm.held_out of the corpus's own
training documents, never on a classifier's validation or test rows.

Run directory: config.yaml, tokenizer.json, corpus.json (what was read, checked on --resume), then at the
end model.safetensors (embedding.*, encoder.*, head.*), meta.json, curves.png and metrics.json last;
checkpoint.pt while training. A resume restores model, optimizer, RNG and the carried hidden state, so it
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import io
import math
import pickle
import shlex
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn import checkpoint, rundir, runtime
from sentiment_rnn.config import Config, dump_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.finetune import InitSource, read_init_source
from sentiment_rnn.lm import data as lm_data
from sentiment_rnn.lm.model import build_language_model, check_model_config, detach
from sentiment_rnn.lm.tokenizer import train_lm_tokenizer
from sentiment_rnn.tokenizer import load_tokenizer

CORPUS = "corpus.json"
FORMAT = "lm-1"  # checkpoint layout; a checkpoint of another layout fails with a clear message


class Reporter:
    """Progress hooks; the CLI fills them with rich output, library code never prints."""

    def stage(self, text: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float, tokens: int) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


class LMInterrupted(TrainingInterrupted):
    """Ctrl-C stopped pretraining after a checkpoint; the message gives the pretrain-lm resume command."""

    def __init__(self, run, epoch: int, batches_done: int):
        super().__init__(run, epoch, batches_done)
        self.resume_command = f"sentiment-rnn pretrain-lm --resume {shlex.quote(str(run))}"
        Exception.__init__(self, f"pretraining stopped at epoch {epoch} after {batches_done} batches; checkpoint "
                                 f"saved. Resume with: {self.resume_command}")


@dataclass
class LMProgress:
    """Everything the loop carries from step to step besides model, optimizer, RNG and hidden state."""

    epoch: int = 1  # epoch in progress, 1-based
    batches_done: int = 0  # batches of that epoch already trained on; a resume skips them
    step: int = 0  # optimizer steps over all epochs
    loss_sum: float = 0.0  # this epoch so far: summed token loss,
    tokens: int = 0  # predicted tokens,
    seconds: float = 0.0  # and training time
    losses: list = field(default_factory=list)  # training loss of every step, for the learning curve
    history: list = field(default_factory=list)  # one record per finished epoch
    train_seconds: float = 0.0  # over finished epochs
    train_tokens: int = 0  # over finished epochs

    def next_epoch(self) -> None:
        self.epoch, self.batches_done, self.loss_sum, self.tokens, self.seconds = self.epoch + 1, 0, 0.0, 0, 0.0


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


def save_checkpoint(path: Path, model: nn.Module, optimizer, progress: LMProgress, hidden) -> None:
    """Plain containers only, written atomically (checkpoint.py's rules), plus the carried hidden state."""
    hidden = [] if hidden is None else list(hidden) if isinstance(hidden, tuple) else [hidden]
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": asdict(progress), "rng": checkpoint.rng_state(), "hidden": hidden}, buffer)
    rundir.atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Path, model: nn.Module, optimizer, lr: float):
    """Restore model, optimizer and RNG in place; return the progress and the carried hidden state."""
    damaged = f"'{path}' is damaged or was not written by sentiment-rnn pretrain-lm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles arbitrary objects
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ValueError("unknown checkpoint format")
        progress = LMProgress(**ckpt["progress"])
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng(ckpt["rng"])
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, RuntimeError, EOFError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise SentimentRNNError(f"{damaged} ({reason}); start again with --overwrite") from None
    for group in optimizer.param_groups:
        group["lr"] = lr  # a resume may lower the rate (checkpoint.ADJUSTABLE)
    hidden = ckpt["hidden"]
    return progress, (None if not hidden else tuple(hidden) if len(hidden) == 2 else hidden[0])


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


def finish_epoch(p: LMProgress, seconds: float, val_loss: float) -> dict:
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
    source = read_lm_source(config)
    tokenizer, batches, held, record = prepare_data(config, output, resume, reporter, source)
    if not resume:
        if output.is_dir():
            shutil.rmtree(output)
        output.mkdir(parents=True, exist_ok=True)
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


def _pretrain_into(config: Config, output: Path, tokenizer, batches, held, record: dict,
                   threads: int, reporter: Reporter, resume: bool, source: InitSource | None) -> dict:
    tcfg = config.train
    model = setup_model(config, tokenizer.get_vocab_size(), source)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ckpt_path = output / rundir.CHECKPOINT
    p, hidden = LMProgress(), None
    if resume:
        reporter.stage(f"Resuming from {ckpt_path}")
        p, hidden = load_checkpoint(ckpt_path, model, optimizer, tcfg.lr)
    model.train()
    with checkpoint.StopOnInterrupt() as interrupt:
        while p.epoch <= tcfg.epochs:
            steps = min(len(batches), tcfg.max_steps or len(batches))
            reporter.epoch_start(p.epoch, tcfg.epochs, steps - p.batches_done)
            start = time.perf_counter() - p.seconds
            for index in range(p.batches_done, steps):
                inputs, targets = batches.batch(index, p.epoch)  # [T, B] each
                # Truncated BPTT: the state flows on into this segment, its gradient stops at the boundary.
                carried = detach(hidden) if batches.carries_state and hidden is not None else None
                loss, n, hidden = model.loss(inputs, targets, carried)
                if not torch.isfinite(loss):
                    raise SentimentRNNError(f"loss became {loss.item()} at epoch {p.epoch} step {index + 1}; lower "
                                            f"train.lr (now {tcfg.lr:g}) or train.clip_grad_norm and start again")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Gradients through time can explode: clip their global norm.
                nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_grad_norm or float("inf"))
                optimizer.step()
                p.batches_done, p.step = index + 1, p.step + 1
                p.loss_sum, p.tokens = p.loss_sum + loss.item() * n, p.tokens + n
                p.losses.append(round(loss.item(), 4))
                reporter.step(loss.item(), p.tokens)
                timed_out = config.lm.time_limit_s and time.perf_counter() - start >= config.lm.time_limit_s
                if p.batches_done >= steps or timed_out:
                    break  # the end-of-epoch checkpoint below covers the last step
                if interrupt.requested or (tcfg.checkpoint_every and p.step % tcfg.checkpoint_every == 0):
                    p.seconds = time.perf_counter() - start
                    save_checkpoint(ckpt_path, model, optimizer, p, hidden)
                    if interrupt.requested:
                        raise LMInterrupted(output, p.epoch, p.batches_done)
            reporter.epoch_end(finish_epoch(p, time.perf_counter() - start, held_out_loss(model, held)))
            p.next_epoch()
            hidden = None  # each epoch reads the stream from its start
            save_checkpoint(ckpt_path, model, optimizer, p, hidden)
            if interrupt.requested:
                raise LMInterrupted(output, p.epoch, 0)

    metrics = {"history": p.history,
               "held_out_perplexity": p.history[-1]["held_out_perplexity"],
               "train_seconds": p.train_seconds, "tokens_per_s": p.train_tokens / max(p.train_seconds, 1e-9),
               "parameters": sum(t.numel() for t in model.parameters()), "threads": threads,
               "corpus": record, "loss_per_step": p.losses}
    save_run(output, model, tokenizer, config, metrics, source)
    ckpt_path.unlink(missing_ok=True)  # the run is complete: the checkpoint has served
    return metrics


def save_run(output: Path, model: nn.Module, tokenizer, config: Config, metrics: dict,
             source: InitSource | None = None) -> None:
    """Weights, meta and the learning curve first; metrics.json last, so its presence means the run is complete."""
    from safetensors.torch import save as save_safetensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = save_safetensors(state)
    rundir.atomic_write(output / rundir.WEIGHTS, payload)
    rundir.write_json(output / rundir.META, {
        "kind": "language_model", "weights_sha256": rundir.weights_sha256(payload),
        "vocab_size": tokenizer.get_vocab_size(),
        "cutoffs": model.head.cutoffs[:-1],
        "shared_prefixes": ["embedding.", "encoder."], "batching": config.lm.batching,
        "init_from": source.record() if source else None, "versions": rundir.versions()})
    from sentiment_rnn.plots import plot_lm_curve

    plot_lm_curve(metrics, output / rundir.CURVES)
    rundir.write_json(output / rundir.METRICS, metrics)
