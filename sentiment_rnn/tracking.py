"""Experiment tracking: training's scalars written for TensorBoard (`train --report-to tensorboard`).

The training loop holds one logger and calls it twice, after each optimizer step and after each epoch;
without --report-to the logger does nothing. Events go into the run directory itself, so
`tensorboard --logdir runs/` (or a sweep's folder) shows every run side by side.
"""

from __future__ import annotations

from pathlib import Path

from sentiment_rnn.errors import SentimentRNNError

TRACKERS = ("tensorboard",)  # what --report-to accepts


def learning_rate(optimizer) -> float:
    """The rate of the optimizer's first parameter group: train.lr as scheduled (the head's, with
    train.layer_lr_decay's per-layer groups)."""
    return optimizer.param_groups[0]["lr"]


class NoLogger:
    """What the loop calls when nothing is reported; a context manager that closes the logger."""

    def step(self, step: int, loss: float, grad_norm: float, optimizer) -> None: ...
    def epoch(self, record: dict, optimizer) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> NoLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardLogger(NoLogger):
    """Per optimizer step: loss, gradient norm (before clipping) and learning rate. Per epoch, keyed by the
    epoch: the history record (train and validation loss and accuracy, tokens/s, seconds), the learning
    rate and the mean gradient norm of the epoch's steps (of those since a resume, for a resumed epoch)."""

    def __init__(self, run: Path):
        self.writer = _summary_writer()(log_dir=str(run))
        self.norms: list[float] = []

    def step(self, step: int, loss: float, grad_norm: float, optimizer) -> None:
        self.norms.append(grad_norm)
        self.writer.add_scalar("step/loss", loss, step)
        self.writer.add_scalar("step/grad_norm", grad_norm, step)
        self.writer.add_scalar("step/lr", learning_rate(optimizer), step)

    def epoch(self, record: dict, optimizer) -> None:
        epoch = record["epoch"]
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "tokens_per_s", "seconds"):
            self.writer.add_scalar(f"epoch/{key}", record[key], epoch)
        self.writer.add_scalar("epoch/lr", learning_rate(optimizer), epoch)
        if self.norms:
            self.writer.add_scalar("epoch/grad_norm", sum(self.norms) / len(self.norms), epoch)
        self.norms = []
        self.writer.flush()  # an epoch's figures are on disk at once, and survive a kill

    def close(self) -> None:
        self.writer.close()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise SentimentRNNError("--report-to tensorboard needs the tensorboard package; install it with: "
                                "pip install 'sentiment-rnn[tensorboard]'") from None
    return SummaryWriter


def check(report_to: str | None) -> None:
    """Refuse an unknown tracker or a missing package before any time goes into data."""
    if report_to is None:
        return
    if report_to not in TRACKERS:
        raise SentimentRNNError(f"unknown --report-to '{report_to}'; choose one of {', '.join(TRACKERS)}")
    _summary_writer()


def open_logger(report_to: str | None, run: Path) -> NoLogger:
    """The logger for `report_to` writing into the run directory, or one that does nothing."""
    check(report_to)
    return NoLogger() if report_to is None else TensorBoardLogger(run)
