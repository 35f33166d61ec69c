"""Training: load config -> data -> tokenizer -> model -> optimizer -> explicit loop -> save the run.

Reads top to bottom. The loop evaluates on the validation split every epoch, keeps the best epoch's
weights and stops early after `patience` epochs without improvement; the test split is scored once,
at the end, with the kept weights.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sentiment_rnn import data as data_lib
from sentiment_rnn import rundir
from sentiment_rnn.config import Config, TrainConfig, dump_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.metrics import classification_metrics
from sentiment_rnn.models import build_model, count_parameters
from sentiment_rnn.tokenizer import train_tokenizer


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


def configure_threads(threads: int | None) -> int:
    """Intra-op threads: all cores up to 4 by default; more only adds contention for small RNN matmuls."""
    n = threads or max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n


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
    return torch.optim.AdamW(groups, lr=cfg.lr)


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
    """Mean ||dLoss/dh_t|| of the top layer, indexed by steps back from each sentence's last real token.

    This is backpropagation through time made visible: in a tanh RNN the norm shrinks geometrically
    with distance from the loss (vanishing gradients); gated cells (GRU/LSTM) keep it up.
    """
    if not hasattr(model, "encoder"):
        return None  # the per-word baseline has no hidden state
    model.eval()
    input_ids, lengths, y = to_device(batch, device)
    with torch.enable_grad():
        logits, out = model(input_ids, lengths, return_outputs=True)  # out [T, B, D*H]
        out.retain_grad()
        nn.functional.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    grad = out.grad.float().norm(dim=-1)  # [T, B]
    steps = int(lengths.max())
    back = torch.arange(steps, device=grad.device).view(-1, 1)  # [S, 1] steps back from the end
    t = lengths.view(1, -1) - 1 - back  # [S, B] time index of "k steps back" per sentence
    valid = t >= 0  # [S, B]
    picked = grad.gather(0, t.clamp(min=0)) * valid  # [S, B]
    return (picked.sum(1) / valid.sum(1).clamp(min=1)).tolist()


def prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise SentimentRNNError(f"run directory '{output}' already exists; pass --overwrite to replace it "
                                    "or --output DIR to write elsewhere")
        shutil.rmtree(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SentimentRNNError(f"cannot create run directory '{output}' ({exc.strerror}); choose another --output") from None


def train(config: Config, output: Path, reporter: Reporter | None = None, overwrite: bool = False) -> dict:
    """Train, evaluate and save a run; returns metrics.json's content. On failure no complete run remains."""
    reporter = reporter or Reporter()
    output = Path(output)
    device = resolve_device(config.train.device)
    threads = configure_threads(config.train.threads)
    seed_everything(config.seed)

    reporter.stage("Loading data")
    splits = data_lib.load_splits(config.data, config.seed)
    prepare_output(output, overwrite)
    try:
        return _train_into(config, output, splits, device, threads, reporter)
    except BaseException:
        if not rundir.is_complete(output):
            shutil.rmtree(output, ignore_errors=True)
        raise


def _train_into(config: Config, output: Path, splits: data_lib.Splits, device: torch.device, threads: int,
                reporter: Reporter) -> dict:
    tcfg = config.train
    rundir.atomic_write(output / rundir.CONFIG, dump_config(config))
    rundir.write_json(output / rundir.SPLIT, splits.record)

    reporter.stage("Training tokenizer")
    tokenizer = build_tokenizer(splits, config)
    tokenizer.save(str(output / rundir.TOKENIZER))
    reporter.stage("Tokenizing")
    max_length = config.data.max_length
    encoded = {name: data_lib.encode(ds, tokenizer, max_length)
               for name, ds in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))}

    pin = device.type == "cuda"
    train_loader = data_lib.make_loader(encoded["train"], tcfg.batch_size, True, config.seed, tcfg.bucket_pool, pin_memory=pin)
    val_loader = data_lib.make_loader(encoded["validation"], 256, False, pin_memory=pin)
    test_loader = data_lib.make_loader(encoded["test"], 256, False, pin_memory=pin)

    seed_everything(config.seed)
    model = build_model(config.model, tokenizer.get_vocab_size(), len(splits.label_names), max_length).to(device)
    coverage = load_pretrained(model, config, tokenizer)
    optimizer = build_optimizer(model, tcfg)
    probe_batch = next(iter(val_loader))
    loss_fn = nn.CrossEntropyLoss()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tcfg.amp_bf16 and device.type == "cuda")

    history, grad_norms, probes = [], [], []
    best = {"accuracy": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    train_seconds, train_tokens, stale = 0.0, 0, 0
    for epoch in range(1, tcfg.epochs + 1):
        train_loader.sampler.set_epoch(epoch)
        steps = min(len(train_loader), tcfg.max_steps or len(train_loader))
        reporter.epoch_start(epoch, tcfg.epochs, steps)
        model.train()
        start, seen, correct, loss_sum, tokens = time.perf_counter(), 0, 0, 0.0, 0
        for step, batch in enumerate(train_loader, start=1):
            input_ids, lengths, y = to_device(batch, device)
            with amp:
                logits = model(input_ids, lengths)  # [B, C]
            loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise SentimentRNNError(f"loss became {loss.item()} at epoch {epoch} step {step}; "
                                        "lower train.lr or set train.clip_grad_norm")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Gradients through time can explode: clip their global norm, and record it before clipping.
            norm = nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_grad_norm or float("inf"))
            grad_norms.append(round(float(norm), 5))
            optimizer.step()
            n = y.shape[0]
            seen, loss_sum = seen + n, loss_sum + loss.item() * n
            correct += (logits.argmax(-1) == y).sum().item()
            tokens += int(lengths.sum())
            reporter.step(loss.item(), correct / seen, tokens)
            if step >= steps:
                break
        seconds = time.perf_counter() - start
        train_seconds, train_tokens = train_seconds + seconds, train_tokens + tokens
        val = predict_batches(model, val_loader, device)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
                  "tokens_per_s": tokens / seconds}
        history.append(record)
        if epoch in tcfg.grad_probe_epochs:
            norms = gradient_probe(model, probe_batch, device)
            if norms is not None:
                probes.append({"epoch": epoch, "norms": norms})
        improved = (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"])
        if improved:
            best = {"accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            stale = 0
        else:
            stale += 1
        record["best"] = improved
        reporter.epoch_end(record)
        if stale >= tcfg.patience:
            break

    reporter.stage("Scoring the test split")
    model.load_state_dict(best["state"])
    test = predict_batches(model, test_loader, device)
    metrics = {
        "history": history,
        "best_epoch": best["epoch"],
        "validation": {"accuracy": best["accuracy"], "loss": best["loss"]},
        "test": classification_metrics(test["y_true"], test["y_pred"], splits.label_names),
        "train_seconds": train_seconds,
        "tokens_per_s": train_tokens / max(train_seconds, 1e-9),
        "parameters": count_parameters(model),
        "grad_norm_per_step": grad_norms,
        "grad_through_time": probes,
        "embedding_coverage": coverage,
        "device": str(device),
        "threads": threads,
        "sizes": splits.record["sizes"],
    }
    save_run(output, model, tokenizer, splits, config, metrics)
    return metrics


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
