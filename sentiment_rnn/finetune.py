"""Fine-tuning a classifier that starts from a pretrained run (`model.init_from`), and the training
techniques that keep what was pretrained: per-layer learning rates (`train.layer_lr_decay`), a per-batch
schedule (`train.schedule`) and gradual unfreezing (`train.unfreeze`).

The source is a `pretrain-lm` run or another classifier run. Its embedding and encoder are copied into the
new classifier (the head is the new task's own), and its tokenizer is reused: the copied word vectors are
indexed by that tokenizer's ids, so a newly trained vocabulary would scramble them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn import rundir
from sentiment_rnn.config import Config, ModelConfig, TrainConfig
from sentiment_rnn.errors import SentimentRNNError

SHARED_PREFIXES = ("embedding.", "encoder.")  # what a classifier takes from its source run
LM_SOFTMAX_PREFIXES = ("head.head.", "head.tail.")  # a pretrain-lm run's adaptive softmax (train.lm_loss_weight)
DECODER_PREFIX = "decoder."  # a sequence-autoencoder run's decoder: only pretrain-lm, continuing it, reads it
SHAPE_KEYS = ("cell", "encoder", "embedding_dim", "hidden_size", "num_layers", "hidden_sizes", "bidirectional")


def weights_sha256(payload: bytes) -> str:
    """The digest meta.json records for model.safetensors, so a source run's weights can be checked."""
    return hashlib.sha256(payload).hexdigest()


@dataclass
class InitSource:
    path: Path  # the source run, resolved
    weights_sha256: str  # of its model.safetensors as read now
    state: dict[str, torch.Tensor]  # its embedding.* and encoder.* tensors
    lm_softmax: dict[str, torch.Tensor]  # a pretrain-lm run's head.* softmax tensors; empty for a classifier
    decoder: dict[str, torch.Tensor] = field(default_factory=dict)  # an autoencoder run's decoder.* tensors

    def record(self) -> dict:
        """What the new run's meta.json says about where it started."""
        return {"path": str(self.path), "weights_sha256": self.weights_sha256}


def read_init_source(config: Config) -> InitSource | None:
    """Check model.init_from and read its shared tensors; None when the config starts from scratch.

    Runs before any data is loaded, so a wrong source fails in a second, naming both values.
    """
    spec = config.model.init_from
    if spec is None:
        return None
    run = Path(spec)
    where = f"model.init_from '{spec}'"
    if not run.is_dir():
        raise SentimentRNNError(f"{where} is not a directory; pass a finished pretrain-lm or train run "
                                "(e.g. runs/pretrained/lm from 'sentiment-rnn pretrain-lm --config configs/lm.yaml')")
    missing = [name for name in rundir.REQUIRED if not (run / name).is_file()]
    if missing:
        raise SentimentRNNError(f"{where} is not a finished run (no {missing[0]}); finish it "
                                f"(--resume {spec}) or point model.init_from at a complete run")
    check_same_shape(run, config.model)
    payload = (run / rundir.WEIGHTS).read_bytes()
    digest = weights_sha256(payload)
    recorded = rundir.read_json(run / rundir.META).get("weights_sha256")
    # A run saved before meta.json recorded the digest has nothing to compare against: it is not checked.
    if recorded is not None and recorded != digest:
        raise SentimentRNNError(f"{where}: {rundir.WEIGHTS} has sha256 {digest[:12]}..., but its meta.json "
                                f"records {recorded[:12]}...; the weights were changed after training, train it again")
    state = read_weights(run, payload)
    shared = {k: v for k, v in state.items() if k.startswith(SHARED_PREFIXES)}
    softmax = {k: v for k, v in state.items() if k.startswith(LM_SOFTMAX_PREFIXES)}
    decoder = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIX)}
    return InitSource(run.resolve(), digest, shared, softmax, decoder)


def finetune_command(run: Path) -> str:
    """The command that fine-tunes a classifier from `run` with configs/finetune.yaml, with a --set for every
    shape key where the run differs from that config (init_from requires the same shape)."""
    from sentiment_rnn.config import load_config

    source, shipped = load_config(run / rundir.CONFIG).model, load_config("finetune").model
    sets = [f"--set model.{key}={_set_value(getattr(source, key))}" for key in SHAPE_KEYS
            if getattr(source, key) != getattr(shipped, key)]
    return " ".join(["sentiment-rnn train -c finetune", *sets, f"--set model.init_from={run}"])


def _set_value(value) -> str:
    """A config value as --set reads it (YAML): lists as [a,b], booleans as true/false, None as null."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def check_same_shape(run: Path, model: ModelConfig) -> None:
    from sentiment_rnn.config import load_config

    source = load_config(run / rundir.CONFIG).model
    # The per-word baseline (compare-baseline's other model) takes only the embedding.
    keys = ("embedding_dim",) if model.kind == "per_word_linear" else SHAPE_KEYS
    for key in keys:
        theirs, ours = getattr(source, key), getattr(model, key)
        if theirs != ours:
            raise SentimentRNNError(f"model.init_from '{run}' has model.{key} {theirs}, this config has {ours}; "
                                    f"set model.{key}: {theirs} or start from a run of the same shape")


def read_weights(run: Path, payload: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        state = load_safetensors(payload)
    except (SafetensorError, OSError, ValueError) as exc:
        raise SentimentRNNError(f"model.init_from '{run}': {rundir.WEIGHTS} is not readable ({str(exc)[:80]}); "
                                "train the source run again") from None
    return state


def load_init(model: nn.Module, source: InitSource | None) -> None:
    """Copy the source's embedding and encoder tensors into the model; each one the model has must be there."""
    if source is None:
        return
    own = sorted(k for k in model.state_dict() if k.startswith(SHARED_PREFIXES))
    missing = [k for k in own if k not in source.state]
    if missing:
        raise SentimentRNNError(f"model.init_from '{source.path}' does not fit this model (it has no {missing[0]}); "
                                "start from a run of the same model.* shape")
    try:
        model.load_state_dict({k: source.state[k] for k in own}, strict=False)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise SentimentRNNError(f"model.init_from '{source.path}' does not fit this model ({first}); "
                                "start from a run of the same model.* shape") from None


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) from input to output; a model without the seam is one group. Parameters the seam
    does not name (the training-time next-word head of train.lm_loss_weight) train with the top group."""
    if not hasattr(model, "parameter_groups"):
        return [("all", list(model.parameters()))]
    groups = model.parameter_groups()
    named = {id(p) for _, params in groups for p in params}
    rest = [p for p in model.parameters() if id(p) not in named]
    if rest:
        top_name, top = groups[-1]
        groups[-1] = (top_name, top + rest)
    return groups


def layered_parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW param groups with discriminative learning rates (ULMFiT): the head gets train.lr, each group
    below it train.lr divided by train.layer_lr_decay once more. Lower layers hold the more general
    pretrained features, so they move least. Weight decay as in train.parameter_groups."""
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


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
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
