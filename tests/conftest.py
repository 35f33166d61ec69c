"""Shared fixtures: one tiny trained run for the whole session, and a pinned terminal width."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("COLUMNS", "200")  # rich reads it when its consoles are created: stable, unwrapped output
# pytest runs one worker per core (-n auto): each worker, and the CLI it starts, takes one core, not all
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A complete run of configs/tiny.yaml, trained once per session; copy it before tampering with it."""
    from sentiment_rnn.config import load_config
    from sentiment_rnn.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(load_config(TINY), out)
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """The ONNX export of tiny_run, written once per session; copy it before tampering with it."""
    from sentiment_rnn.export import export_run

    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    export_run(tiny_run, out)
    return out
