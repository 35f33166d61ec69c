"""Training: load config -> data -> tokenizer -> model -> optimizer -> explicit loop -> save the run.

Reads top to bottom. The loop evaluates on the validation split every epoch, keeps the best epoch's
weights and stops early after `patience` epochs without improvement; the test split is scored once,
at the end, with the kept weights.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sentiment_rnn import checkpoint
from sentiment_rnn import data as data_lib
from sentiment_rnn import distributed
from sentiment_rnn import rundir
from sentiment_rnn import runtime
from sentiment_rnn.config import Config, TrainConfig, dump_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.metrics import classification_metrics
from sentiment_rnn.models import build_model, count_parameters
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


def build_tokenizer(splits: data_lib.Splits, config: Config):
    texts = (batch["text"] for batch in splits.train.select_columns(["text"]).iter(batch_size=1000))
    return train_tokenizer(texts, config.tokenizer, total=len(splits.train))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and the embedding (decaying rare words' vectors to zero hurts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.startswith("embedding") else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass: on CPU the per-tensor default spent about a
    # third of each step updating the 2M-value embedding.
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def check_pretrained(config: Config) -> None:
    """A missing vectors file is reported before any time goes into data and tokenizing."""
    path = config.model.embedding.pretrained
    if path is not None and not Path(path).is_file():
        raise SentimentRNNError(f"model.embedding.pretrained '{path}' not found; create it with "
                                f"'sentiment-rnn pretrain-embeddings --output {path}' or fix the path")


def load_pretrained(model: nn.Module, config: Config, tokenizer) -> float | None:
    """Copy GloVe-format vectors into the embedding; returns the vocabulary coverage."""
    emb = config.model.embedding
    if emb.pretrained is None:
        return None
    from sentiment_rnn.embeddings import load_glove

    weights, coverage = load_glove(emb.pretrained, tokenizer.get_vocab(), config.model.embedding_dim, seed=config.seed)
    with torch.no_grad():
        model.embedding.weight.copy_(weights)
    model.embedding.weight.requires_grad_(not emb.freeze)
    return coverage


def to_device(batch, device: torch.device):
    input_ids, lengths, labels = batch
    nb = device.type == "cuda"  # pinned host memory lets the copy overlap compute
    return input_ids.to(device, non_blocking=nb), lengths.to(device, non_blocking=nb), labels.to(device, non_blocking=nb)


@torch.no_grad()
def predict_batches(model: nn.Module, loader, device: torch.device) -> dict:
    """Loss, predictions and probabilities over a loader, in the loader's order."""
    model.eval()
    total_loss, preds, labels, probs = 0.0, [], [], []
    with runtime.flat_heap():  # a held-out split may have hundreds of thousands of rows
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
    if not hasattr(model, "encoder"):
        return None  # the per-word baseline has no hidden state
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
    grad = torch.stack([h.grad if h.grad is not None else torch.zeros_like(h) for h in top]).float().norm(dim=-1)  # [T, B]
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
        occupied = output.is_dir() and any(output.iterdir())
    except OSError as exc:
        raise SentimentRNNError(f"cannot read run directory '{output}' ({exc.strerror}); choose another --output") from None
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
        raise SentimentRNNError(f"cannot create run directory '{output}' ({exc.strerror}); choose another --output") from None


def train(config: Config, output: Path, reporter: Reporter | None = None, overwrite: bool = False,
          resume: bool = False) -> dict:
    """Train, evaluate and save a run; returns metrics.json's content.

    `resume=True` continues the unfinished run in `output` from its checkpoint (the config must be the
    run's own: see checkpoint.resume_config). A run that fails never looks complete (metrics.json is
    written last); its directory is kept if it has a checkpoint to resume from, removed otherwise.
    """
    main = distributed.is_main()  # under torchrun, rank 0 alone reports and writes the run directory
    reporter = (reporter or Reporter()) if main else Reporter()
    output = Path(output)
    if resume:
        checkpoint.check_resumable(output)
    elif main:
        check_output(output, overwrite)
    check_pretrained(config)
    device = distributed.setup(resolve_device(config.train.device))  # joins torchrun's process group, if any
    threads = runtime.configure_threads(config.train.threads)  # train.threads, or half the cores (at most 4)
    seed_everything(config.seed)

    reporter.stage("Loading data")
    with distributed.local_main_first():  # one process per node fills datasets' caches; the others read them
        splits = data_lib.load_splits(config.data, config.seed)
    reporter.stage(data_lib.describe_splits(splits.record))
    if not resume and main:
        prepare_output(output, overwrite)
    try:
        return _train_into(config, output, splits, device, threads, reporter, resume)
    except BaseException:
        if main and not rundir.is_complete(output) and not (output / rundir.CHECKPOINT).is_file():
            shutil.rmtree(output, ignore_errors=True)  # failed before its first checkpoint: nothing to resume
        raise
    finally:
        distributed.teardown()


def _train_into(config: Config, output: Path, splits: data_lib.Splits, device: torch.device, threads: int,
                reporter: Reporter, resume: bool = False) -> dict:
    tcfg = config.train
    main = distributed.is_main()
    if main:
        rundir.atomic_write(output / rundir.CONFIG, dump_config(config))
    if resume:
        checkpoint.check_same_data(output, splits.record)
        tokenizer = load_tokenizer(output / rundir.TOKENIZER)
    else:
        if main:
            rundir.write_json(output / rundir.SPLIT, splits.record)
        reporter.stage("Training tokenizer")
        tokenizer = build_tokenizer(splits, config)  # deterministic: every rank builds the same one
        if main:
            tokenizer.save(str(output / rundir.TOKENIZER))
    reporter.stage("Tokenizing")
    max_length = config.data.max_length
    with distributed.local_main_first():
        encoded = data_lib.encode_splits(splits, tokenizer, max_length)  # also lets go of the text

    pin = device.type == "cuda"
    # Under DDP each rank takes its slice of every batch: train.batch_size stays the optimizer's batch.
    train_loader = data_lib.make_loader(encoded["train"], tcfg.batch_size, True, config.seed, tcfg.bucket_pool,
                                        rank=distributed.rank(), world_size=distributed.world_size(), pin_memory=pin)
    val_loader = data_lib.make_loader(encoded["validation"], 256, False, pin_memory=pin)
    test_loader = data_lib.make_loader(encoded["test"], 256, False, pin_memory=pin)

    seed_everything(config.seed)
    model = build_model(config.model, tokenizer.get_vocab_size(), len(splits.label_names), max_length).to(device)
    coverage = load_pretrained(model, config, tokenizer)
    net = distributed.wrap(model, device)  # DDP under torchrun; evaluation and saving use `model` itself
    optimizer = build_optimizer(model, tcfg)
    probe_batch = deque(val_loader, maxlen=1)[0]  # the loader sorts by length: the last batch reaches furthest back
    loss_fn = nn.CrossEntropyLoss()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tcfg.amp_bf16 and device.type == "cuda")

    # Everything the loop carries lives in `p`, so a checkpoint (p + model + optimizer + RNG) restores it all.
    ckpt_path = output / rundir.CHECKPOINT
    p = checkpoint.Progress()
    if resume:
        reporter.stage(f"Resuming from {ckpt_path}")
        p = checkpoint.load(ckpt_path, model, optimizer, lr=tcfg.lr)
    with checkpoint.StopOnInterrupt() as interrupt:
        while p.epoch <= tcfg.epochs and not p.stopped:
            epoch = p.epoch
            train_loader.sampler.set_epoch(epoch, start=p.batches_done)  # skip what a resumed epoch already saw
            steps = min(len(train_loader), tcfg.max_steps or len(train_loader))
            reporter.epoch_start(epoch, tcfg.epochs, steps - p.batches_done)
            net.train()
            start = time.perf_counter() - p.seconds
            for step, batch in enumerate(train_loader, start=p.batches_done + 1):
                input_ids, lengths, y = to_device(batch, device)
                with amp:
                    logits = net(input_ids, lengths)  # [B, C]
                loss = loss_fn(logits.float(), y)
                if not torch.isfinite(loss):
                    raise non_finite_loss(loss.item(), epoch, step, tcfg, ckpt_path)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Gradients through time can explode: clip their global norm, and record it before clipping.
                norm = nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_grad_norm or float("inf"))
                p.grad_norms.append(round(float(norm), 5))
                optimizer.step()
                n = y.shape[0]
                p.batches_done, p.step = step, p.step + 1
                p.seen, p.loss_sum = p.seen + n, p.loss_sum + loss.item() * n
                p.correct += (logits.argmax(-1) == y).sum().item()
                p.tokens += int(lengths.sum())
                reporter.step(loss.item(), p.correct / p.seen, p.tokens)
                if step >= steps:
                    break  # the end-of-epoch checkpoint below covers the last step
                if interrupt.requested or (tcfg.checkpoint_every and p.step % tcfg.checkpoint_every == 0):
                    p.seconds = time.perf_counter() - start
                    if main:
                        checkpoint.save(ckpt_path, model, optimizer, p)
                    if interrupt.requested:
                        raise TrainingInterrupted(output, epoch, step)
            seconds = time.perf_counter() - start
            seen, loss_sum, correct, tokens = distributed.all_sum(p.seen, p.loss_sum, p.correct, p.tokens)  # all ranks'
            p.train_seconds, p.train_tokens = p.train_seconds + seconds, p.train_tokens + tokens
            val = predict_batches(model, val_loader, device)  # every rank scores the whole validation split
            val["accuracy"], val["loss"] = distributed.from_main(val["accuracy"], val["loss"])  # same stop everywhere
            record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                      "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
                      "tokens_per_s": tokens / seconds}
            p.history.append(record)
            if epoch in tcfg.grad_probe_epochs:
                norms = gradient_probe(model, probe_batch, device)
                if norms is not None:
                    p.probes.append({"epoch": epoch, "norms": norms})
            improved = (val["accuracy"], -val["loss"]) > (p.best["accuracy"], -p.best["loss"])
            if improved:
                p.best = {"accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch,
                          "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                p.stale = 0
            else:
                p.stale += 1
            record["best"] = improved
            reporter.epoch_end(record)
            p.stopped = p.stale >= tcfg.patience
            p.next_epoch()
            if main:
                checkpoint.save(ckpt_path, model, optimizer, p)
            if interrupt.requested:
                raise TrainingInterrupted(output, p.epoch, 0)

    reporter.stage("Scoring the test split")
    best = p.best
    model.load_state_dict(best["state"])
    test = predict_batches(model, test_loader, device)
    metrics = {
        "history": p.history,
        "best_epoch": best["epoch"],
        "validation": {"accuracy": best["accuracy"], "loss": best["loss"]},
        "test": classification_metrics(test["y_true"], test["y_pred"], splits.label_names),
        "train_seconds": p.train_seconds,
        "tokens_per_s": p.train_tokens / max(p.train_seconds, 1e-9),
        "parameters": count_parameters(model),
        "grad_norm_per_step": p.grad_norms,
        "grad_through_time": p.probes,
        "embedding_coverage": coverage,
        "device": str(device),
        "threads": threads,
        "sizes": splits.record["sizes"],
        "world_size": distributed.world_size(),
    }
    if main:
        save_run(output, model, tokenizer, splits, config, metrics)
        ckpt_path.unlink(missing_ok=True)  # the run is complete: the checkpoint (optimizer state too) has served
    return metrics


def non_finite_loss(loss: float, epoch: int, step: int, tcfg: TrainConfig, ckpt_path: Path) -> SentimentRNNError:
    """Name the step and what to try; say where the last good checkpoint is, if one was written."""
    fix = f"lower train.lr (now {tcfg.lr:g}) or set a smaller train.clip_grad_norm (now {tcfg.clip_grad_norm})"
    if ckpt_path.is_file():
        return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}; {fix}. The last checkpoint with a "
                                 f"finite loss is kept: resume it with a lower rate (sentiment-rnn train --resume "
                                 f"{ckpt_path.parent} --set train.lr={tcfg.lr / 10:g}) or train again with --overwrite")
    return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}, before the first checkpoint; {fix} "
                             "and train again")


def save_run(output: Path, model: nn.Module, tokenizer, splits: data_lib.Splits, config: Config, metrics: dict) -> None:
    """Weights, meta and figures first; metrics.json last, so its presence means the run is complete."""
    from safetensors.torch import save as save_safetensors

    from sentiment_rnn.plots import plot_gradient_norms, plot_learning_curves

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    rundir.atomic_write(output / rundir.WEIGHTS, save_safetensors(state))
    rundir.write_json(output / rundir.META, {
        "label_names": splits.label_names, "vocab_size": tokenizer.get_vocab_size(),
        "max_length": config.data.max_length, "model_kind": config.model.kind, "versions": rundir.versions()})
    plot_learning_curves(metrics["history"], output / rundir.CURVES)
    if metrics["grad_through_time"]:
        plot_gradient_norms(metrics["grad_through_time"], output / rundir.GRADIENTS, f"{config.name}: {config.model.cell}")
    rundir.write_json(output / rundir.METRICS, metrics)
