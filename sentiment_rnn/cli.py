"""The `sentiment-rnn` command: thin Typer commands over plain functions.

Each command parses its options, calls one library function and renders the result with rich. Library
code raises SentimentRNNError; only the error boundary (cli_common.handle_errors) prints it (one line,
`Error: ...`) and exits non-zero. Heavy imports (datasets, matplotlib, sklearn) happen inside the commands
that need them, so `predict` starts quickly. The training commands live here, those that use a trained
run in cli_run.py; all are registered on the app at the end of this module, in the order --help lists them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sentiment_rnn import __version__, cli_run
from sentiment_rnn.cli_common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    FlagsTakeNoValue,
    ReportToOpt,
    SetOpt,
    escape,
    handle_errors,
    heavy_imports,
)
from sentiment_rnn.errors import SentimentRNNError

# rich_markup_mode None: click's plain help wraps at word boundaries and shows no <bool> after a flag
app = typer.Typer(help="Train, evaluate and serve recurrent (RNN) sentiment classifiers.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sentiment-rnn {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Train, evaluate and serve recurrent (RNN) sentiment classifiers."""


def config_and_output(config: Path | None, default: str, set_: list[str] | None, output: Path | None,
                      overwrite: bool, resume: Path | None, runs: Path, language_model: bool = False):
    """The run's config and directory: a resumed run's own (with the --set keys a resume may change), else
    --config (or the shipped `default`) and --output, or runs/<config name>/. A classifier's config may not
    hold pretrain-lm's lm.* keys; language_model: pretrain-lm's, which does."""
    from sentiment_rnn.config import Config, LMRunConfig, load_config
    from sentiment_rnn.rundir import check_output

    if resume is None:
        cfg = load_config(config or default, set_, LMRunConfig if language_model else Config)
        if output is None and ("/" in cfg.name or "\\" in cfg.name):  # runs/<name>/ would land elsewhere
            raise SentimentRNNError(f"name '{cfg.name}' is a path; a run lands in {runs}/<name>/, so give a "
                                    "plain name, or place the run with --output DIR")
        out = output or runs / cfg.name
        check_output(out, overwrite)  # a taken folder is said first, before any header
        return cfg, out
    from sentiment_rnn.checkpoint import resume_config

    if overwrite or (output is not None and output != resume):
        raise SentimentRNNError("--resume continues the run in its own directory; drop --overwrite and --output")
    from sentiment_rnn.rundir import CONFIG, holds_language_model

    if (resume / CONFIG).is_file() and holds_language_model(resume) != language_model:
        kind, command = ("a classifier", "train") if language_model else ("a pretrain-lm", "pretrain-lm")
        raise SentimentRNNError(f"'{resume}' is {kind} run; resume it with: sentiment-rnn {command} --resume {resume}")
    return resume_config(resume, config, set_), resume


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
    with heavy_imports():
        from sentiment_rnn.console import RichReporter, console, metrics_table
        from sentiment_rnn.distributed import is_main
        from sentiment_rnn.stages import pending_config
        from sentiment_rnn.stages import train as train_run

    pending = pending_config(resume) if resume is not None else None  # a run stopped in its first stage
    cfg, out = (pending, resume) if pending else config_and_output(config, DEFAULT_CONFIG, set_, output, overwrite,
                                                                   resume, Path("runs"))
    # the per-word baseline has no cell or layers: its shape is one linear layer per word position
    shape = f"{cfg.model.cell}, {cfg.model.layer_sizes()}" if cfg.model.kind == "rnn" else f"L = {cfg.data.max_length}"
    if is_main():  # under torchrun every rank runs this command; rank 0 alone prints
        console.print(f"[bold]Training[/bold] {escape(cfg.name)}: {cfg.model.kind} ({shape}) on "
                      f"{escape(cfg.data.source)} -> {escape(str(out))}", highlight=False)
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
    with heavy_imports():
        from sentiment_rnn.compare import COMPARISON
        from sentiment_rnn.compare import compare_baseline as run_comparison
        from sentiment_rnn.config import Config, load_config
        from sentiment_rnn.console import RichReporter, comparison_table, console
    cfg = load_config(config or DEFAULT_CONFIG, set_, Config)
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
    from sentiment_rnn.data import EMBEDDED, check_sources
    from sentiment_rnn.pretrain import check_output
    from sentiment_rnn.pretrain import pretrain_embeddings as run_pretraining

    check_output(output, overwrite)
    names = list(EMBEDDED) if sources is None else [s.strip() for s in sources.split(",") if s.strip()]
    check_sources(names)
    cfg = load_config(config or DEFAULT_CONFIG, set_)
    console.print(f"[bold]Word vectors[/bold] ({dim}d, {epochs} epoch{'s' * (epochs != 1)}) from the training rows of "
                  f"{escape(', '.join(names))} (seed {cfg.seed}, split {list(cfg.data.split)}) -> "
                  f"{escape(str(output))}", highlight=False)
    with Progress(TextColumn("[bold]word2vec epoch"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("epochs", total=epochs)
        info = run_pretraining(output, cfg, names, dim, epochs, overwrite,
                               on_epoch=lambda done, total: progress.update(task, completed=done))
    texts = ", ".join(f"{n:,} {source}" for source, n in info["texts"].items())
    hint = f"--config {config} " * (config is not None) + f"--set model.embedding.pretrained={output}"
    hint += f" --set model.embedding_dim={dim}" * (dim != cfg.model.embedding_dim)  # a file must match the width
    console.print(f"Wrote {info['words']:,} words x {dim} to [bold]{escape(str(output))}[/bold] from "
                  f"{escape(texts)} training texts ({info['tokens']:,} tokens) in {info['seconds']:.0f}s. Use it with "
                  f"{escape(hint)}", highlight=False)


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
             "override. Commas inside [...] or quotes do not separate values: model.hidden_size=[20,15],[32].",
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
    with heavy_imports():
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
    """Pretrain the classifier's embedding and encoder on unlabeled text, as a next-word language model."""
    with heavy_imports():
        from sentiment_rnn.console import RichReporter, console
        from sentiment_rnn.lm.pretrain import pretrain_lm as run_pretraining

    # One folder below runs/: predict and evaluate, which pick the latest run in runs/, never pick an LM.
    cfg, out = config_and_output(config, "lm", set_, output, overwrite, resume, Path("runs") / "pretrained",
                                 language_model=True)
    console.print(f"[bold]Pretraining[/bold] {escape(cfg.name)}: {cfg.model.cell} language model "
                  f"({cfg.model.layer_sizes()}, {cfg.lm.batching} batches) on "
                  f"{escape(cfg.lm.source)} -> {escape(str(out))}", highlight=False)
    metrics = run_pretraining(cfg, out, RichReporter(columns="language_model"), overwrite=overwrite,
                              resume=resume is not None)
    console.print(f"Held-out perplexity {metrics['held_out_perplexity']:,.1f} after {len(metrics['history'])} "
                  f"epoch(s); trained in {metrics['train_seconds']:.1f}s at {metrics['tokens_per_s']:,.0f} tokens/s. "
                  f"Run saved to [bold]{escape(str(out))}[/bold]", highlight=False)


COMMANDS = (train, cli_run.predict, cli_run.evaluate, compare_baseline, inspect, pretrain_embeddings, cli_run.export,
            cli_run.explain, cli_run.serve, sweep, pretrain_lm)
for _command in COMMANDS:  # every command: `--flag true` is refused, not read as a text
    app.command(cls=FlagsTakeNoValue)(_command)


def main() -> None:
    app()
