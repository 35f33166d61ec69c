"""Starting from a pretrained run (`model.init_from`): reading and checking the source run, copying its tensors.
The training techniques that keep what was pretrained (per-layer rates, schedules, gradual unfreezing) are in
optim.py.

The source is a `pretrain-lm` run or another classifier run. Its embedding and encoder are copied into the
new classifier (the head is the new task's own), and its tokenizer is reused: the copied word vectors are
indexed by that tokenizer's ids, so a newly trained vocabulary would scramble them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sentiment_rnn import rundir
from sentiment_rnn.config import SHAPE_KEYS, Config, ModelConfig
from sentiment_rnn.errors import SentimentRNNError

SHARED_PREFIXES = ("embedding.", "encoder.")  # what a classifier takes from its source run
LM_SOFTMAX_PREFIXES = ("head.head.", "head.tail.")  # a pretrain-lm run's adaptive softmax: continuing it reads it


@dataclass
class InitSource:
    path: Path  # the source run, resolved
    weights_sha256: str  # of its model.safetensors as read now
    state: dict[str, torch.Tensor]  # its embedding.* and encoder.* tensors
    lm_softmax: dict[str, torch.Tensor]  # a pretrain-lm run's head.* softmax tensors; empty for a classifier

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
    if config.model.embedding.pretrained is not None:  # loaded after the copy, the vectors would replace its rows
        raise SentimentRNNError(f"{where} brings its embedding, which model.embedding.pretrained "
                                f"'{config.model.embedding.pretrained}' would overwrite; drop one: "
                                "--set model.embedding.pretrained=null keeps the run's")
    if not run.is_dir():
        raise SentimentRNNError(f"{where} is not a directory; pass a finished pretrain-lm or train run "
                                "(e.g. runs/pretrained/lm from 'sentiment-rnn pretrain-lm --config configs/lm.yaml')")
    missing = [name for name in rundir.REQUIRED if not (run / name).is_file()]
    if missing:
        raise SentimentRNNError(f"{where} is not a finished run (no {missing[0]}); finish it "
                                f"(--resume {spec}) or point model.init_from at a complete run")
    check_same_shape(run, config.model)
    payload = (run / rundir.WEIGHTS).read_bytes()
    digest = rundir.weights_sha256(payload)
    recorded = rundir.read_json(run / rundir.META).get("weights_sha256")
    # A run saved before meta.json recorded the digest has nothing to compare against: it is not checked.
    if recorded is not None and recorded != digest:
        raise SentimentRNNError(f"{where}: {rundir.WEIGHTS} has sha256 {digest[:12]}..., but its meta.json "
                                f"records {recorded[:12]}...; the weights were changed after training, train it again")
    state = read_weights(run, payload)
    shared = {k: v for k, v in state.items() if k.startswith(SHARED_PREFIXES)}
    softmax = {k: v for k, v in state.items() if k.startswith(LM_SOFTMAX_PREFIXES)}
    return InitSource(run.resolve(), digest, shared, softmax)


def check_same_shape(run: Path, model: ModelConfig) -> None:
    source = rundir.read_config(run).model
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


def load_init(model: nn.Module, source: InitSource) -> None:
    """Copy the source's embedding and encoder tensors into the model; each one the model has must be there."""
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


