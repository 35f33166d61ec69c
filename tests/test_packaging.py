"""The shipped configs live in the package: a wheel installed anywhere runs `--config default` and friends."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sentiment_rnn.config import load_config, packaged_configs
from sentiment_rnn.errors import SentimentRNNError

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_in_the_clone_is_a_packaged_config():
    assert {p.stem for p in (ROOT / "configs").glob("*.yaml")} == set(packaged_configs())


@pytest.mark.parametrize("spec", ["gru", "gru.yaml", "configs/gru.yaml"])
def test_a_shipped_config_is_found_by_name_from_any_folder(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(spec)
    assert (cfg.name, cfg.model.cell) == ("gru", "gru")


def test_a_local_file_wins_over_a_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gru.yaml").write_text("model:\n  cell: lstm\n")
    assert load_config("gru.yaml").model.cell == "lstm"


def test_an_unknown_config_lists_the_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SentimentRNNError, match=r"config file 'nope' not found; .*default.*gru"):
        load_config("nope")


@pytest.mark.slow
def test_a_built_wheel_trains_the_default_config_from_an_empty_folder(tmp_path):
    """Build the wheel, install it alone into a fresh venv (dependencies seen from this one) and train."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("sentiment_rnn-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # The fresh venv sees this environment's packages (torch, datasets, ...) but not its editable checkout.
    Path(fresh_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "import sentiment_rnn; print(sentiment_rnn.__file__)"], cwd=work,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(fresh_site), where
    cli = venv / "bin" / "sentiment-rnn"
    result = subprocess.run([cli, "train", "--config", "default", "--set", "data.limit=300", "--set", "train.epochs=1",
                             "--set", "stage_one.limit=300", "--set", "stage_one.epochs=1",
                             "--set", "model.hidden_size=8", "--set", "train.threads=1"],
                            cwd=work, capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lstm" in result.stdout and (work / "runs" / "default" / "metrics.json").is_file()
    shown = subprocess.run([cli, "inspect", "--config", "configs/tutorial.yaml", "--json"], cwd=work,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and '"W_hh' in shown.stdout, shown.stderr
