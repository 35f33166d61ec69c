"""What every command of the CLI shares: option types, the single error boundary (`handle_errors`), heavy
imports with the garbage collector paused, and the one parsing rule the CLI adds to Typer's: a flag never
takes a value (`predict --fast true "good"` would otherwise turn on --fast and classify the word "true").

Library code raises SentimentRNNError; only the CLI prints it (one line, `Error: ...`) and exits non-zero.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c",
    help="YAML config file, or a shipped config's name: default, gru, "
         "tutorial, ... (configs/NAME.yaml works from any folder).",
)]


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Dotted override KEY=VALUE, repeatable: --set model.hidden_size=256.",
)]


DEFAULT_CONFIG = "default"  # the shipped config every command starts from when --config is not given


ModelOpt = Annotated[Path | None, typer.Option(  # predict and evaluate: a run, or an export that needs no torch
    "--model", "-m", help="Run directory or its ONNX export; default: the most recent complete run under runs/.",
)]
RunOpt = Annotated[Path | None, typer.Option(
    "--model", "-m", help="Run directory; default: the most recent complete run under runs/.",
)]


class ReportTo(str, Enum):
    """sentiment_rnn.tracking.TRACKERS, spelled out: importing it here would slow every command's start."""
    tensorboard = "tensorboard"


ReportToOpt = Annotated[ReportTo | None, typer.Option(
    "--report-to",
    help="Also log loss, accuracy, learning rate, gradient norm and tokens/s per step and epoch into the run "
         "directory for TensorBoard (pip install 'sentiment-rnn[tensorboard]'; view: tensorboard --logdir RUN).",
)]


def escape(text: str) -> str:
    """User text and paths inside rich markup, shown as written ('runs/a[v2]' keeps its brackets); rich is
    imported here, not at start-up."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def fail(message: str, code: int = 1) -> None:
    """Print `Error: message` and exit; the message is printed as it is written, never read as rich markup
    (a hint such as pip install 'sentiment-rnn[serve]' keeps its brackets)."""
    from sentiment_rnn.console import err_console

    err_console.print(f"[bold red]Error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Map the project's errors (and Ctrl-C, and unwritable disks) to one line and an exit code."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as exc:
            from sentiment_rnn.console import err_console

            err_console.print(f"[bold yellow]Interrupted:[/bold yellow] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(130) from None
        except SentimentRNNError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "torch":
                raise
            fail("torch is not installed, and this command needs it; install it with: pip install torch==2.13.0 "
                 "(README, 'Installing PyTorch'), or predict and evaluate on an ONNX export (--model RUN/onnx)")
        except BrokenPipeError:  # the reader went away (| head): stop quietly with 1, as click does for its own
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail
            raise typer.Exit(1) from None
        except OSError as exc:
            where = f" '{exc.filename}'" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}; check the path, its permissions and free disk space")

    return wrapper


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Import torch and friends with the garbage collector paused, then freeze what they made.

    Importing torch alone runs hundreds of collections that free nothing, and each later full collection
    would walk its hundreds of thousands of objects again. Frozen objects are still freed by reference
    counting; only the cycle collector skips them. The trick itself lives in sentiment_rnn/runtime.py.
    """
    from sentiment_rnn.runtime import gc_paused

    with gc_paused():
        yield
    gc.freeze()


BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


class FlagsTakeNoValue(TyperCommand):
    """A command that refuses `--flag true` (or false, yes, no, ...) with a usage error saying how to write it."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        flags = {name for p in self.params if getattr(p, "is_flag", False) for name in (*p.opts, *p.secondary_opts)}
        for flag, following in zip(args, args[1:], strict=False):
            if flag == "--":
                break
            if flag in flags and following.lower() in BOOL_WORDS:
                raise typer.BadParameter(f"{flag} is a flag and takes no value: write {flag} to turn it on, leave "
                                         f"it out to leave it off (to pass the text {following!r}, put it after --)",
                                         ctx=ctx, param_hint=flag)
        return super().parse_args(ctx, args)
