"""Training: load config -> data -> tokenizer -> model -> optimizer -> explicit loop -> save the run.

Reads top to bottom: `train` checks the output and loads the data, `_train_into` builds each part with
its own setup function, `train_epochs` is the loop. The loop evaluates on the validation split every
epoch, keeps the best epoch's weights and stops early after `patience` epochs without improvement; the
test split is scored once, at the end, with the kept weights.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sentiment_rnn import checkpoint, distributed, finetune, next_word, rundir, runtime, tracking
from sentiment_rnn import data as data_lib
from sentiment_rnn.checkpoint import Progress
from sentiment_rnn.config import Config, TrainConfig, dump_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.metrics import classification_metrics
from sentiment_rnn.models import build_model, count_parameters
from sentiment_rnn.speed.process import flat_heap
from sentiment_rnn.tokenizer import load_tokenizer, train_tokenizer


class Reporter:
    """Progress hooks; the CLI fills them with rich output, library code never prints."""

    def stage(self, text: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float, accuracy: float, tokens: int) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SentimentRNNError("train.device is cuda but no CUDA GPU is visible; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_tokenizer_on_split(splits: data_lib.Splits, config: Config):
    """Learn the vocabulary from the training split's texts only."""
    texts = (batch["text"] for batch in splits.train.select_columns(["text"]).iter(batch_size=1000))
    return train_tokenizer(texts, config.tokenizer, total=len(splits.train))


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW's param groups: no weight decay on biases and the embedding (decaying rare words' vectors
    to zero hurts). Per-layer learning rates would split these further (model.parameter_groups())."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.startswith("embedding") else decay).append(param)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over parameter_groups, split per layer group when train.layer_lr_decay gives each its own rate.
    The fused kernel updates all parameters in one pass instead of one kernel per tensor, which matters
    for the large embedding on CPU."""
    layered = cfg.layer_lr_decay != 1.0
    groups = finetune.layered_parameter_groups(model, cfg) if layered else parameter_groups(model, cfg)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """train.schedule as a torch.optim.lr_scheduler stepped once per batch, or None (constant rate)."""
    return finetune.build_schedule(optimizer, cfg, steps_per_epoch)


def class_weights(cfg: TrainConfig, splits: data_lib.Splits) -> list[float] | None:
    """The loss's weight per class, in label order: train.class_weights as given (one per class), or
    "balanced" computed on the training split as n_samples / (n_classes * count_c) (scikit-learn's
    definition), so each class adds the same total weight to the loss whatever its share of the rows."""
    weights, names = cfg.class_weights, splits.label_names
    if isinstance(weights, list) and len(weights) != len(names):
        raise SentimentRNNError(f"train.class_weights has {len(weights)} weights but the data has {len(names)} "
                                f"classes ({', '.join(names)}); give one weight per class, in that order")
    if weights != "balanced":
        return weights
    from sklearn.utils.class_weight import compute_class_weight

    labels = data_lib.column_numpy(splits.train, "label")
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() == 0:
        raise SentimentRNNError(f"train.class_weights=balanced: class '{names[int(counts.argmin())]}' has no row in "
                                "the training split; give the weights as a list, one per class, e.g. [1, 9]")
    return compute_class_weight("balanced", classes=np.arange(len(names)), y=labels).tolist()


def build_loss(weights: list[float] | None, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted per class when train.class_weights asks for it (imbalanced data)."""
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight)


def setup_model(config: Config, vocab_size: int, num_classes: int, device: torch.device) -> nn.Module:
    """The config's model on the device; train.fast_cpu switches it onto the speed opt-in's kernels."""
    seed_everything(config.seed)  # the same initial weights whatever ran before
    model = build_model(config.model, vocab_size, num_classes, config.data.max_length).to(device)
    if config.train.fast_cpu:
        from sentiment_rnn.speed import enable_fast_cpu

        enable_fast_cpu(model)
    return model


def on_epoch_start(model: nn.Module, epoch: int, config: Config) -> None:
    """Per-epoch changes to the model before its epoch trains: gradual unfreezing (train.unfreeze)."""
    frozen = config.model.embedding.freeze and config.model.embedding.pretrained is not None
    finetune.apply_unfreeze(model, epoch, config.train, frozen_embedding=frozen)


def check_pretrained(config: Config) -> None:
    """A missing vectors file is reported before any time goes into data and tokenizing."""
    from sentiment_rnn.embeddings import PACKAGED, check_packaged

    path = config.model.embedding.pretrained
    if path in PACKAGED:
        check_packaged(path, config.model.embedding_dim)
    elif path is not None and not Path(path).is_file():
        raise SentimentRNNError(f"model.embedding.pretrained '{path}' not found; create it with "
                                f"'sentiment-rnn pretrain-embeddings --output {path}' or fix the path")


def load_pretrained(model: nn.Module, config: Config, tokenizer) -> float | None:
    """Copy packaged or GloVe-format vectors into the embedding; returns the vocabulary coverage."""
    emb = config.model.embedding
    if emb.pretrained is None:
        return None
    from sentiment_rnn.embeddings import PACKAGED, load_glove, load_packaged

    load = load_packaged if emb.pretrained in PACKAGED else load_glove
    weights, coverage = load(emb.pretrained, tokenizer.get_vocab(), config.model.embedding_dim, seed=config.seed)
    with torch.no_grad():
        model.embedding.weight.copy_(weights)
    model.embedding.weight.requires_grad_(not emb.freeze)
    return coverage


def to_device(batch, device: torch.device):
    input_ids, lengths, labels = batch
    overlap = device.type == "cuda"  # pinned host memory lets the copy overlap compute
    return tuple(t.to(device, non_blocking=overlap) for t in (input_ids, lengths, labels))


@torch.no_grad()
def predict_batches(model: nn.Module, loader, device: torch.device) -> dict:
    """Loss, predictions and probabilities over a loader, in the loader's order."""
    model.eval()
    total_loss, preds, labels, probs = 0.0, [], [], []
    with flat_heap():  # a held-out split may have hundreds of thousands of rows
        for batch in loader:
            input_ids, lengths, y = to_device(batch, device)
            logits = model(input_ids, lengths).float()  # [B, C]
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            probs.append(logits.softmax(-1).cpu())
            preds.append(logits.argmax(-1).cpu())
            labels.append(y.cpu())
    y_true, y_pred = torch.cat(labels), torch.cat(preds)
    return {"loss": total_loss / max(1, len(y_true)), "accuracy": (y_true == y_pred).float().mean().item(),
            "y_true": y_true.tolist(), "y_pred": y_pred.tolist(), "probs": torch.cat(probs)}


def gradient_probe(model: nn.Module, batch, device: torch.device) -> list[float] | None:
    """Mean ||dLoss/dh_t|| of the top layer's forward direction, by steps back from each sentence's last token.

    This is backpropagation through time made visible: in a tanh RNN the norm shrinks geometrically
    with distance from the loss (vanishing gradients); gated cells (GRU/LSTM) keep it up. The full
    dLoss/dh_t must be read off the h_t that the next step consumes; nn.RNN keeps those inside its
    kernel (its `out` only carries the direct path to the loss), so the encoder is unrolled with its
    cells, on a weight copy for nn.RNN (equal outputs: tests/test_cells.py).
    """
    if not hasattr(model, "encoder") or getattr(model, "pooling", "last") != "last":
        return None  # the per-word baseline has no hidden state; pooled heads read more than the final state
    from sentiment_rnn.models.cells import CellEncoder, cell_encoder_from_rnn

    model.eval()
    input_ids, lengths, y = to_device(batch, device)
    encoder = model.encoder if isinstance(model.encoder, CellEncoder) else cell_encoder_from_rnn(model.encoder.rnn)
    step_states: list[list[torch.Tensor]] = []
    with torch.enable_grad():
        x = model.embedding(input_ids)  # [T, B, E]; eval mode, so no dropout
        _, final = encoder(x, lengths, step_states)  # [B, D*H]
        top = step_states[-encoder.num_directions]  # top layer, forward direction: T tensors [B, H]
        for h in top:
            h.retain_grad()
        nn.functional.cross_entropy(model.head(final).float(), y).backward()
    model.zero_grad(set_to_none=True)
    grads = [h.grad if h.grad is not None else torch.zeros_like(h) for h in top]
    grad = torch.stack(grads).float().norm(dim=-1)  # [T, B]
    steps = int(lengths.max())
    back = torch.arange(steps, device=grad.device).view(-1, 1)  # [S, 1] steps back from the end
    t = lengths.view(1, -1) - 1 - back  # [S, B] time index of "k steps back" per sentence
    valid = t >= 0  # [S, B]
    picked = grad.gather(0, t.clamp(min=0)) * valid  # [S, B]
    return (picked.sum(1) / valid.sum(1).clamp(min=1)).tolist()


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse to write into a file or over an existing run, before any time is spent on data."""
    if output.exists() and not output.is_dir():
        raise SentimentRNNError(f"'{output}' is a file, not a directory; choose another --output")
    try:
        # A two-stage run writes its first stage's record first; the second stage trains in beside it.
        occupied = output.is_dir() and any(p.name != rundir.STAGE_ONE for p in output.iterdir())
    except OSError as exc:
        raise SentimentRNNError(
            f"cannot read run directory '{output}' ({exc.strerror}); choose another --output") from None
    if occupied and not overwrite:
        if (output / rundir.CHECKPOINT).is_file() and not rundir.is_complete(output):
            raise SentimentRNNError(f"run directory '{output}' holds an unfinished run; continue it with "
                                    f"--resume {output}, or pass --overwrite to start over")
        raise SentimentRNNError(f"run directory '{output}' already exists; pass --overwrite to replace it "
                                "or --output DIR to write elsewhere")


def prepare_output(output: Path, overwrite: bool) -> None:
    check_output(output, overwrite)
    if output.is_dir() and overwrite:
        shutil.rmtree(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SentimentRNNError(
            f"cannot create run directory '{output}' ({exc.strerror}); choose another --output") from None


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
        check_output(output, overwrite)
    check_pretrained(config)
    tracking.check(report_to)  # an unknown tracker or a missing package fails before the data is loaded
    source = finetune.read_init_source(config)  # model.init_from, checked before any data is loaded
    device = distributed.setup(resolve_device(config.train.device))  # joins torchrun's process group, if any
    threads = runtime.configure_threads(config.train.threads)  # train.threads, or half the cores (at most 4)
    seed_everything(config.seed)

    reporter.stage("Loading data")
    with distributed.local_main_first():  # one process per node fills datasets' caches; the others read them
        splits = data_lib.load_splits(config.data, config.seed)
    reporter.stage(data_lib.describe_splits(splits.record))
    class_weights(config.train, splits)  # a wrong count of weights fails here, before anything is written
    if not resume and main:
        prepare_output(output, overwrite)
    if resume and main and rundir.is_complete(output):
        reopen_finished(output, splits, config.train, reporter)
    try:
        return _train_into(config, output, splits, device, threads, reporter, resume, source, report_to)
    except BaseException:
        if main and not rundir.is_complete(output) and not (output / rundir.CHECKPOINT).is_file():
            shutil.rmtree(output, ignore_errors=True)  # failed before its first checkpoint: nothing to resume
        raise
    finally:
        distributed.teardown()


def reopen_finished(output: Path, splits: data_lib.Splits, cfg: TrainConfig, reporter: Reporter) -> None:
    """Make a finished run resumable again from its last epoch, once its data is known to be the same."""
    checkpoint.check_same_data(output, splits.record)
    epoch, stopped_early = checkpoint.reopen(output)
    reset = f"; early stopping had ended it after epoch {epoch - 1}, patience starts afresh" if stopped_early else ""
    more = f"epoch {epoch}" if epoch == cfg.epochs else f"epochs {epoch} to {cfg.epochs}"
    reporter.stage(f"Continuing the finished run with {more}{reset}")


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
    logger: tracking.NoLogger = field(default_factory=tracking.NoLogger)  # --report-to's, or one doing nothing


def setup_tokenizer(config: Config, output: Path, splits: data_lib.Splits, reporter: Reporter, resume: bool,
                    source: finetune.InitSource | None = None):
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


def longest_batch(loader: torch.utils.data.DataLoader):
    """The batch of a length-sorted, unshuffled loader that reaches furthest back in time: its last one.
    Only that batch's rows are read."""
    *_, last = iter(loader.sampler)  # row indices only
    return torch.utils.data.default_convert(loader.dataset[last])  # as the loader would hand it over


def _train_into(config: Config, output: Path, splits: data_lib.Splits, device: torch.device, threads: int,
                reporter: Reporter, resume: bool = False, source: finetune.InitSource | None = None,
                report_to: str | None = None) -> dict:
    if distributed.is_main():
        rundir.atomic_write(output / rundir.CONFIG, dump_config(config))
    tokenizer = setup_tokenizer(config, output, splits, reporter, resume, source)
    reporter.stage("Tokenizing")
    loaders = setup_data(config, splits, tokenizer, device)
    model = setup_model(config, tokenizer.get_vocab_size(), len(splits.label_names), device)
    finetune.load_init(model, source)
    next_word.attach_head(model, config, tokenizer.get_vocab_size(), source.lm_softmax if source else {})
    coverage = load_pretrained(model, config, tokenizer)
    optimizer = build_optimizer(model, config.train)
    weights = class_weights(config.train, splits)
    scheduler = build_scheduler(optimizer, config.train, steps_per_epoch(loaders.train, config.train))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.train.amp_bf16 and device.type == "cuda")
    parts = Parts(config, model, distributed.wrap(model, device), optimizer, scheduler,
                  build_loss(weights, device), loaders, device, autocast, output, reporter,
                  longest_batch(loaders.validation))
    progress = Progress()
    if resume:
        reporter.stage(f"Resuming from {checkpoint_path(parts)}")
        progress = checkpoint.load(checkpoint_path(parts), model, optimizer, lr=config.train.lr, scheduler=scheduler)
    with tracking.open_logger(report_to if distributed.is_main() else None, output) as parts.logger:
        progress = train_epochs(parts, progress)

    reporter.stage("Scoring the test split")
    model.load_state_dict(progress.best["state"])
    next_word.detach_head(model)  # it served training only: scoring and the saved run are the classifier alone
    test = predict_batches(model, loaders.test, device)
    metrics = run_metrics(progress, test, splits, model, coverage, device, threads)
    metrics["class_weights"] = weights  # what the loss used: None, train.class_weights, or "balanced" computed
    if distributed.is_main():
        checkpoint.keep_final(output)  # before metrics.json: a complete run can always continue with more epochs
        save_run(output, model, tokenizer, splits, config, metrics, source)
        checkpoint_path(parts).unlink(missing_ok=True)  # the run is complete: final_state.pt has what it held
    return metrics


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
                logits, loss, total = batch_loss(parts, input_ids, lengths, y)  # [B, C], sentiment loss, minimised
                if not torch.isfinite(loss):
                    raise non_finite_loss(loss.item(), epoch, step, cfg, checkpoint_path(parts))
                parts.optimizer.zero_grad(set_to_none=True)
                total.backward()
                # Gradients through time can explode: clip their global norm, and record it before clipping.
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm or float("inf"))
                parts.optimizer.step()
                if parts.scheduler is not None:
                    parts.scheduler.step()  # schedules count batches, not epochs
                record_step(progress, step, float(norm), loss.item(), logits, y, lengths)
                parts.reporter.step(loss.item(), progress.correct / progress.seen, progress.tokens)
                parts.logger.step(progress.step, loss.item(), float(norm), parts.optimizer)
                if step >= steps:
                    break  # the end-of-epoch checkpoint below covers the last step
                if interrupt.requested or checkpoint_due(cfg, progress):
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
    """The logits, the sentiment loss (what the run reports) and the loss minimised: the sentiment loss,
    plus train.lm_loss_weight times the next-word loss on the same sentences when that is on."""
    weight = parts.config.train.lm_loss_weight
    with parts.autocast:
        if weight:  # the next-word loss reads the top layer's outputs [T, B, H]
            logits, out = parts.net(input_ids, lengths, return_outputs=True)  # [B, C]
        else:
            logits = parts.net(input_ids, lengths)  # [B, C]; not every model returns outputs (the baseline)
    loss = parts.loss_fn(logits.float(), y)
    return logits, loss, loss + weight * next_word.loss(parts.model, out, input_ids, lengths) if weight else loss


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


def checkpoint_due(cfg: TrainConfig, progress: Progress) -> bool:
    """train.checkpoint_every optimizer steps have passed since the last mid-epoch checkpoint."""
    return bool(cfg.checkpoint_every) and progress.step % cfg.checkpoint_every == 0


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
        norms = gradient_probe(parts.model, parts.probe_batch, parts.device)
        if norms is not None:
            progress.probes.append({"epoch": epoch, "norms": norms})
    record["best"] = keep_if_best(progress, parts.model, val, epoch)
    parts.reporter.epoch_end(record)
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


def non_finite_loss(loss: float, epoch: int, step: int, cfg: TrainConfig, ckpt_path: Path) -> SentimentRNNError:
    """Name the step and what to try; say where the last good checkpoint is, if one was written."""
    fix = f"lower train.lr (now {cfg.lr:g}) or set a smaller train.clip_grad_norm (now {cfg.clip_grad_norm})"
    if ckpt_path.is_file():
        return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}; {fix}. The last checkpoint with a "
                                 f"finite loss is kept: resume it with a lower rate (sentiment-rnn train --resume "
                                 f"{ckpt_path.parent} --set train.lr={cfg.lr / 10:g}) or train again with --overwrite")
    return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}, before the first checkpoint; {fix} "
                             "and train again")


def save_run(output: Path, model: nn.Module, tokenizer, splits: data_lib.Splits, config: Config, metrics: dict,
             source: finetune.InitSource | None = None) -> None:
    """Weights, meta and figures first; metrics.json last, so its presence means the run is complete.
    meta.json records the weights' sha256 (checked when a run is used as model.init_from) and the source."""
    from safetensors.torch import save as save_safetensors

    from sentiment_rnn.plots import plot_gradient_norms, plot_learning_curves

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = save_safetensors(state)
    rundir.atomic_write(output / rundir.WEIGHTS, payload)
    rundir.write_json(output / rundir.META, {
        "label_names": splits.label_names, "vocab_size": tokenizer.get_vocab_size(),
        "max_length": config.data.max_length, "model_kind": config.model.kind, "versions": rundir.versions(),
        "weights_sha256": finetune.weights_sha256(payload), "init_from": source.record() if source else None})
    plot_learning_curves(metrics["history"], output / rundir.CURVES)
    if metrics["grad_through_time"]:
        title = f"{config.name}: {config.model.cell}"
        plot_gradient_norms(metrics["grad_through_time"], output / rundir.GRADIENTS, title)
    rundir.write_json(output / rundir.METRICS, metrics)
