"""The package keeps its shape: scripts/check_architecture.py finds no import circle, no import climbing to a
higher layer, a closure of sentiment_rnn.train within its bound and free of speed/ and lm/, and no module or
function over its size."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_architecture_check_passes_and_prints_each_figure():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_architecture.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("import circles: 0", "imports from a lower layer to a higher one: 0", "of speed/ or lm/: 0",
                 "over: 0", "OK"):
        assert line in done.stdout, done.stdout
