"""Rich rendering for the CLI: the training progress bar, result tables and predict's table of texts."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

# soft_wrap: a line longer than the terminal (or than the 80 columns rich assumes when output is piped) stays
# one line, so logs and greps see whole epoch lines; tables still fit the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class RichReporter:
    """Per-epoch progress bar with loss, tokens/s and time left; one line per finished epoch. `columns` is the
    trainer's: a classifier's accuracy, or a language model's perplexity (pretrain-lm)."""

    BAR = {"classifier": "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}",
           "language_model": "loss {task.fields[loss]:.3f}  ppl {task.fields[ppl]:,.0f}"}

    def __init__(self, out: Console = console, columns: str = "classifier"):
        self.console, self.columns = out, columns
        self.progress: Progress | None = None
        self.task = None
        self.started = 0.0

    def stage(self, text: str) -> None:
        self.console.print(f"[dim]•[/dim] {escape(text)}", highlight=False)  # paths and sources, shown as written

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        import time

        self.started = time.perf_counter()
        if not self.console.is_terminal:  # a log file or pipe gets the epoch lines only: a stopped bar
            return                        # would leave a blank line before each of them
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(self.BAR[self.columns] + "  {task.fields[tps]:,.0f} tok/s"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, epoch=epoch, epochs=epochs, loss=0.0, acc=0.0,
                                           ppl=0.0, tps=0.0)

    def step(self, loss: float, tokens: int, accuracy: float | None = None) -> None:
        import math
        import time

        if self.progress is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, loss=loss, acc=accuracy or 0.0, ppl=math.exp(min(loss, 50.0)),
                             tps=tokens / elapsed)

    def epoch_end(self, record: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.columns == "language_model":
            self.console.print(
                f"epoch {record['epoch']:>2}  train loss {record['train_loss']:.3f} "
                f"(ppl {record['train_perplexity']:,.1f})  "
                f"held-out ppl {record['held_out_perplexity']:,.1f}  {record['tokens']:,} tokens  "
                f"{record['tokens_per_s']:,.0f} tok/s  {record['seconds']:.1f}s")
            return
        mark = " [green]★ best[/green]" if record.get("best") else ""
        self.console.print(
            f"epoch {record['epoch']:>2}  train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f}  "
            f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f}  "
            f"{record['tokens_per_s']:,.0f} tok/s  {record['seconds']:.1f}s{mark}")


def metrics_table(metrics: dict, title: str | Text) -> Table:
    """Per-class precision/recall/F1 plus accuracy and macro-F1; pass a Text title to show a path literally."""
    table = Table(title=title)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(Text(name), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    table.add_section()
    table.add_row("accuracy", "", "", f"{metrics['accuracy']:.3f}", str(metrics["n"]))
    table.add_row("macro F1", "", "", f"{metrics['macro_f1']:.3f}", "")
    return table


def confusion_table(metrics: dict) -> Table:
    labels = metrics["labels"]
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in labels:
        table.add_column(Text(name), justify="right")
    for name, row in zip(labels, metrics["confusion_matrix"], strict=True):
        table.add_row(Text(name), *(str(v) for v in row))
    return table


def wrong_rows_table(rows: list[dict]) -> Table:
    """evaluate --show-wrong: the most confidently wrong rows; texts are shown literally, never as markup."""
    table = Table(title=f"{len(rows)} most confidently wrong row{'s' * (len(rows) != 1)}")
    for name, justify in (("text", "left"), ("gold", "left"), ("predicted", "left"), ("probability", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(Text(row["text"][:200]), Text(row["label"]), Text(row["predicted"]),
                      f"{row['probabilities'][row['predicted']]:.3f}")
    return table


def _figure(value: float | None, fmt: str) -> str:
    if value is None:
        return ""
    if fmt in ("count", "rate"):
        return f"{value:,.0f}"
    if fmt == "seconds":
        return f"{value:.1f}"
    return f"{value:.3f}"


def comparison_table(result: dict) -> Table:
    """compare-baseline's rows: mean ± std of each figure per model and the computed verdict."""
    seeds = len(result["seeds"])
    names = result["model_labels"]  # compare.LABELS
    table = Table(title=Text(f"{names['rnn']} vs {names['per_word_linear']} baseline ({result['config']}, "
                             f"{seeds} seed{'s' * (seeds > 1)})"))
    table.add_column("figure")
    table.add_column(names["rnn"], justify="right")
    table.add_column(names["per_word_linear"], justify="right")
    table.add_column("verdict", overflow="fold")
    for row in result["rows"]:
        cells = []
        for kind in ("rnn", "per_word_linear"):
            mean, std = row[kind]["mean"], row[kind]["std"]
            spread = f" ± {_figure(std, row['format'])}" if std is not None else ""  # 0.000 is a measured spread
            cells.append(_figure(mean, row["format"]) + spread)
        colour = {"rnn": "green", "per_word_linear": "red"}.get(row["winner"], "white")
        table.add_row(row["label"], *cells, f"[{colour}]{row['verdict']}[/{colour}]")
    return table


def inspect_tables(description: dict) -> list:
    """`inspect`'s output: parameters in the tutorial's terms, stage shapes of a forward pass, totals."""
    from rich.markup import escape

    params = Table(title=Text(f"Parameters of {description['source']}"))
    params.add_column("layer", justify="right")
    params.add_column("direction")
    params.add_column("parameter", no_wrap=True)
    params.add_column("count", justify="right")
    params.add_column("PyTorch name", overflow="fold")
    for row in description["parameters"]:
        layer = "" if row["layer"] is None else str(row["layer"])
        params.add_row(layer, row["direction"] or "", escape(row["label"]), f"{row['count']:,}", row["torch_name"])
    totals = description["totals"]
    params.add_section()
    for key in ("total", "trainable", "embedding", "encoder", "head"):
        params.add_row("", "", key, f"{totals[key]:,}", "")
    shapes = Table(title=f"Tensor shapes for a batch of {description['batch']} sentences of "
                         f"{description['seq_len']} tokens (one real forward pass)")
    shapes.add_column("stage", no_wrap=True)
    shapes.add_column("dimensions", no_wrap=True)
    shapes.add_column("what it is", overflow="fold")
    for row in description["shapes"]:
        shapes.add_row(escape(row["label"]), escape(row["dims"]), escape(row["note"]))  # dims look like markup tags
    return [params, shapes, *(f"[dim]Note: {escape(note)}[/dim]" for note in description["notes"])]


def print_metrics(metrics: dict, predictions=None) -> None:
    """evaluate's tables: per-class metrics, the confusion matrix, the most confidently wrong rows if asked for."""
    in_bf16 = ", in bf16" if metrics["numeric_precision"] == "bf16" else ""
    rows = f"{metrics['split']} split" if metrics["split"] else "every row"  # None: a single file, scored whole
    console.print(metrics_table(metrics, Text(f"{metrics['run']} on {metrics['source']}, {rows}{in_bf16}")))
    console.print(confusion_table(metrics))
    console.print(f"[UNK], words the vocabulary lacks: {metrics['unknown_tokens']:.1%} of the scored tokens, in "
                  f"{metrics['texts_with_unknown']:.1%} of the texts", markup=False, highlight=False)
    if metrics.get("most_confidently_wrong"):
        console.print(wrong_rows_table(metrics["most_confidently_wrong"]))
    elif "most_confidently_wrong" in metrics:
        console.print("No row is wrong: no most confidently wrong rows to show.")
    if predictions is not None:
        console.print(f"Predictions for every row written to {predictions}", markup=False, highlight=False)


def sweep_table(summary: dict) -> Table:
    """sweep's rows: mean ± sample std over seeds per setting, accuracies in percent; ★ the best on validation."""
    seeds = len(summary["seeds"])
    table = Table(title=f"Sweep: mean ± sample std over {seeds} seed{'s' * (seeds > 1)} "
                        f"({', '.join(map(str, summary['seeds']))}); ★ best mean validation accuracy")
    table.add_column("setting", overflow="fold")
    for key, label in summary["figures"].items():
        table.add_column(label + ("" if key == "train_seconds" else " %"), justify="right")
    for row in summary["settings"]:
        cells = []
        for key in summary["figures"]:
            scale = 1 if key == "train_seconds" else 100  # accuracies in percent, as the README's tables
            mean, std = row["mean"][key] * scale, row["std"][key]
            cells.append(f"{mean:.1f}" + ("" if std is None else f" ± {std * scale:.1f}"))
        star = " ★" if row["setting"] == summary["best"]["setting"] else ""
        table.add_row(Text(row["setting"] + star), *cells)
    return table


RICH_TABLE_ROWS = 200  # rich lays out every cell of a table; for more rows, plain columns print many times faster


def print_predictions(records: Iterator[dict], labels: list[str]) -> int:
    """A rich table for a few texts; plain aligned columns, streamed, for more. Returns the number of texts."""
    from sentiment_rnn.records import top_k_text

    first = list(itertools.islice(records, RICH_TABLE_ROWS + 1))
    if len(first) <= RICH_TABLE_ROWS:
        _rich_table(first)
        return len(first)
    width = max(len(name) for name in [*labels, "label", "error"])
    k = max(len(rec.get("top_k", ())) for rec in first)  # entries 'name 0.123' joined by ', ': the k widest names
    top = sum(sorted(map(len, labels))[-k:]) + 8 * k if k else 0  # bound the column; 2 spaces after it included
    out = sys.stdout
    out.write(f"{'label':<{width}}  probability  {'top k' if k else '':<{top}}text\n")
    count = 0
    for rec in itertools.chain(first, records):
        text = (rec["text"] or "")[:200]
        if "error" in rec:
            out.write(f"{'error':<{width}}  {'':>11}  {'':<{top}}{text} [{rec['error']}]\n")
        else:
            shown = top_k_text(rec) if k else ""
            out.write(f"{rec['label']:<{width}}  {rec['probability']:>11.3f}  {shown:<{top}}{text}\n")
        count += 1
    return count


def _rich_table(records: list[dict]) -> None:
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


def sweep_probe_table(summary: dict) -> Table:
    """sweep's context probe, a column per setting: pairs right on both sides per '# category' of the probe
    (mean ± sample std, percent), then how many seeds read the README pair right."""
    seeds, rows = len(summary["seeds"]), summary["settings"]
    first, second = summary["readme_pair"]
    table = Table(title="Context probe: pairs right on both sides %, per category (pairs)",
                  caption=f'README pair: "{first}" positive, "{second}" negative')
    table.add_column("category", overflow="fold")
    for row in rows:
        table.add_column(row["setting"], justify="right", overflow="fold")
    for name, first in rows[0]["probe_categories"].items():
        cells = []
        for row in rows:
            category = row["probe_categories"][name]
            std = "" if category["std"] is None else f" ± {category['std'] * 100:.1f}"
            cells.append(f"{category['mean'] * 100:.1f}{std}")
        table.add_row(f"{name or '(no category)'} ({first['pairs']})", *cells)
    table.add_row(f"README pair right, seeds of {seeds}", *(str(row["readme_pair_right"]) for row in rows))
    return table
