"""The commands that use a trained run (or its ONNX export): predict, evaluate, explain, export, serve.

Thin over plain functions, as every command: parse, call one library function, render with rich (console.py).
cli.py registers them on the app; they share its options and error boundary (cli_common.py).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sentiment_rnn.cli_common import ModelOpt, RunOpt, escape, handle_errors, heavy_imports
from sentiment_rnn.errors import SentimentRNNError


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


class Precision(str, Enum):
    """rundir.PRECISIONS, spelled out: importing rundir here would slow every command's start."""
    fp32 = "fp32"
    bf16 = "bf16"


PrecisionOpt = Annotated[Precision, typer.Option(
    help="fp32 runs the model as trained; bf16 runs it in bfloat16, faster on CPUs with native bf16 "
         "(AVX512-BF16, AMX), with slightly different probabilities (README, Benchmarks).")]


FileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="Text file, one text per line.")]


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


def _warn(note: str | None) -> None:
    if note:
        from sentiment_rnn.console import err_console

        err_console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)


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


@handle_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; '-' reads one text per line from stdin.",
    )] = None,
    file: FileOpt = None,
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
        if fast:
            raise SentimentRNNError("--fast is a kernel for torch runs; an ONNX export runs onnxruntime's: drop --fast")
        from sentiment_rnn.onnx_backend import load_export

        predictor, stale = load_export(model)
        _warn(stale)
    else:
        with heavy_imports():
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
        from sentiment_rnn.console import print_predictions

        count = print_predictions(records, predictor.labels)
    if not isinstance(source, list):
        from sentiment_rnn.console import err_console

        seconds = time.perf_counter() - start
        err_console.print(f"{count} text{'s' * (count != 1)} in {seconds:.2f}s "
                          f"({count / max(seconds, 1e-9):,.0f} sentences/s)")


@handle_errors
def evaluate(
    model: ModelOpt = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="Another source (file, folder, hf:<name>); default: the run's own held-out rows.",
    )] = None,
    split: Annotated[str | None, typer.Option(
        help="Split to score: test, validation, or left-out (the phrases a run carved by sentence left out of "
             "training), or any split of --data; default: test, or a single --data file's rows.",
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
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --predictions file.")] = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained run (or an ONNX export)."""
    wrong = show_wrong if show_wrong is not None else 5 * (predictions is not None)
    if _uses_onnx(backend, model, precision):
        from sentiment_rnn.onnx_backend import evaluate_export

        given = [name for name, value in (("--data", data), ("--text-column", text_column),
                                          ("--label-column", label_column), ("--label-map", label_map)) if value]
        if given:
            raise SentimentRNNError(f"an export holds only its run's test and validation rows; for {given[0]}, "
                                    "evaluate the run directory (with torch) instead")
        metrics = evaluate_export(model, split, predictions, wrong, overwrite)
    else:
        with heavy_imports():
            from sentiment_rnn.evaluate import evaluate_run

        _warn_if_emulated(precision)
        metrics = evaluate_run(_chosen_run(model), data, split, text_column, label_column, precision.value,
                               label_map, predictions, wrong, overwrite)
    _warn(metrics.get("warning"))
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    from sentiment_rnn.console import print_metrics

    print_metrics(metrics, predictions)


class ExplainFormat(str, Enum):
    table = "table"
    json = "json"


class ExportFormat(str, Enum):
    onnx = "onnx"


@handle_errors
def export(
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Run directory to export; default: the most recent complete run under runs/.",
    )] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format: onnx, the one there is.")] = "onnx",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Export directory; default RUN/onnx/.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="int8 dynamic quantization (onnxruntime): a smaller graph, checked against fp32.",
    )] = False,
) -> None:
    """Export a run to ONNX (model.onnx, tokenizer, labels, meta.json) for predict, evaluate and serve without torch."""
    with heavy_imports():
        from sentiment_rnn.export import export_run, export_summary
        from sentiment_rnn.onnx_backend import EXPORT_DIR
        from sentiment_rnn.rundir import resolve_run
    from sentiment_rnn.console import console

    source = resolve_run(model)
    out = output or source / EXPORT_DIR
    meta = export_run(source, out, overwrite, quantize)
    console.print(export_summary(meta, source, out), markup=False, highlight=False)


@handle_errors
def explain(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to explain; '-' reads one text per line from stdin.",
    )] = None,
    file: FileOpt = None,
    model: RunOpt = None,
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
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
) -> None:
    """Watch the model read each text word by word: running P(positive), integrated gradients, occlusion."""
    from sentiment_rnn.inputs import texts_to_explain

    texts = texts_to_explain(texts or [], file)
    if output is not None:
        from sentiment_rnn.explain_render import check_output

        check_output(output, len(texts), overwrite)
    with heavy_imports():
        from sentiment_rnn.explain import Explainer

        explainer = Explainer.from_dir(_chosen_run(model), target=target)
    records = [explainer.explain(text, steps) for text in texts]
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
    _warn(metadata.get("warning"))
    served = metadata.get("export") or metadata["source_run"]  # an export's folder, or the run's
    console.print(f"Serving {served} ({metadata['backend']}) on http://{shown}:{bound_port} "
                  f"(docs at /docs); Ctrl-C or SIGTERM stops it", highlight=False, soft_wrap=True, markup=False)
    sys.stdout.flush()
    run_server(create_app(predictor, metadata, limits), sock)
