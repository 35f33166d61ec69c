"""What the installed command writes to a log file or pipe: epoch lines with no blank line between them, and
paths printed as written (a folder named 'run [v2]' keeps its brackets, never read as rich markup)."""

import shutil
import subprocess

import pytest

from conftest import TINY
from in_process import run_cli

CLI = shutil.which("sentiment-rnn") or pytest.fail("the sentiment-rnn console script is not installed")


def test_a_redirected_training_log_has_no_blank_lines_and_literal_paths(tmp_path):
    out, log = tmp_path / "run [v2]", tmp_path / "train.log"
    with log.open("w") as fh:  # stdout is a file, as with `sentiment-rnn train ... > train.log`
        proc = subprocess.run([CLI, "train", "-c", str(TINY), "-o", str(out), "--set", "train.epochs=3",
                               "--set", "train.patience=3"], stdout=fh, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 3 and epochs == list(range(epochs[0], epochs[0] + 3)), lines  # adjacent, no blank line
    assert "" not in lines[: epochs[-1] + 1], lines
    assert lines[0].endswith(f"-> {out}") and lines[-1].endswith(f"Run saved to {out}"), lines
    evaluated = run_cli("evaluate", "-m", out)  # the path as written in evaluate's table too
    assert evaluated.returncode == 0 and f"{out} on " in evaluated.stdout.replace("\n", ""), evaluated.stdout
