"""The run directory: everything needed to rebuild and audit a model, and nothing that executes code. Its
output checks (`--overwrite`), writer (`save_run`) and config reader serve train and pretrain-lm alike.

Layout: config.yaml (resolved), tokenizer.json, model.safetensors, meta.json (labels, sizes, versions),
split.json (held-out rows), metrics.json (written last: its presence marks a complete run), curves.png;
checkpoint.pt while training (see checkpoint.py), removed once the run is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from sentiment_rnn.errors import SentimentRNNError

CONFIG, TOKENIZER, WEIGHTS, META = "config.yaml", "tokenizer.json", "model.safetensors", "meta.json"
SPLIT, METRICS, CURVES, GRADIENTS = "split.json", "metrics.json", "curves.png", "gradients.png"
CORPUS = "corpus.json"  # pretrain-lm's record of the text it read, written first: it marks a language-model run
CHECKPOINT = "checkpoint.pt"  # only while training: a run that has one but no metrics.json can be resumed
STAGE_ONE = "stage_one.json"  # a two-stage run's record of its first stage (stages.py), written before training
ONNX_MODEL, EXPORT_FORMAT = "model.onnx", "sentiment-rnn-onnx"  # an export's graph and meta.json format
REQUIRED = (CONFIG, TOKENIZER, WEIGHTS, META, METRICS)
DEFAULT_ROOT = Path("runs")
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}  # what predict and evaluate may run a model in


def _file_mode() -> int:
    """rw for whoever the umask allows, as open() would create the file (mkstemp makes it owner-only)."""
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_writer(path: Path, mode: str = "wb", **open_args) -> Iterator[IO]:
    """A file to write into that appears at `path` only once complete: temporary file in the same folder,
    flush and fsync, rename. A reader never sees half a file; a failure leaves the old file (or none)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())  # the same mode as every other file the run writes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write bytes or text (as UTF-8) through `atomic_writer`."""
    with atomic_writer(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SentimentRNNError(f"'{path}' is missing; the run directory is incomplete, train again")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise SentimentRNNError(f"'{path}' is not valid JSON; the run directory is damaged, train again") from None


def sha256(path: Path) -> str:
    """The file's sha256, read in blocks: a large file never sits in memory whole."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights(run: Path, meta: dict) -> None:
    """The weights are those training saved: their sha256 is the one meta.json records. A run saved before
    meta.json recorded it has nothing to compare against and is not checked."""
    recorded = meta.get("weights_sha256")
    if recorded is not None and sha256(run / WEIGHTS) != recorded:
        raise SentimentRNNError(f"'{run / WEIGHTS}' is not the file training saved (its sha256 differs from "
                                f"{META}'s weights_sha256): it was changed or damaged; train again")


def versions() -> dict:
    """Python and library versions plus the git commit, recorded in meta.json for audits."""
    found = {"python": platform.python_version()}
    for package in ("torch", "datasets", "tokenizers", "sentiment-rnn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
        found["git_commit"] = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found


def save_run(output: Path, model, meta: dict, metrics: dict, figures: Callable[[], None] | None = None) -> None:
    """A finished run's files, shared by train and pretrain-lm: the weights (safetensors), meta.json (with their
    sha256, checked whenever they are read back, and the library versions), the figures, and metrics.json
    last, so that its presence means the run is complete."""
    from safetensors.torch import save as save_safetensors

    payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    atomic_write(output / WEIGHTS, payload)
    write_json(output / META, {**meta, "weights_sha256": weights_sha256(payload), "versions": versions()})
    if figures is not None:
        figures()
    write_json(output / METRICS, metrics)


def read_config(run: Path, overrides: list[str] | None = None):
    """A run's own config.yaml, with `overrides` on top: a pretrain-lm run's (lm.* keys and all), or a
    classifier's (classifier keys only; see config.load_config's saved_run)."""
    from sentiment_rnn.config import Config, LMRunConfig, load_config

    schema = LMRunConfig if holds_language_model(run) else Config
    return load_config(Path(run) / CONFIG, overrides, schema, saved_run=True)


def holds_language_model(run: Path) -> bool:
    """A pretrain-lm run's folder, finished or not: it records the corpus it read."""
    return (Path(run) / CORPUS).is_file()


def is_complete(run: Path) -> bool:
    return all((run / name).is_file() for name in REQUIRED)


def find_latest_run(root: Path = DEFAULT_ROOT) -> Path:
    """The most recently completed run under root, for predict/evaluate without --model."""
    # a hidden folder is a run that --overwrite set aside while its replacement trains (prepare_output)
    candidates = [p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".") and is_complete(p)
                  and not _is_language_model(p)] if root.is_dir() else []
    if not candidates:
        raise SentimentRNNError(f"no trained run found under '{root}/'; train one first or pass --model RUN_DIR")
    return max(candidates, key=lambda p: (p / METRICS).stat().st_mtime)


def _is_language_model(run: Path) -> bool:
    """A pretrain-lm run: complete, but with no classifier for predict, evaluate or explain to use."""
    try:
        meta = json.loads((run / META).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False  # a damaged meta.json is reported when the run is loaded
    return isinstance(meta, dict) and meta.get("kind") == "language_model"


def is_export(path: Path) -> bool:
    """An export directory (onnx_backend.py), complete or not: it has model.onnx, or a meta.json that says it is
    one. It is not a run, whatever else it holds."""
    path = Path(path)
    if (path / ONNX_MODEL).is_file():
        return True
    try:
        return json.loads((path / META).read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):  # no meta.json, or not an export's
        return False


def export_source(export: Path) -> str:
    """The run an export came from, as its meta.json records it (the folder above, if unreadable)."""
    try:
        return str(json.loads((export / META).read_text(encoding="utf-8"))["source_run"])
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return str(export.resolve().parent)


def resolve_run(model: Path | None) -> Path:
    """Check a run directory is complete, naming the first missing file."""
    run = find_latest_run() if model is None else Path(model)
    if run.exists() and not run.is_dir():
        fix = (f"pass the folder holding it, {run.parent}" if (run.parent / META).is_file()  # a run's or an export's
               else "pass a folder written by 'sentiment-rnn train'")
        raise SentimentRNNError(f"'{run}' is a file, not a run directory; {fix}")
    if not run.is_dir():
        raise SentimentRNNError(f"run directory '{run}' does not exist; pass a folder written by 'sentiment-rnn train'")
    if not (run / METRICS).is_file() and not (run / CONFIG).is_file():
        raise SentimentRNNError(f"'{run}' is not a run directory (no {CONFIG}, no {METRICS}); "
                                "pass a folder written by 'sentiment-rnn train'")
    if is_export(run):
        raise SentimentRNNError(f"'{run}' is an ONNX export, which only predict, evaluate and serve read; pass the "
                                f"run it came from ({export_source(run)}) instead")
    if not (run / METRICS).is_file():  # written last: without it, training never finished
        hint = f"resume it with: sentiment-rnn train --resume {run}" if (run / CHECKPOINT).is_file() else "train again"
        raise SentimentRNNError(f"run directory '{run}' has no {METRICS}: training did not finish; {hint}")
    for name in REQUIRED:
        if not (run / name).is_file():
            raise SentimentRNNError(f"run directory '{run}' has no {name}: train again")
    return run


@dataclass
class LoadedRun:
    path: Path
    config: object  # sentiment_rnn.config.Config
    tokenizer: object  # tokenizers.Tokenizer
    model: object  # torch.nn.Module, in eval mode
    meta: dict


def load_run(model_dir: Path | None, device: str = "cpu", precision: str = "fp32") -> LoadedRun:
    """Rebuild a trained model from its run directory; never unpickles anything.

    precision "bf16" casts the weights, so the whole forward pass runs in bfloat16: faster on a CPU with
    native bf16, with slightly different probabilities (README, benchmarks).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sentiment_rnn.models import build_model
    from sentiment_rnn.tokenizer import load_tokenizer

    if precision not in PRECISIONS:
        raise SentimentRNNError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    run = resolve_run(model_dir)
    config = read_config(run)
    meta = read_json(run / META)
    if isinstance(meta, dict) and meta.get("kind") == "language_model":
        raise SentimentRNNError(f"'{run}' is a pretrain-lm run: a language model, not a classifier (no labels to "
                                f"predict, score, explain or inspect); fine-tune one from it: {finetune_command(run)}")
    try:
        vocab_size, labels, max_length = int(meta["vocab_size"]), list(meta["label_names"]), int(meta["max_length"])
    except (KeyError, TypeError, ValueError):
        raise SentimentRNNError(
            f"'{run / META}' lacks vocab_size/label_names/max_length; the run is damaged, train again") from None
    check_weights(run, meta)
    tokenizer = load_tokenizer(run / TOKENIZER)
    if tokenizer.get_vocab_size() != vocab_size:
        raise SentimentRNNError(
            f"'{run / TOKENIZER}' has {tokenizer.get_vocab_size()} tokens but the model was built for {vocab_size}; "
            "the run directory mixes files of different runs, train again")
    model = build_model(config.model, vocab_size, len(labels), max_length)
    try:
        state = load_file(str(run / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SentimentRNNError(
            f"'{run / WEIGHTS}' is not a readable safetensors file ({str(exc)[:80]}); train again") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise SentimentRNNError(f"'{run / WEIGHTS}' does not fit config.yaml ({first}); train again") from None
    model.to(device=torch.device(device), dtype=getattr(torch, PRECISIONS[precision])).eval()
    return LoadedRun(run, config, tokenizer, model, meta)


def weights_sha256(payload: bytes) -> str:
    """The digest meta.json records for model.safetensors, so the weights can be checked when read back."""
    return hashlib.sha256(payload).hexdigest()


RUN_MARKERS = (CONFIG, CHECKPOINT, STAGE_ONE)  # a run directory holds one from its start, finished or not


def holds_any(folder: Path, markers: tuple[str, ...] = RUN_MARKERS) -> bool:
    """Whether `folder` holds one of `markers`: by default, whether it is a run directory, finished or not."""
    return any((folder / marker).exists() for marker in markers)


def check_output(output: Path, overwrite: bool, markers: tuple[str, ...] = RUN_MARKERS, what: str = "run") -> None:
    """Refuse to write into a file or over an existing run, before any time is spent on data; --overwrite
    replaces only a folder holding one of `markers` (a `what`), never other files nor the current directory."""
    if output.exists() and not output.is_dir():
        raise SentimentRNNError(f"'{output}' is a file, not a directory; choose another --output")
    try:
        # A two-stage run writes its first stage's record first; the second stage trains in beside it.
        occupied = output.is_dir() and any(p.name != STAGE_ONE for p in output.iterdir())
    except OSError as exc:
        raise SentimentRNNError(
            f"cannot read run directory '{output}' ({exc.strerror}); choose another --output") from None
    if occupied and not holds_any(output, markers):
        raise SentimentRNNError(f"'{output}' exists and is not a {what} directory; --overwrite replaces only a "
                                f"{what}, so pass an --output folder that is new, empty or a {what}")
    if overwrite and output.is_dir() and Path.cwd().resolve().is_relative_to(output.resolve()):
        raise SentimentRNNError(f"'{output}' holds the current directory, which --overwrite would delete; "
                                "run from another folder or choose another --output")
    if occupied and not overwrite:
        if (output / CHECKPOINT).is_file() and not is_complete(output):
            raise SentimentRNNError(f"run directory '{output}' holds an unfinished run; continue it with "
                                    f"--resume {output}, or pass --overwrite to start over")
        raise SentimentRNNError(f"run directory '{output}' already exists; pass --overwrite to replace it "
                                "or --output DIR to write elsewhere")


def prepare_output(output: Path, overwrite: bool, markers: tuple[str, ...] = RUN_MARKERS,
                   what: str = "run") -> Path | None:
    """Check and create `output`. A run that --overwrite replaces is renamed aside, not deleted, until the new
    one is settled (settle_replaced): where it lies now, or None."""
    check_output(output, overwrite, markers, what)
    aside = None
    if output.is_dir() and overwrite and any(output.iterdir()):
        aside = output.with_name(f".{output.name}.replaced")
        shutil.rmtree(aside, ignore_errors=True)  # left by a process killed while replacing
        output.rename(aside)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SentimentRNNError(
            f"cannot create run directory '{output}' ({exc.strerror}); choose another --output") from None
    return aside


def settle_replaced(aside: Path | None, output: Path) -> None:
    """After the run that replaces `aside` ended: put the old run back if the new one left nothing (it failed
    before a checkpoint), else delete it."""
    if aside is not None and not output.exists():
        aside.rename(output)
    elif aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def finetune_command(run: Path) -> str:
    """The command that fine-tunes a classifier from `run` with configs/finetune.yaml, with a --set for every
    shape key where the run differs from that config (init_from requires the same shape)."""
    from sentiment_rnn.config import SHAPE_KEYS, load_config

    source, shipped = read_config(run).model, load_config("finetune").model
    sets = [f"--set model.{key}={_set_value(getattr(source, key))}" for key in SHAPE_KEYS
            if getattr(source, key) != getattr(shipped, key)]
    return " ".join(["sentiment-rnn train -c finetune", *sets, f"--set model.init_from={run}"])


def _set_value(value) -> str:
    """A config value as --set reads it (YAML): lists as [a,b], booleans as true/false, None as null."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
