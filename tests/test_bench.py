"""scripts/bench.py runs end to end on small sizes and prints each figure as a ratio (no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_training_and_inference_print_ratios_and_both_accuracies(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its temp folder (runs, caches) goes away with the test
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick",
                           "--only", "training,inference", "--epochs", "1", "--seeds", "2", "--threads", "1",
                           "--set", "model.hidden_size=16", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = {row["figure"]: row for row in json.loads(out.read_text())}
    assert set(figures) == {"training tokens/s", "inference sentences/s (batch 256)", "inference, --precision bf16"}
    for row in figures.values():
        assert row["product"] > 0 and row["reference"] > 0
        assert row["ratio"] == pytest.approx(row["product"] / row["reference"])
        assert row["verdict"] in ("PASS", "FAIL")
    note = figures["training tokens/s"]["note"]
    assert "mean of 2 seed(s)" in note and "1 epochs" in note and "1 thread(s)" in note
    assert "training tokens/s" in proc.stdout
    assert "labels equal to fp32's for" in figures["inference, --precision bf16"]["note"]
