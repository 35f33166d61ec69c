"""The optimizer and its learning rate, shared by `train` and `pretrain-lm`: AdamW's parameter groups, per-layer
rates (`train.layer_lr_decay`), the per-batch schedule (`train.schedule`) and gradual unfreezing
(`train.unfreeze`). Every trainer builds its optimizer here, so changing it is one edit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sentiment_rnn.config import TrainConfig


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
    groups = layered_parameter_groups(model, cfg) if layered else parameter_groups(model, cfg)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) from input to output; a model without the seam is one group."""
    if not hasattr(model, "parameter_groups"):
        return [("all", list(model.parameters()))]
    return model.parameter_groups()


def layered_parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW param groups with discriminative learning rates (ULMFiT): the head gets train.lr, each group
    below it train.lr divided by train.layer_lr_decay once more. Lower layers hold the more general
    pretrained features, so they move least. Weight decay as in parameter_groups."""
    groups = []
    names = {id(p): n for n, p in model.named_parameters()}
    for depth, (name, params) in enumerate(reversed(layer_groups(model))):
        scale = cfg.layer_lr_decay ** -depth
        decay = [p for p in params if p.ndim >= 2 and not names[id(p)].startswith("embedding")]
        no_decay = [p for p in params if p.ndim < 2 or names[id(p)].startswith("embedding")]
        for subset, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if subset:
                groups.append({"params": subset, "weight_decay": wd, "lr": cfg.lr * scale, "lr_scale": scale,
                               "name": name})
    return groups


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """train.schedule as a torch.optim.lr_scheduler stepped once per batch, or None for constant.

    onecycle: OneCycleLR (warm up over the first 10% of all steps, then cosine decay), close to ULMFiT's
    slanted triangular rate. warmup_linear: a linear warm-up over train.warmup_steps, then linear decay to
    zero at the last step. Both start low, so a random head's first large gradients cannot wreck the
    pretrained layers. The total is epochs x steps; early stopping may end before the decay finishes.
    """
    if cfg.schedule == "constant":
        return None
    total = max(1, cfg.epochs * steps_per_epoch)
    peaks = [group["lr"] for group in optimizer.param_groups]
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=0.1,
                                                   cycle_momentum=False)
    warmup = min(cfg.warmup_steps, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_groups(epoch: int, cfg: TrainConfig, count: int) -> int:
    """How many layer groups, counted from the head down, train in `epoch` (1-based) under train.unfreeze."""
    if cfg.unfreeze is None:
        return count
    return min(count, math.ceil(epoch / cfg.unfreeze))


def apply_unfreeze(model: nn.Module, epoch: int, cfg: TrainConfig, frozen_embedding: bool = False) -> None:
    """Gradual unfreezing: the head alone first, then one more layer group every train.unfreeze epochs.

    A frozen parameter gets no gradient, and AdamW skips parameters without one, so it neither moves nor
    decays. A pretrained embedding frozen by model.embedding.freeze stays frozen.
    """
    if cfg.unfreeze is None:
        return
    layers = layer_groups(model)
    open_from = len(layers) - trainable_groups(epoch, cfg, len(layers))
    for index, (name, params) in enumerate(layers):
        train = index >= open_from and not (name == "embedding" and frozen_embedding)
        for param in params:
            param.requires_grad_(train)
