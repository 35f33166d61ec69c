"""Training: load config -> data -> tokenizer -> model -> optimizer -> explicit loop -> save the run.

Reads top to bottom: `train` checks the output and loads the data, `_train_into` builds each part with
its own setup function, `train_epochs` is the loop. The run scaffold it stands on (output checks and the
run writer in rundir.py, progress and checkpoints in checkpoint.py, optimizer and schedule in optim.py,
the loss and scoring in scoring.py) is pretrain-lm's too. The loop evaluates on the validation split every
epoch, keeps the best epoch's weights and stops early after `patience` epochs without improvement; the
test split is scored once, at the end, with the kept weights.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sentiment_rnn import checkpoint, distributed, optim, rundir, runtime, scoring
from sentiment_rnn import data as data_lib
from sentiment_rnn.checkpoint import Progress, Reporter
from sentiment_rnn.config import Config, TrainConfig, dump_config
from sentiment_rnn.errors import TrainingInterrupted
from sentiment_rnn.models import build_model, count_parameters
from sentiment_rnn.scoring import classification_metrics, predict_batches, to_device
from sentiment_rnn.tokenizer import load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from sentiment_rnn.finetune import InitSource


def train_tokenizer_on_split(splits: data_lib.Splits, config: Config):
    """Learn the vocabulary from the training split's texts only."""
    texts = (batch["text"] for batch in splits.train.select_columns(["text"]).iter(batch_size=1000))
    return train_tokenizer(texts, config.tokenizer, total=len(splits.train))


def setup_model(config: Config, vocab_size: int, num_classes: int, device: torch.device) -> nn.Module:
    """The config's model on the device; train.fast_cpu switches it onto the speed opt-in's kernels."""
    checkpoint.seed_everything(config.seed)  # the same initial weights whatever ran before
    model = build_model(config.model, vocab_size, num_classes, config.data.max_length).to(device)
    if config.train.fast_cpu:
        from sentiment_rnn.speed import enable_fast_cpu

        enable_fast_cpu(model)
    return model


def load_vectors(model: nn.Module, config: Config, tokenizer) -> float | None:
    """model.embedding.pretrained's vectors copied into the embedding (embeddings.py); their vocabulary coverage."""
    emb = config.model.embedding
    if emb.pretrained is None:
        return None
    from sentiment_rnn.embeddings import load_pretrained

    return load_pretrained(model, emb, config.model.embedding_dim, tokenizer, config.seed)


def on_epoch_start(model: nn.Module, epoch: int, config: Config) -> None:
    """Per-epoch changes to the model before its epoch trains: gradual unfreezing (train.unfreeze)."""
    frozen = config.model.embedding.freeze and config.model.embedding.pretrained is not None
    optim.apply_unfreeze(model, epoch, config.train, frozen_embedding=frozen)


def train(config: Config, output: Path, reporter: Reporter | None = None, overwrite: bool = False,
          resume: bool = False, report_to: str | None = None) -> dict:
    """Train, evaluate and save a run; returns metrics.json's content.

    `resume=True` continues the unfinished run in `output` from its checkpoint (the config must be the
    run's own: see checkpoint.resume_config), or a finished run from its final state when config.train.epochs
    is larger than its own (checkpoint.reopen). `report_to="tensorboard"` also writes the loop's scalars
    into `output` (sentiment_rnn/tracking.py). A run that fails never looks complete (metrics.json is
    written last); its directory is kept if it has a checkpoint to resume from, removed otherwise.
    """
    main = distributed.is_main()  # under torchrun, rank 0 alone reports and writes the run directory
    reporter = (reporter or Reporter()) if main else Reporter()
    output = Path(output)
    if resume:
        checkpoint.check_resumable(output, config.train.epochs)
    elif main:
        rundir.check_output(output, overwrite)
    if config.model.embedding.pretrained is not None:  # a missing file fails before any data is loaded
        from sentiment_rnn.embeddings import check_pretrained

        check_pretrained(config.model.embedding, config.model.embedding_dim)
    if report_to is not None:  # an unknown tracker or a missing package fails before the data is loaded
        from sentiment_rnn import tracking

        tracking.check(report_to)
    source = read_init_source(config)  # model.init_from, checked before any data is loaded
    with distributed.process_group(runtime.resolve_device(config.train.device)) as device:  # torchrun's, if any
        threads = runtime.configure_threads(config.train.threads)  # train.threads, or runtime.default_threads()
        checkpoint.seed_everything(config.seed)
        if note := runtime.oversubscribed(config.train.threads):
            reporter.stage(note)
        reporter.stage("Loading data")
        with distributed.local_main_first():  # one process per node fills datasets' caches; the others read them
            splits = data_lib.load_splits(config.data, config.seed)
        reporter.stage(data_lib.describe_splits(splits.record))
        scoring.class_weights(config.train, splits)  # a wrong count of weights fails here, before anything is written
        replaced = rundir.prepare_output(output, overwrite) if not resume and main else None
        if resume and main and rundir.is_complete(output):
            checkpoint.reopen_finished(output, splits.record, config.train.epochs, reporter)
        try:
            return _train_into(config, output, splits, device, threads, reporter, resume, source, report_to)
        except BaseException:
            if main and not rundir.is_complete(output) and not (output / rundir.CHECKPOINT).is_file():
                shutil.rmtree(output, ignore_errors=True)  # failed before its first checkpoint: nothing to resume
            raise
        finally:
            rundir.settle_replaced(replaced, output)  # the run it replaced comes back if it left nothing


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader  # shuffled length buckets; under DDP, this rank's slice of each batch
    validation: torch.utils.data.DataLoader  # sorted by length, batch 256
    test: torch.utils.data.DataLoader  # sorted by length, batch 256


@dataclass
class Parts:
    """What the loop works with, each built by its own setup function in _train_into."""

    config: Config
    model: nn.Module  # evaluation, saving and clipping use the model itself
    net: nn.Module  # what the loop calls: the model, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # a torch.optim.lr_scheduler stepped per batch, or None
    loss_fn: nn.Module
    loaders: Loaders
    device: torch.device
    autocast: torch.autocast  # bf16 on CUDA when train.amp_bf16, a no-op otherwise
    output: Path
    reporter: Reporter
    probe_batch: tuple  # the validation batch the gradient probe reads
    logger: object | None = None  # --report-to's (tracking.py), or None: nothing is logged


def setup_tokenizer(config: Config, output: Path, splits: data_lib.Splits, reporter: Reporter, resume: bool,
                    source: InitSource | None = None):
    """A resumed run reads its own tokenizer; a new one trains it (and writes the split record), or reuses
    model.init_from's, whose ids the copied embedding rows follow."""
    main = distributed.is_main()
    if resume:
        checkpoint.check_same_data(output, splits.record)
        return load_tokenizer(output / rundir.TOKENIZER)
    if main:
        rundir.write_json(output / rundir.SPLIT, splits.record)
    if source is not None:
        reporter.stage(f"Reusing the tokenizer of {source.path}")
        tokenizer = load_tokenizer(source.path / rundir.TOKENIZER)
        if main:
            rundir.atomic_write(output / rundir.TOKENIZER, tokenizer.to_str())
        return tokenizer
    reporter.stage("Training tokenizer")
    tokenizer = train_tokenizer_on_split(splits, config)  # deterministic: every rank builds the same one
    if main:
        tokenizer.save(str(output / rundir.TOKENIZER))
    return tokenizer


def setup_data(config: Config, splits: data_lib.Splits, tokenizer, device: torch.device) -> Loaders:
    with distributed.local_main_first():
        encoded = data_lib.encode_splits(splits, tokenizer, config.data.max_length)  # also lets go of the text
    pin = device.type == "cuda"
    # Under DDP each rank takes its slice of every batch: train.batch_size stays the optimizer's batch.
    train_loader = data_lib.make_loader(encoded["train"], config.train.batch_size, True, config.seed,
                                        config.train.bucket_pool, rank=distributed.rank(),
                                        world_size=distributed.world_size(), pin_memory=pin)
    return Loaders(train_loader, data_lib.make_loader(encoded["validation"], 256, False, pin_memory=pin),
                   data_lib.make_loader(encoded["test"], 256, False, pin_memory=pin))


def _train_into(config: Config, output: Path, splits: data_lib.Splits, device: torch.device, threads: int,
                reporter: Reporter, resume: bool = False, source: InitSource | None = None,
                report_to: str | None = None) -> dict:
    if distributed.is_main():
        rundir.atomic_write(output / rundir.CONFIG, dump_config(config, Config))  # a classifier's keys only
    tokenizer = setup_tokenizer(config, output, splits, reporter, resume, source)
    reporter.stage("Tokenizing")
    loaders = setup_data(config, splits, tokenizer, device)
    model = setup_model(config, tokenizer.get_vocab_size(), len(splits.label_names), device)
    if source is not None:
        from sentiment_rnn.finetune import load_init

        load_init(model, source)
    coverage = load_vectors(model, config, tokenizer)
    optimizer = optim.build_optimizer(model, config.train)
    weights = scoring.class_weights(config.train, splits)
    scheduler = optim.build_scheduler(optimizer, config.train, steps_per_epoch(loaders.train, config.train))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.train.amp_bf16 and device.type == "cuda")
    parts = Parts(config, model, distributed.wrap(model, device), optimizer, scheduler,
                  scoring.build_loss(weights, device), loaders, device, autocast, output, reporter,
                  data_lib.longest_batch(loaders.validation))
    progress = Progress()
    if resume:
        reporter.stage(f"Resuming from {checkpoint_path(parts)}")
        progress, _ = checkpoint.load(checkpoint_path(parts), model, optimizer, lr=config.train.lr, scheduler=scheduler)
    with open_logger(report_to, output) as parts.logger:
        progress = train_epochs(parts, progress)

    reporter.stage("Scoring the test split")
    model.load_state_dict(progress.best["state"])
    test = predict_batches(model, loaders.test, device)
    metrics = run_metrics(progress, test, splits, model, coverage, device, threads)
    metrics["class_weights"] = weights  # what the loss used: None, train.class_weights, or "balanced" computed
    if distributed.is_main():
        checkpoint.keep_final(output)  # before metrics.json: a complete run can always continue with more epochs
        save_run(output, model, tokenizer, splits, config, metrics, source)
        checkpoint_path(parts).unlink(missing_ok=True)  # the run is complete: final_state.pt has what it held
    return metrics


def read_init_source(config: Config) -> InitSource | None:
    """model.init_from's source run, read and checked (finetune.py, imported only then); None from scratch."""
    if config.model.init_from is None:
        return None
    from sentiment_rnn.finetune import read_init_source as read

    return read(config)


def open_logger(report_to: str | None, output: Path):
    """--report-to's logger on rank 0 (tracking.py, imported only then), else a context holding None."""
    if report_to is None or not distributed.is_main():
        return contextlib.nullcontext(None)
    from sentiment_rnn.tracking import open_logger as open_tracker

    return open_tracker(report_to, output)


def steps_per_epoch(loader: torch.utils.data.DataLoader, cfg: TrainConfig) -> int:
    return min(len(loader), cfg.max_steps or len(loader))


def checkpoint_path(parts: Parts) -> Path:
    return parts.output / rundir.CHECKPOINT


def train_epochs(parts: Parts, progress: Progress) -> Progress:
    """The loop: train on each batch (forward, loss, backward, clip, step), then validate every epoch.

    Everything it carries lives in `progress`, so a checkpoint (progress + model + optimizer + RNG)
    restores it all; a resumed epoch skips the batches it already trained on.
    """
    cfg, model = parts.config.train, parts.model
    with checkpoint.StopOnInterrupt() as interrupt:
        while progress.epoch <= cfg.epochs and not progress.stopped:
            epoch = progress.epoch
            steps = start_epoch(parts, progress)
            parts.net.train()
            start = time.perf_counter() - progress.seconds
            for step, batch in enumerate(parts.loaders.train, start=progress.batches_done + 1):
                input_ids, lengths, y = to_device(batch, parts.device)
                logits, loss = batch_loss(parts, input_ids, lengths, y)  # [B, C], mean cross-entropy
                if not torch.isfinite(loss):
                    raise checkpoint.non_finite_loss(loss.item(), epoch, step, cfg, checkpoint_path(parts))
                parts.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Gradients through time can explode: clip their global norm, and record it before clipping.
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm or float("inf"))
                parts.optimizer.step()
                if parts.scheduler is not None:
                    parts.scheduler.step()  # schedules count batches, not epochs
                record_step(progress, step, float(norm), loss.item(), logits, y, lengths)
                parts.reporter.step(loss.item(), progress.tokens, progress.correct / progress.seen)
                if parts.logger is not None:
                    parts.logger.step(progress.step, loss.item(), float(norm), parts.optimizer)
                if step >= steps:
                    break  # the end-of-epoch checkpoint below covers the last step
                if interrupt.requested or checkpoint.due(cfg, progress):
                    progress.seconds = time.perf_counter() - start
                    save_checkpoint(parts, progress)
                    if interrupt.requested:
                        raise TrainingInterrupted(parts.output, epoch, step)
            finish_epoch(parts, progress, time.perf_counter() - start)
            save_checkpoint(parts, progress)
            if interrupt.requested:
                raise TrainingInterrupted(parts.output, progress.epoch, 0)
    return progress


def batch_loss(parts: Parts, input_ids: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor):
    """The logits and the loss of one batch (bf16 autocast on CUDA when train.amp_bf16 asks for it)."""
    with parts.autocast:
        logits = parts.net(input_ids, lengths)  # [B, C]
    return logits, parts.loss_fn(logits.float(), y)


def start_epoch(parts: Parts, progress: Progress) -> int:
    """Position the sampler (a resumed epoch skips what it already saw) and return the epoch's last step."""
    cfg, loader = parts.config.train, parts.loaders.train
    loader.sampler.set_epoch(progress.epoch, start=progress.batches_done)
    steps = steps_per_epoch(loader, cfg)
    on_epoch_start(parts.model, progress.epoch, parts.config)
    parts.reporter.epoch_start(progress.epoch, cfg.epochs, steps - progress.batches_done)
    return steps


def record_step(progress: Progress, step: int, grad_norm: float, loss: float, logits: torch.Tensor,
                y: torch.Tensor, lengths: torch.Tensor) -> None:
    batch = y.shape[0]
    progress.grad_norms.append(round(grad_norm, 5))
    progress.batches_done, progress.step = step, progress.step + 1
    progress.seen, progress.loss_sum = progress.seen + batch, progress.loss_sum + loss * batch
    progress.correct += (logits.argmax(-1) == y).sum().item()
    progress.tokens += int(lengths.sum())


def save_checkpoint(parts: Parts, progress: Progress) -> None:
    if distributed.is_main():  # under torchrun, rank 0 alone writes
        checkpoint.save(checkpoint_path(parts), parts.model, parts.optimizer, progress, parts.scheduler)


def finish_epoch(parts: Parts, progress: Progress, seconds: float) -> None:
    """Sum the epoch over all ranks, validate, probe gradients, keep the best weights, decide to stop."""
    epoch, cfg = progress.epoch, parts.config.train
    seen, loss_sum, correct, tokens = distributed.all_sum(progress.seen, progress.loss_sum, progress.correct,
                                                          progress.tokens)
    progress.train_seconds, progress.train_tokens = progress.train_seconds + seconds, progress.train_tokens + tokens
    val = predict_batches(parts.model, parts.loaders.validation, parts.device)  # every rank scores all of it
    val["accuracy"], val["loss"] = distributed.from_main(val["accuracy"], val["loss"])  # same stop everywhere
    record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
              "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
              "tokens_per_s": tokens / seconds}
    progress.history.append(record)
    if epoch in cfg.grad_probe_epochs:
        from sentiment_rnn.models.bptt import gradient_probe

        norms = gradient_probe(parts.model, parts.probe_batch, parts.device)
        if norms is not None:
            progress.probes.append({"epoch": epoch, "norms": norms})
    record["best"] = keep_if_best(progress, parts.model, val, epoch)
    parts.reporter.epoch_end(record)
    if parts.logger is not None:
        parts.logger.epoch(record, parts.optimizer)
    progress.stopped = progress.stale >= cfg.patience
    progress.next_epoch()


def keep_if_best(progress: Progress, model: nn.Module, val: dict, epoch: int) -> bool:
    """Early stopping's bookkeeping: keep a copy of the weights of the best validation epoch so far."""
    improved = (val["accuracy"], -val["loss"]) > (progress.best["accuracy"], -progress.best["loss"])
    if improved:
        progress.best = {"accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch,
                         "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        progress.stale = 0
    else:
        progress.stale += 1
    return improved


def run_metrics(progress: Progress, test: dict, splits: data_lib.Splits, model: nn.Module, coverage: float | None,
                device: torch.device, threads: int) -> dict:
    """metrics.json's content: the history, the kept epoch's scores and how the run was made."""
    best = progress.best
    return {
        "history": progress.history,
        "best_epoch": best["epoch"],
        "validation": {"accuracy": best["accuracy"], "loss": best["loss"]},
        "test": classification_metrics(test["y_true"], test["y_pred"], splits.label_names),
        "train_seconds": progress.train_seconds,
        "tokens_per_s": progress.train_tokens / max(progress.train_seconds, 1e-9),
        "parameters": count_parameters(model),
        "grad_norm_per_step": progress.grad_norms,
        "grad_through_time": progress.probes,
        "embedding_coverage": coverage,
        "device": str(device),
        "threads": threads,
        "sizes": splits.record["sizes"],
        "world_size": distributed.world_size(),
    }


def save_run(output: Path, model: nn.Module, tokenizer, splits: data_lib.Splits, config: Config, metrics: dict,
             source: InitSource | None = None) -> None:
    """The run directory's files (rundir.save_run, metrics.json last); meta.json says how to rebuild the
    classifier and which run it started from."""
    from sentiment_rnn.plots import plot_gradient_norms, plot_learning_curves

    def figures() -> None:
        plot_learning_curves(metrics["history"], output / rundir.CURVES)
        if metrics["grad_through_time"]:
            title = f"{config.name}: {config.model.cell}"
            plot_gradient_norms(metrics["grad_through_time"], output / rundir.GRADIENTS, title)

    meta = {"label_names": splits.label_names, "vocab_size": tokenizer.get_vocab_size(),
            "max_length": config.data.max_length, "model_kind": config.model.kind,
            "init_from": source.record() if source else None}
    rundir.save_run(output, model, meta, metrics, figures)
