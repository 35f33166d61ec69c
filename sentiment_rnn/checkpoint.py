"""The training loops' shared state: the `Progress` they carry, the `Reporter` hooks they call, seeding, and
checkpoints, everything a killed or interrupted run of `train` or `pretrain-lm` needs to continue exactly
where it stopped.

`checkpoint.pt` is a `torch.save` of plain containers only (state dicts, tensors, numbers, strings), read
back with `torch.load(weights_only=True)`, so a tampered file can fail to load but can never run code.
It is written atomically (temporary file, fsync, rename): a kill during the write leaves the previous one.

A complete run keeps its last checkpoint as `final_state.pt` (the last epoch's weights, optimizer and
progress, not the best epoch's), so `train --resume RUN --set train.epochs=N` can continue it with more
epochs. `checkpoint.pt` itself keeps its meaning: present only while a run is unfinished and resumable.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import signal
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sentiment_rnn import rundir
from sentiment_rnn.config import Config, TrainConfig, load_config
from sentiment_rnn.errors import SentimentRNNError

FORMAT = 1  # bump when the layout changes, so an old checkpoint fails with a clear message
# The only keys a resume may change: the cures for a NaN loss, and more epochs for a finished run.
ADJUSTABLE = ("train.epochs", "train.lr", "train.clip_grad_norm")
FINAL = "final_state.pt"  # a complete run's last checkpoint, kept so that more epochs can continue it


@dataclass
class Progress:
    """Everything a training loop carries from step to step (besides model, optimizer, RNG and, for the
    language model's stream, the hidden state). train and pretrain-lm share it; each uses the fields it needs."""

    epoch: int = 1  # epoch in progress, 1-based
    batches_done: int = 0  # batches of that epoch already trained on; a resume skips them
    step: int = 0  # optimizer steps over all epochs
    seen: int = 0  # this epoch so far: sentences,
    correct: int = 0  # correctly classified sentences,
    loss_sum: float = 0.0  # summed loss (pretrain-lm: summed over tokens),
    tokens: int = 0  # real (non-pad) tokens (pretrain-lm: predicted tokens),
    seconds: float = 0.0  # and training time
    history: list = field(default_factory=list)  # one record per finished epoch
    grad_norms: list = field(default_factory=list)  # global gradient norm per step, before clipping
    probes: list = field(default_factory=list)  # dLoss/dh_t per probed epoch
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "loss": math.inf, "epoch": 0, "state": None})
    stale: int = 0  # epochs since the validation score last improved
    train_seconds: float = 0.0  # over finished epochs
    train_tokens: int = 0  # over finished epochs
    stopped: bool = False  # early stopping fired: a resume goes straight to scoring the test split
    losses: list = field(default_factory=list)  # pretrain-lm: training loss of every step, for its learning curve

    def next_epoch(self) -> None:
        self.epoch, self.batches_done = self.epoch + 1, 0
        self.seen, self.correct, self.loss_sum, self.tokens, self.seconds = 0, 0, 0.0, 0, 0.0


class StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop at the next step boundary, so the checkpoint it writes is
    consistent; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def rng_state() -> dict:
    """Every random generator training draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, scheduler=None,
         hidden=None) -> None:
    """Serialise to memory first, then write atomically: a reader sees the old checkpoint or the new one.
    `hidden`: the state pretrain-lm's stream carries into its next segment, h or (h, c)."""
    hidden = [] if hidden is None else list(hidden) if isinstance(hidden, tuple) else [hidden]
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": asdict(progress), "rng": rng_state(), "hidden": hidden,
                "scheduler": scheduler.state_dict() if scheduler is not None else None}, buffer)
    rundir.atomic_write(path, buffer.getvalue())


def read(path: Path) -> dict:
    """The checkpoint's containers, loaded with weights_only=True; one-line errors for damaged files."""
    damaged = f"'{path}' is damaged or was not written by sentiment-rnn"
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; our error says enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles arbitrary objects
    except pickle.UnpicklingError:
        raise SentimentRNNError(
            f"{damaged}: it holds Python objects, not only tensors and plain values, and "
            "was not loaded (it may have been tampered with); train again with --overwrite") from None
    except Exception as exc:
        reason = str(exc).strip().split(". ")[0].splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SentimentRNNError(f"{damaged} ({reason}); train again with --overwrite") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == "lm-1":  # pretrain-lm's own layout before FORMAT 1 served both
        raise SentimentRNNError(f"'{path}' was written by an earlier pretrain-lm, whose optimizer this version no "
                                "longer builds; start the run again with --overwrite")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SentimentRNNError(f"{damaged} (unknown checkpoint format); train again with --overwrite")
    return ckpt


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, scheduler=None):
    """Restore model, optimizer, scheduler and RNG states in place; return the loop's progress and the carried
    hidden state (None unless pretrain-lm's stream saved one).

    `lr` is the config's learning rate: without a schedule it replaces the saved one (times each group's
    lr_scale from train.layer_lr_decay), since a resume may have lowered it; a schedule's own state sets
    the rate instead (resume_config refuses a changed lr under a schedule).
    """
    ckpt = read(path)
    damaged = f"'{path}' is damaged or was not written by sentiment-rnn"
    try:
        progress = Progress(**ckpt["progress"])
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is None:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        else:
            scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:160]
        raise SentimentRNNError(f"{damaged} ({reason}); train again with --overwrite") from None
    hidden = ckpt.get("hidden") or None
    return progress, (hidden if hidden is None else tuple(hidden) if len(hidden) == 2 else hidden[0])


def due(cfg: TrainConfig, progress: Progress) -> bool:
    """train.checkpoint_every optimizer steps have passed since the last mid-epoch checkpoint."""
    return bool(cfg.checkpoint_every) and progress.step % cfg.checkpoint_every == 0


def check_resumable(run: Path, epochs: int | None = None) -> None:
    """An unfinished run resumes from its checkpoint; a finished one continues only when `epochs` (the
    train.epochs asked for) is more than its own (see check_continuable)."""
    run = Path(run)
    if rundir.is_export(run):  # it holds the run's config.yaml, but no checkpoint
        raise SentimentRNNError(f"cannot resume: '{run}' is an ONNX export; resume the run it came from "
                                f"({rundir.export_source(run)})")
    # a folder of other files is no run either (--overwrite, the hint below, refuses it); an empty one can be
    if not run.is_dir() or (any(run.iterdir()) and not rundir.holds_any(run)):
        raise SentimentRNNError(f"cannot resume: '{run}' is not a run directory; pass the folder of an unfinished run")
    if rundir.is_complete(run):
        check_continuable(run, epochs)
    elif not (run / rundir.CHECKPOINT).is_file():
        raise SentimentRNNError(f"cannot resume: '{run}' has no {rundir.CHECKPOINT} (training stopped before its "
                                "first checkpoint); train again with --overwrite")


def check_continuable(run: Path, epochs: int | None) -> None:
    """A finished run continues from its final state when asked for more epochs than it was configured for."""
    own, final = rundir.read_config(run).train.epochs, (run / FINAL).is_file()
    if epochs is None or epochs == own:  # a run without FINAL (a pretrain-lm run) cannot take more epochs
        more = f", or continue it with more epochs: --set train.epochs=N with N > {own}" if final else ""
        raise SentimentRNNError(f"cannot resume: run '{run}' already finished; train a new run with --output DIR{more}")
    if epochs < own:
        raise SentimentRNNError(f"cannot continue run '{run}': train.epochs={epochs} is not more than its own "
                                f"train.epochs={own}; pass a larger value, e.g. --set train.epochs={2 * own}")
    if not final:
        raise SentimentRNNError(f"cannot continue run '{run}': it has no {FINAL} (its last epoch's weights and "
                                "optimizer state) to continue from; train a new run with --output DIR")


def keep_final(run: Path) -> None:
    """Copy the last checkpoint to FINAL; called before metrics.json, so a complete run always has it."""
    rundir.atomic_write(run / FINAL, (run / rundir.CHECKPOINT).read_bytes())


def reopen(run: Path) -> tuple[int, bool]:
    """Turn a finished run back into an unfinished one that resumes after its last epoch.

    The final state becomes checkpoint.pt, then metrics.json goes (one atomic unlink): from then on the run
    reads as unfinished and resumable until the continued run writes metrics.json last; a kill at any
    point leaves either the finished run or a resumable one. A run that had stopped early gets a fresh
    patience: the user asked for more epochs. Returns the epoch it continues with, and whether early
    stopping was reset.
    """
    ckpt = read(run / FINAL)
    try:
        progress = Progress(**ckpt["progress"])
    except (KeyError, TypeError):
        raise SentimentRNNError(
            f"'{run / FINAL}' is damaged (no readable progress); train a new run with --output DIR") from None
    stopped = progress.stopped
    if stopped:
        progress.stopped, progress.stale = False, 0
        ckpt["progress"] = asdict(progress)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    rundir.atomic_write(run / rundir.CHECKPOINT, buffer.getvalue())
    (run / rundir.METRICS).unlink()
    return progress.epoch, stopped


def resume_config(run: Path, config_path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of the run to resume: its own config.yaml. A resume continues the same run, so
    --config/--set may restate that config, and change only the ADJUSTABLE keys (e.g. a lower lr, or
    more epochs for a finished run)."""
    run = Path(run)
    finished = run.is_dir() and rundir.is_complete(run)
    if not finished:
        check_resumable(run)
    config = rundir.read_config(run)
    asked = config
    if config_path is not None:
        asked = load_config(config_path, overrides, type(config))
    elif overrides:
        asked = rundir.read_config(run, overrides)
    changed = [k for k in _changed_keys(config.model_dump(mode="json"), asked.model_dump(mode="json"))
               if k not in ADJUSTABLE]
    if asked.train.lr != config.train.lr and config.train.schedule != "constant":
        raise SentimentRNNError(f"--resume cannot change train.lr of '{run}': its train.schedule "
                                f"{config.train.schedule} sets the rate per step; drop --set train.lr, or start a "
                                "new run with --output DIR")
    if changed:
        raise SentimentRNNError(f"--resume continues '{run}' with its own config.yaml, but --config/--set change "
                                f"{', '.join(changed[:3])}; a resume may change only {', '.join(ADJUSTABLE)}: "
                                "drop the others, or start a new run with --output DIR")
    if asked.train.epochs != config.train.epochs and config.train.schedule != "constant":
        raise SentimentRNNError(f"--resume cannot change train.epochs of '{run}': its train.schedule "
                                f"{config.train.schedule} spreads its rate over {config.train.epochs} epochs; start a "
                                "new run with --output DIR and the epochs you want")
    if finished:  # after the config checks: "pass more epochs" would only lead to their error
        check_resumable(run, asked.train.epochs)
    if asked.train.epochs < config.train.epochs:
        raise SentimentRNNError(f"--resume may raise train.epochs, not lower it ({config.train.epochs} -> "
                                f"{asked.train.epochs}); drop --set train.epochs or start a new run with --output DIR")
    return asked


def check_same_data(run: Path, record: dict) -> None:
    """A resume must see exactly the rows the run started with."""
    if json.loads(json.dumps(record)) != rundir.read_json(Path(run) / rundir.SPLIT):
        raise SentimentRNNError(f"the data of '{run}' changed since training started ({rundir.SPLIT} no longer "
                                "matches); restore the data or train again with --overwrite")


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


def seed_everything(seed: int) -> None:
    """Seed every generator training draws from (rng_state lists them), so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Reporter:
    """Progress hooks; the CLI fills them with rich output, library code never prints."""

    def stage(self, text: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


def reopen_finished(output: Path, split_record: dict, epochs: int, reporter: Reporter) -> None:
    """Make a finished run resumable again from its last epoch, once its data is known to be the same."""
    check_same_data(output, split_record)
    epoch, stopped_early = reopen(output)
    reset = f"; early stopping had ended it after epoch {epoch - 1}, patience starts afresh" if stopped_early else ""
    more = f"epoch {epoch}" if epoch == epochs else f"epochs {epoch} to {epochs}"
    reporter.stage(f"Continuing the finished run with {more}{reset}")


def non_finite_loss(loss: float, epoch: int, step: int, cfg: TrainConfig, ckpt_path: Path,
                    command: str = "train") -> SentimentRNNError:
    """Name the step and what to try; say where the last good checkpoint is, if one was written."""
    clip = (f"set a smaller train.clip_grad_norm (now {cfg.clip_grad_norm})" if cfg.clip_grad_norm is not None
            else "clip gradients with train.clip_grad_norm=1.0 (now off)")
    fix = f"lower train.lr (now {cfg.lr:g}) or {clip}"
    if ckpt_path.is_file():
        return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}; {fix}. The last checkpoint with a "
                                 f"finite loss is kept: resume it with a lower rate (sentiment-rnn {command} --resume "
                                 f"{ckpt_path.parent} --set train.lr={cfg.lr / 10:g}) or train again with --overwrite")
    return SentimentRNNError(f"loss became {loss} at epoch {epoch} step {step}, before the first checkpoint; {fix} "
                             "and train again")
