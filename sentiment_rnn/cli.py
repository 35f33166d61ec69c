"""The `sentiment-rnn` command: thin Typer commands over plain functions.

Each command parses its options, calls one library function and renders the result with rich. Library
code raises SentimentRNNError; only this module prints it (one line, `Error: ...`) and exits non-zero.
Heavy imports (datasets, matplotlib, sklearn) happen inside the commands that need them, so `predict`
starts quickly.
"""

from __future__ import annotations

import gc
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from sentiment_rnn import __version__
from sentiment_rnn.cli_parsing import FlagsTakeNoValue
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted

# rich_markup_mode None: click's plain help wraps at word boundaries and shows no <bool> after a flag
app = typer.Typer(help="Train, evaluate and serve recurrent (RNN) sentiment classifiers.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c",
    help="YAML config file, or a shipped config's name: default, gru, "
         "tutorial, ... (configs/NAME.yaml works from any folder).",
)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Dotted override KEY=VALUE, repeatable: --set model.hidden_size=256.",
)]
DEFAULT_CONFIG = "default"  # the shipped config every command starts from when --config is not given
ModelOpt = Annotated[Path | None, typer.Option(
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
    from rich.markup import escape

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
            from rich.markup import escape

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
        except OSError as exc:
            where = f" '{exc.filename}'" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}; check the path, its permissions and free disk space")

    return wrapper


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sentiment-rnn {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Train, evaluate and serve recurrent (RNN) sentiment classifiers."""


@contextmanager
def _heavy_imports() -> Iterator[None]:
    """Import torch and friends with the garbage collector paused, then freeze what they made.

    Importing torch alone runs hundreds of collections that free nothing, and each later full collection
    would walk its hundreds of thousands of objects again. Frozen objects are still freed by reference
    counting; only the cycle collector skips them. The trick itself lives in sentiment_rnn/speed/process.py.
    """
    from sentiment_rnn.speed.process import gc_paused

    with gc_paused():
        yield
    gc.freeze()


def config_and_output(config: Path | None, default: str, set_: list[str] | None, output: Path | None,
                      overwrite: bool, resume: Path | None, runs: Path):
    """The run's config and directory: a resumed run's own (with the --set keys a resume may change), else
    --config (or the shipped `default`) and --output, or runs/<config name>/."""
    from sentiment_rnn.config import load_config

    if resume is None:
        cfg = load_config(config or default, set_)
        return cfg, output or runs / cfg.name
    from sentiment_rnn.checkpoint import resume_config

    if overwrite or (output is not None and output != resume):
        raise SentimentRNNError("--resume continues the run in its own directory; drop --overwrite and --output")
    return resume_config(resume, config, set_), resume


@app.command()
@handle_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run directory; default runs/<config name>/.",
    )] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume",
        help="Continue the unfinished run in this directory from its last checkpoint, with its own "
             "config.yaml; --set may change only train.epochs, train.lr and train.clip_grad_norm. A "
             "finished run continues from its last epoch with --set train.epochs=N, N above its own.",
    )] = None,
    report_to: ReportToOpt = None,
) -> None:
    """Train a classifier from a YAML config (default: the shipped `default`) and save the run directory."""
    with _heavy_imports():
        from sentiment_rnn.console import RichReporter, console, metrics_table
        from sentiment_rnn.distributed import is_main
        from sentiment_rnn.stages import pending_config
        from sentiment_rnn.stages import train as train_run

    pending = pending_config(resume) if resume is not None else None  # a run stopped in its first stage
    cfg, out = (pending, resume) if pending else config_and_output(config, DEFAULT_CONFIG, set_, output, overwrite,
                                                                   resume, Path("runs"))
    if is_main():  # under torchrun every rank runs this command; rank 0 alone prints
        console.print(f"[bold]Training[/bold] {escape(cfg.name)}: {cfg.model.kind} ({cfg.model.cell}, "
                      f"{cfg.model.layer_sizes()}) on {escape(cfg.data.source)} -> {escape(str(out))}", highlight=False)
    metrics = train_run(cfg, out, RichReporter(), overwrite=overwrite, resume=resume is not None,
                        report_to=report_to and report_to.value)
    if not is_main():
        return
    if "stage_one" in metrics:
        first = metrics["stage_one"]
        console.print(f"Stage 1 ({first['action']}): {first['path']}, validation accuracy "
                      f"{first['validation']['accuracy']:.3f}, {first['train_seconds']:.1f}s of training")
    console.print(metrics_table(metrics["test"], f"Test split (best epoch {metrics['best_epoch']})"))
    console.print(f"Trained in {metrics['train_seconds']:.1f}s at {metrics['tokens_per_s']:,.0f} tokens/s; "
                  f"{metrics['parameters']['total']:,} parameters. Run saved to [bold]{escape(str(out))}[/bold]")


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


class Precision(str, Enum):
    """rundir.PRECISIONS, spelled out: importing rundir here would slow every command's start."""
    fp32 = "fp32"
    bf16 = "bf16"


PrecisionOpt = Annotated[Precision, typer.Option(
    help="fp32 runs the model as trained; bf16 is about 1.6x faster on CPUs with native bf16 (AVX512-BF16, AMX), "
         "with probabilities within about 0.02.")]


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


BackendOpt = Annotated[Backend, typer.Option(
    help="auto: onnx for an export directory (written by 'sentiment-rnn export'), torch for a run; "
         "onnx runs onnxruntime without importing torch (for a run, its export in RUN/onnx).")]


def _uses_onnx(backend: Backend, model: Path | None, precision: Precision) -> bool:
    """Whether predict/evaluate go through onnx_backend, which never imports torch."""
    from sentiment_rnn.onnx_backend import is_export

    exported = model is not None and is_export(model)
    if backend is Backend.torch and exported:
        raise SentimentRNNError(f"'{model}' is an ONNX export; use --backend onnx, or pass its run directory")
    onnx = backend is Backend.onnx or (backend is Backend.auto and exported)
    if onnx and precision is not Precision.fp32:
        raise SentimentRNNError("an ONNX export runs in fp32; drop --precision, or use the run directory for bf16")
    return onnx


def _warn_if_emulated(precision: Precision) -> None:
    from sentiment_rnn.runtime import native_bf16

    if precision is Precision.bf16 and not native_bf16():
        from sentiment_rnn.console import err_console

        err_console.print("[yellow]warning:[/yellow] this CPU has no native bf16; --precision bf16 may be slower "
                          "than fp32 here")


def _chosen_run(model: Path | None) -> Path:
    """The run to use; without --model the most recent one, said on stderr so that output stays clean."""
    if model is not None:
        return model
    from sentiment_rnn.console import err_console
    from sentiment_rnn.rundir import DEFAULT_ROOT, find_latest_run

    run = find_latest_run()
    err_console.print(f"Using {run}, the most recent complete run under {DEFAULT_ROOT}/; choose another with --model",
                      highlight=False, soft_wrap=True, markup=False)
    return run


@app.command()
@handle_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; '-' reads one text per line from stdin.",
    )] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Text file, one text per line.")] = None,
    model: ModelOpt = None,
    fmt: Annotated[Format, typer.Option(
        "--format",
        help="Output: table (plain aligned columns beyond 200 texts), json (one array) or jsonl (one line per input).",
    )] = Format.table,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 256,
    precision: PrecisionOpt = Precision.fp32,
    backend: BackendOpt = Backend.auto,
    fast: Annotated[bool, typer.Option(
        "--fast",
        help="The speed opt-in's CPU kernel for vanilla (tanh/relu) "
             "RNN runs; the same probabilities, other cells ignore it.",
    )] = False,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", min=1, help="Also list the K most probable labels per text (all labels if K exceeds them).",
    )] = None,
) -> None:
    """Classify texts: label and class probabilities."""
    from sentiment_rnn.inputs import open_texts, prediction_stream

    source = open_texts(texts or [], file, "classify")
    if _uses_onnx(backend, model, precision):
        from sentiment_rnn.onnx_backend import OnnxPredictor, resolve_export

        predictor = OnnxPredictor.load(resolve_export(model))
    else:
        with _heavy_imports():
            from sentiment_rnn.predict import Predictor

            predictor = Predictor.from_dir(_chosen_run(model), precision=precision.value, fast=fast)
        _warn_if_emulated(precision)
    predictor.batch_size = batch_size
    start, count = time.perf_counter(), 0
    records = prediction_stream(predictor, source, top_k)
    if fmt is Format.jsonl:
        for rec in records:
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    elif fmt is Format.json:
        collected = list(records)
        count = len(collected)
        sys.stdout.write(json.dumps(collected, ensure_ascii=False, indent=2) + "\n")
    else:
        count = _print_predictions(records, predictor.labels)
    if not isinstance(source, list):
        from sentiment_rnn.console import err_console

        seconds = time.perf_counter() - start
        err_console.print(f"{count} text{'s' * (count != 1)} in {seconds:.2f}s "
                          f"({count / max(seconds, 1e-9):,.0f} sentences/s)")


RICH_TABLE_ROWS = 200  # rich lays out every cell of a table; for more rows, plain columns print many times faster


def _print_predictions(records: Iterator[dict], labels: list[str]) -> int:
    """A rich table for a few texts; plain aligned columns, streamed, for more. Returns the number of texts."""
    from sentiment_rnn.records import top_k_text

    first = list(itertools.islice(records, RICH_TABLE_ROWS + 1))
    if len(first) <= RICH_TABLE_ROWS:
        _print_rich_table(first)
        return len(first)
    width = max(len(name) for name in [*labels, "label", "error"])
    out = sys.stdout
    out.write(f"{'label':<{width}}  probability  {'top k  ' * ('top_k' in first[0])}text\n")
    count = 0
    for rec in itertools.chain(first, records):
        text = (rec["text"] or "")[:200]
        if "error" in rec:
            out.write(f"{'error':<{width}}  {'':>11}  {text} [{rec['error']}]\n")
        else:
            top = f"{top_k_text(rec)}  " if "top_k" in rec else ""
            out.write(f"{rec['label']:<{width}}  {rec['probability']:>11.3f}  {top}{text}\n")
        count += 1
    return count


def _print_rich_table(records: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    from sentiment_rnn.console import console
    from sentiment_rnn.records import top_k_text

    top_k = any("top_k" in rec for rec in records)
    table = Table()
    table.add_column("text", overflow="fold")
    table.add_column("label")
    table.add_column("probability", justify="right")
    if top_k:
        table.add_column("top k")
    for rec in records:
        text = Text((rec["text"] or "")[:200])  # a Text: user text is shown as written, never read as markup
        if "error" in rec:
            table.add_row(text, Text(f"error: {rec['error']}", style="red"), "", *[""] * top_k)
        else:
            top = [Text(top_k_text(rec))] if top_k else []
            table.add_row(text, Text(rec["label"]), f"{rec['probability']:.3f}", *top)
    console.print(table)


@app.command()
@handle_errors
def evaluate(
    model: ModelOpt = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="Another source (file, folder, hf:<name>); default: the run's own held-out rows.",
    )] = None,
    split: Annotated[str | None, typer.Option(
        help="Split to score: test or validation (or any split of "
             "--data); default: test, or a single --data file's rows.",
    )] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of --data, if not the run's.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of --data, if not the run's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    precision: PrecisionOpt = Precision.fp32,
    backend: BackendOpt = Backend.auto,
    label_map: Annotated[str | None, typer.Option(
        help="Data labels spelled otherwise than the model's, as DATA=MODEL pairs: pos=positive,neg=negative.",
    )] = None,
    predictions: Annotated[Path | None, typer.Option(
        help="Write one JSON line per scored row (text, gold label, predicted label, probabilities) to this file.",
    )] = None,
    show_wrong: Annotated[int | None, typer.Option(
        min=0, help="Show the N most confidently wrong rows; default 5 with --predictions, else 0.",
    )] = None,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained run (or an ONNX export)."""
    wrong = show_wrong if show_wrong is not None else 5 * (predictions is not None)
    if _uses_onnx(backend, model, precision):
        from sentiment_rnn.onnx_backend import evaluate_export

        if data is not None or text_column or label_column or label_map:
            raise SentimentRNNError("an export holds only its run's test and validation rows; for --data, "
                                    "evaluate the run directory (with torch) instead")
        metrics = evaluate_export(model, split, predictions, wrong)
    else:
        with _heavy_imports():
            from sentiment_rnn.evaluate import evaluate_run

        _warn_if_emulated(precision)
        metrics = evaluate_run(_chosen_run(model), data, split, text_column, label_column, precision.value,
                               label_map, predictions, wrong)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    from rich.text import Text

    from sentiment_rnn.console import confusion_table, console, metrics_table, wrong_rows_table

    in_bf16 = ", in bf16" if metrics["numeric_precision"] == "bf16" else ""
    console.print(metrics_table(metrics, Text(f"{metrics['run']} on {metrics['source']}, {metrics['split']} split"
                                              f"{in_bf16}")))
    console.print(confusion_table(metrics))
    if "most_confidently_wrong" in metrics:
        console.print(wrong_rows_table(metrics["most_confidently_wrong"]))
    if predictions is not None:
        console.print(f"Predictions for every row written to {predictions}", markup=False, highlight=False)


@app.command("compare-baseline")
@handle_errors
def compare_baseline(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Comparison directory; default runs/compare-<config name>/.",
    )] = None,
    seeds: Annotated[int, typer.Option(
        min=1, help="Train both models with this many seeds (config seed, +1, ...); report mean ± std.",
    )] = 1,
    probe: Annotated[Path | None, typer.Option(
        "--probe", help="Context probe file, 'label<TAB>text' lines in pairs; default: the shipped probe.",
    )] = None,
    positive_label: Annotated[str | None, typer.Option(
        "--positive-label",
        help="The data's label the probe's 1 means; default: the one label named 'positive' or 'pos' (any case).",
    )] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing comparison directory.")] = False,
) -> None:
    """Train the RNN and the per-word linear baseline on the same split and compare them side by side."""
    with _heavy_imports():
        from sentiment_rnn.compare import COMPARISON
        from sentiment_rnn.compare import compare_baseline as run_comparison
        from sentiment_rnn.config import load_config
        from sentiment_rnn.console import RichReporter, comparison_table, console
    cfg = load_config(config or DEFAULT_CONFIG, set_)
    out = output or Path("runs") / f"compare-{cfg.name}"
    console.print(f"[bold]Comparing[/bold] {escape(cfg.name)}'s RNN with the per-word linear baseline, "
                  f"{seeds} seed(s), on {escape(cfg.data.source)} -> {escape(str(out))}", highlight=False)
    result = run_comparison(cfg, out, seeds, probe, RichReporter(), overwrite=overwrite, positive=positive_label)
    console.print(comparison_table(result))
    for note in result["notes"]:
        console.print(f"[yellow]Note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"Compared in {result['seconds']:.1f}s. Saved [bold]{escape(str(out / COMPARISON))}[/bold] and "
                  f"[bold]{escape(str(result['figure']))}[/bold]; each run under {escape(str(out))} works with "
                  "predict --model.", highlight=False)


@app.command()
@handle_errors
def inspect(
    config: ConfigOpt = None,
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Run directory to inspect, with its real vocabulary.",
    )] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sentences in the example batch.")] = 3,
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sentence in the example batch.")] = 10,
) -> None:
    """Every parameter in the tutorial's terms (W_xh, W_hh, ...) and every tensor shape of a forward pass.

    With --config (default: the shipped `default`) nothing is loaded: the vocabulary is tokenizer.max_vocab.
    """
    from sentiment_rnn.shapes import describe_config, describe_run

    if config is not None and model is not None:
        raise SentimentRNNError("give either --config or --model, not both")
    if model is not None:
        if set_:
            raise SentimentRNNError("--set applies to --config only; a run is inspected as it was trained")
        description = describe_run(model, batch, seq_len)
    else:
        description = describe_config(config or DEFAULT_CONFIG, set_, batch, seq_len)
    if as_json:
        sys.stdout.write(json.dumps(description, indent=2) + "\n")
        return
    from sentiment_rnn.console import console, inspect_tables

    for renderable in inspect_tables(description):
        console.print(renderable)


@app.command("pretrain-embeddings")
@handle_errors
def pretrain_embeddings(
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="GloVe-format text file to write.",
    )] = Path("vectors/movie-reviews-100d.txt"),
    dim: Annotated[int, typer.Option(
        "--dim", min=1, help="Vector width; must equal model.embedding_dim of the configs using it.",
    )] = 100,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes of word2vec over the corpus.")] = 5,
    sources: Annotated[str | None, typer.Option(
        "--sources", help="Comma-separated embedded corpora whose training rows are read; default: all of them.",
    )] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c",
        help="Config whose seed and data.split decide the held-out rows left out (default: the shipped `default`).",
    )] = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing vectors file.")] = False,
) -> None:
    """Train word vectors (gensim skip-gram) on unlabeled in-domain training text, never held-out rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sentiment_rnn.config import load_config
    from sentiment_rnn.console import console
    from sentiment_rnn.data import EMBEDDED
    from sentiment_rnn.pretrain import check_output, check_sources
    from sentiment_rnn.pretrain import pretrain_embeddings as run_pretraining

    check_output(output, overwrite)
    names = list(EMBEDDED) if sources is None else [s.strip() for s in sources.split(",") if s.strip()]
    check_sources(names)
    cfg = load_config(config or DEFAULT_CONFIG, set_)
    console.print(f"[bold]Word vectors[/bold] ({dim}d, {epochs} epochs) from the training rows of "
                  f"{escape(', '.join(names))} (seed {cfg.seed}, split {list(cfg.data.split)}) -> "
                  f"{escape(str(output))}", highlight=False)
    with Progress(TextColumn("[bold]word2vec epoch"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("epochs", total=epochs)
        info = run_pretraining(output, cfg, names, dim, epochs, overwrite,
                               on_epoch=lambda done, total: progress.update(task, completed=done))
    texts = ", ".join(f"{n:,} {source}" for source, n in info["texts"].items())
    console.print(f"Wrote {info['words']:,} words x {dim} to [bold]{escape(str(output))}[/bold] from "
                  f"{escape(texts)} training texts ({info['tokens']:,} tokens) in {info['seconds']:.0f}s. Use it with "
                  f"--set model.embedding.pretrained={escape(str(output))}", highlight=False)


class ExplainFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
@handle_errors
def export(
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Run directory to export; default: the most recent complete run under runs/.",
    )] = None,
    fmt: Annotated[str, typer.Option("--format", help="Export format; onnx is the one there is.")] = "onnx",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Export directory; default RUN/onnx/.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="int8 dynamic quantization (onnxruntime): a smaller graph, checked against fp32.",
    )] = False,
) -> None:
    """Export a run to ONNX (model.onnx, tokenizer, labels, meta.json) for predict, evaluate and serve without torch."""
    if fmt != "onnx":
        raise SentimentRNNError(f"unknown export format '{fmt}'; the one format is onnx")
    with _heavy_imports():
        from sentiment_rnn.export import export_run, export_summary
        from sentiment_rnn.onnx_backend import EXPORT_DIR
        from sentiment_rnn.rundir import resolve_run
    from sentiment_rnn.console import console

    out = output or resolve_run(model) / EXPORT_DIR
    meta = export_run(model, out, overwrite, quantize)
    console.print(export_summary(meta, out), markup=False, highlight=False)


@app.command()
@handle_errors
def explain(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to explain; '-' reads one text per line from stdin.",
    )] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Text file, one text per line.")] = None,
    model: ModelOpt = None,
    fmt: Annotated[ExplainFormat, typer.Option(
        "--format", help="Output: table (coloured words) or json (every number).",
    )] = ExplainFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write a figure: FILE.png (matplotlib) or FILE.html (one self-contained page).",
    )] = None,
    steps: Annotated[int, typer.Option("--steps", min=2, help="Integration steps of integrated gradients.")] = 50,
    target: Annotated[str | None, typer.Option(
        "--target", help="Label the readings lean toward; default: the label named positive or pos (any case), "
                         "else each text's predicted label.")] = None,
) -> None:
    """Watch the model read each text word by word: running P(positive), integrated gradients, occlusion."""
    from sentiment_rnn.inputs import texts_to_explain

    texts = texts_to_explain(texts or [], file)
    if output is not None:
        from sentiment_rnn.explain_render import check_output

        check_output(output, len(texts))
    with _heavy_imports():
        from sentiment_rnn.explain import Explainer

        explainer = Explainer.from_dir(model, target=target)
    records = [explainer.explain(text, steps) for text in texts]
    from rich.markup import escape

    from sentiment_rnn.console import console, err_console
    from sentiment_rnn.explain_render import terminal, write_output

    if output is not None:
        write_output(records, output)
    if fmt is ExplainFormat.json:
        sys.stdout.write(json.dumps(records, ensure_ascii=False, indent=2) + "\n")
    else:
        for record in records:
            for renderable in terminal(record, console.width):
                console.print(renderable)
    for record in records:
        for note in record["notes"]:
            err_console.print(f"[yellow]Note:[/yellow] {escape(note)} (text {escape(repr(record['text'][:40]))})",
                              highlight=False, soft_wrap=True)
    if output is not None:
        err_console.print(f"Wrote {output}", highlight=False, markup=False)


@app.command()
@handle_errors
def serve(
    model: Annotated[Path | None, typer.Option(
        "--model", "-m",
        help="Run directory (torch) or export directory (onnxruntime, "
             "no torch); default: the most recent complete run.",
    )] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on; 127.0.0.1 answers this machine only, 0.0.0.0 every network.",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port; 0 picks a free one (printed).")] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="Texts the micro-batcher hands the model at once.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(
        min=0, help="How long a request waits for others to share its batch.",
    )] = 5.0,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request; more gets a 413.")] = 256,
    max_chars: Annotated[int, typer.Option(min=1, help="Characters per text; more gets a 413.")] = 20_000,
) -> None:
    """Serve a model over HTTP: POST /predict {"texts": [...]}, GET /health, GET /metadata, docs at /docs."""
    from sentiment_rnn.console import console

    try:
        from sentiment_rnn.serve import Limits, bind, create_app, load_predictor, run_server
    except ImportError as exc:
        raise SentimentRNNError(f"{exc.name} is not installed; run: pip install 'sentiment-rnn[serve]'") from None

    predictor, metadata = load_predictor(model)
    limits = Limits(max_texts=max_texts, max_chars=max_chars, max_batch=max_batch, max_wait_ms=max_wait_ms)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    console.print(f"Serving {metadata['source_run']} ({metadata['backend']}) on http://{shown}:{bound_port} "
                  f"(docs at /docs); Ctrl-C or SIGTERM stops it", highlight=False, soft_wrap=True, markup=False)
    sys.stdout.flush()
    run_server(create_app(predictor, metadata, limits), sock)


@app.command()
@handle_errors
def sweep(
    config: ConfigOpt = None,
    seeds: Annotated[str, typer.Option(
        help="Comma-separated seeds; every setting trains once per seed (as --set seed=N: the seed also carves "
             "the split unless data.split_seed is set).",
    )] = "0,1,2",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s",
        help="KEY=V1,V2,... repeatable: every combination of the values is a setting; one value is a plain "
             "override. Commas inside [...] or quotes do not separate values: model.hidden_sizes=[20,15],[32].",
    )] = None,
    jobs: Annotated[int, typer.Option(
        min=1, help="Runs trained at a time, each in its own process with cores/N torch threads (unless "
                    "train.threads is set).",
    )] = 1,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Sweep folder, one run directory per setting and seed; default runs/sweep-<config "
                               "name>/. Rerun the same command to continue a stopped sweep.",
    )] = None,
    report_to: ReportToOpt = None,
) -> None:
    """Train every combination of --set values over --seeds; mean ± std per setting, the best picked on validation."""
    with _heavy_imports():
        from sentiment_rnn.console import RichReporter, console, sweep_probe_table, sweep_table
        from sentiment_rnn.sweep import SUMMARY, run_sweep

    summary = run_sweep(config or DEFAULT_CONFIG, set_, seeds, output, jobs, report_to and report_to.value,
                        RichReporter())
    console.print(sweep_table(summary))
    if summary["positive_label"] is not None:
        console.print(sweep_probe_table(summary))
    for note in summary["notes"]:
        console.print(f"[yellow]Note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    out = Path(summary["output"])
    console.print(f"Best on validation: [bold]{escape(summary['best']['setting'])}[/bold]. {summary['trained']} "
                  f"run(s) trained, {summary['resumed']} resumed, {summary['kept']} kept. Saved [bold]"
                  f"{escape(str(out / SUMMARY))}[/bold] and [bold]{escape(str(summary['figure']))}[/bold]; each run "
                  f"under {escape(str(out))} works with predict --model.", highlight=False)


def main() -> None:
    app()


@app.command("pretrain-lm")
@handle_errors
def pretrain_lm(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML config, e.g. configs/lm.yaml (default).",
    )] = None,
    set_: SetOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run directory; default runs/pretrained/<config name>/.",
    )] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume",
        help="Continue the unfinished run in this directory from its last "
             "checkpoint; --set may change only train.lr and train.clip_grad_norm.",
    )] = None,
) -> None:
    """Pretrain the classifier's embedding and encoder on unlabeled text, as a next-word language model or
    (lm.objective: autoencoder) as a sequence autoencoder."""
    with _heavy_imports():
        from sentiment_rnn.console import LMReporter, console
        from sentiment_rnn.lm.pretrain import pretrain_lm as run_pretraining

    # One folder below runs/: predict and evaluate, which pick the latest run in runs/, never pick an LM.
    cfg, out = config_and_output(config, "lm", set_, output, overwrite, resume, Path("runs") / "pretrained")
    what = "sequence autoencoder" if cfg.lm.objective == "autoencoder" else "language model"
    console.print(f"[bold]Pretraining[/bold] {escape(cfg.name)}: {cfg.model.cell} {what} "
                  f"({cfg.model.num_layers} x {cfg.model.hidden_size}, {cfg.lm.batching} batches) on "
                  f"{escape(cfg.lm.source)} -> {escape(str(out))}", highlight=False)
    metrics = run_pretraining(cfg, out, LMReporter(), overwrite=overwrite, resume=resume is not None)
    # The autoencoder's held-out perplexity is that of reconstructing the held-out windows, not of the next word.
    scored = "reconstruction perplexity" if cfg.lm.objective == "autoencoder" else "perplexity"
    console.print(f"Held-out {scored} {metrics['held_out_perplexity']:,.1f} after {len(metrics['history'])} "
                  f"epoch(s); trained in {metrics['train_seconds']:.1f}s at {metrics['tokens_per_s']:,.0f} tokens/s. "
                  f"Run saved to [bold]{escape(str(out))}[/bold]", highlight=False)


for _command in app.registered_commands:  # every command: `--flag true` is refused, not read as a text
    _command.cls = FlagsTakeNoValue
