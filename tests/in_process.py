"""`sentiment-rnn ...` run inside the test process, answered the way subprocess.run answers.

For tests of what a command does with its options and files. A fresh process spends most of a tiny
command's time importing torch, datasets and scikit-learn, which this skips. Tests of the process itself
(the installed script, pipes and stdin, signals, what gets imported, output redirected to a file) keep
running the installed `sentiment-rnn` with subprocess.run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from typer.testing import CliRunner


def run_cli(*args, input: str | bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command's exit code, stdout and stderr (text), as subprocess.run(..., capture_output=True, text=True).

    An exception the command's error boundary let through is raised here: the installed script would have
    printed its traceback, and a test must fail on it rather than read an empty stderr.
    """
    from sentiment_rnn.cli import app

    argv = [str(arg) for arg in args]
    with _working_directory(cwd):
        result = CliRunner().invoke(app, argv, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["sentiment-rnn", *argv], result.exit_code, result.stdout, result.stderr)


@contextlib.contextmanager
def _working_directory(folder: Path | None) -> Iterator[None]:
    """Run inside `folder` (None: where we are), as subprocess.run(cwd=...); contextlib.chdir needs Python 3.11."""
    before = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
