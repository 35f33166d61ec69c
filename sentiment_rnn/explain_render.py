"""explain's output: rich renderables for the terminal, one self-contained HTML page, and the --output check.

Every function takes the JSON-ready records of sentiment_rnn.explain.Explainer.explain; none prints.
"""

from __future__ import annotations

import html
from pathlib import Path

from sentiment_rnn.errors import SentimentRNNError

OUTPUTS = (".png", ".html")
MAX_FIGURE_TEXTS = 20  # one PNG stacks three rows per text; beyond this it is unreadable
RED, WHITE, GREEN = (200, 30, 30), (255, 255, 255), (20, 150, 50)


def check_output(path: Path, texts: int, overwrite: bool = False) -> None:
    """Refuse an --output path before any work: unknown extension, too many texts for a PNG, and what
    evaluate's --predictions refuses (a missing folder, a run's or export's folder, an existing file
    without overwrite)."""
    from sentiment_rnn.records import check_output_file

    suffix = path.suffix.lower()
    if suffix not in OUTPUTS:
        raise SentimentRNNError(f"--output '{path}' has an unknown extension '{path.suffix}'; "
                                f"use a file ending in {' or '.join(OUTPUTS)}")
    check_output_file(path, overwrite)
    if suffix == ".png" and texts > MAX_FIGURE_TEXTS:
        raise SentimentRNNError(f"a PNG holds at most {MAX_FIGURE_TEXTS} texts, got {texts}; "
                                "use --output FILE.html or --format json for more")


def write_output(records: list[dict], path: Path) -> None:
    """The PNG (matplotlib) or HTML page, written atomically."""
    from sentiment_rnn.rundir import atomic_write

    if path.suffix.lower() == ".png":
        from sentiment_rnn.plots import plot_explanations

        plot_explanations([[r] for r in records], path)
    else:
        atomic_write(path, html_page(records))


def attribution_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """Red (toward the other class) through white (nothing) to green (toward the target), by |value|/scale."""
    share = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    end = GREEN if share > 0 else RED
    return tuple(round(w + abs(share) * (e - w)) for w, e in zip(WHITE, end, strict=True))


def _scale(record: dict, key: str) -> float:
    return max((abs(t[key]) for t in record["tokens"]), default=0.0)


def _shown(token: dict) -> str:
    return f"{token['word']}[UNK]" if token["unknown"] else token["word"]


def summary_line(record: dict) -> str:
    """One line: the verdict, its probability and what the running reading is (rich markup)."""
    from rich.markup import escape

    p = record["probabilities"][record["target"]]
    return (f"[bold]{escape(record['text'][:200])}[/bold] -> [bold]{escape(record['label'])}[/bold] "
            f"(P({escape(record['target'])}) = {p:.3f}); running P: {escape(record['reading_means'])}")


def terminal(record: dict, width: int) -> list:
    """The words coloured red to green by integrated gradients, with the running P(target) under each."""
    from rich.table import Table
    from rich.text import Text

    scale = _scale(record, "integrated_gradients")
    rows = [("word", None), (f"P({record['target']})", "p_running"), ("IG", "integrated_gradients"),
            ("occlusion", "occlusion")]
    if "contributions" in record:
        rows.append(("exact share", "contribution"))
    first = max(len(label) for label, _ in rows) + 2  # the row labels' column, "P(<target>)" the widest
    chunks, chunk, used = [], [], first
    for token in record["tokens"]:  # as many words per table as fit the console's width
        cell = max(len(_shown(token)), 6) + 2
        if chunk and used + cell > width:
            chunks.append(chunk)
            chunk, used = [], first
        chunk.append(token)
        used += cell
    chunks.append(chunk)
    tables = [Text.from_markup(summary_line(record))]
    for chunk in chunks:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="dim", no_wrap=True)
        for _ in chunk:
            table.add_column(justify="center", no_wrap=True)
        for label, key in rows:
            if key is None:
                cells = [Text(_shown(t), style=f"bold black on rgb{attribution_rgb(t['integrated_gradients'], scale)}")
                         for t in chunk]
            else:
                cells = [Text(f"{t[key]:+.3f}" if key != "p_running" else f"{t[key]:.3f}") for t in chunk]
            table.add_row(label, *cells)
        tables.append(table)
    return tables


CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{padding:.25em .5em;text-align:center;border:1px solid #ddd;font-size:.9em}th{text-align:left;color:#555}
td.word{font-weight:bold}.unk{font-style:italic}svg{display:block;margin:.5em 0}p.note{color:#a60}"""


def _trajectory_svg(record: dict) -> str:
    """Running P(target) as an inline SVG line over the words (0 at the bottom, 1 at the top)."""
    values = [t["p_running"] for t in record["tokens"]]
    step, height, left = 60, 100, 40
    points = " ".join(f"{left + i * step},{5 + height - v * height:.1f}" for i, v in enumerate(values))
    axis = "".join(f'<text x="0" y="{9 + height - v * height}" font-size="11" fill="#777">{v}</text>'
                   for v in (0, 0.5, 1))
    return (f'<svg width="{2 * left + step * max(len(values) - 1, 1)}" height="{height + 10}" role="img" '
            f'aria-label="running P({html.escape(record["target"])})">{axis}'
            f'<line x1="{left - 10}" y1="{5 + height / 2}" x2="100%" y2="{5 + height / 2}" stroke="#bbb" '
            f'stroke-dasharray="4"/><polyline points="{points}" fill="none" stroke="#2060c0" stroke-width="2"/></svg>')


def _html_section(record: dict) -> str:
    esc = html.escape
    scale = _scale(record, "integrated_gradients")
    rows = [(f"P({record['target']}) so far", "p_running"), ("integrated gradients", "integrated_gradients"),
            ("occlusion", "occlusion")] + ([("exact share", "contribution")] if "contributions" in record else [])
    words = "".join(f'<td class="word{" unk" if t["unknown"] else ""}" style="background:rgb'
                    f'{attribution_rgb(t["integrated_gradients"], scale)}" title="{esc(t["token"])}">'
                    f'{esc(_shown(t))}</td>' for t in record["tokens"])
    body = "".join(f"<tr><th>{esc(label)}</th>" + "".join(
        f"<td>{t[key]:+.3f}</td>" if key != "p_running" else f"<td>{t[key]:.3f}</td>" for t in record["tokens"])
        + "</tr>" for label, key in rows)
    p = record["probabilities"][record["target"]]
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in record["notes"])
    return (f"<section><h2>{esc(record['text'][:300])}</h2><p>{esc(record['label'])} "
            f"(P({esc(record['target'])}) = {p:.3f}); running P: {esc(record['reading_means'])}.</p>{notes}"
            f"{_trajectory_svg(record)}<table><tr><th>word</th>{words}</tr>{body}</table></section>")


def html_page(records: list[dict]) -> str:
    """One page with no external resource: styles inline, the trajectory as inline SVG."""
    run = html.escape(records[0]["model"]) if records else ""
    sections = "".join(_html_section(r) for r in records)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sentiment-rnn explain</title>'
            f"<style>{CSS}</style></head><body><h1>sentiment-rnn explain</h1><p>Run: {run}. Words are coloured "
            "by integrated gradients, green toward the target class and red away from it; occlusion is the "
            "change in P when the word is removed and the text re-read.</p>"
            f"{sections}</body></html>\n")
