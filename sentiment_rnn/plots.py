"""PNG figures for a run: learning curves and gradient norms through time (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save_atomically(plt, fig, path: Path) -> None:
    """Render to memory, then write atomically, so a reader never sees a half-written PNG."""
    from sentiment_rnn.rundir import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, training against validation."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_gradient_norms(probes: list[dict], path: Path, title: str = "") -> None:
    """||dLoss/dh_t|| against steps back from the last token, one line per recorded epoch (log scale)."""
    plt = _pyplot()
    from matplotlib.ticker import NullLocator
    fig, ax = plt.subplots(figsize=(7, 4))
    for probe in probes:
        norms = probe["norms"]
        ax.plot(range(len(norms)), norms, label=f"epoch {probe['epoch']}")
    ax.set_yscale("log")
    values = [v for probe in probes for v in probe["norms"] if v > 0]
    if values and max(values) > 1e3 * min(values):  # many decades: one labelled tick each reads well, and the
        ax.yaxis.set_minor_locator(NullLocator())  # dozens of minor ticks took most of the figure's drawing time
    ax.set(xlabel="steps back from the last token", ylabel="||dLoss/dh_t|| (mean over sentences)",
           title=title or "Gradient flowing back through time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_comparison(result: dict, path: Path) -> None:
    """compare-baseline's figure: parameters against L (log scale) and the scores with ±std error bars."""

    plt = _pyplot()
    models = result["models"]
    names = result["model_labels"]  # compare.LABELS
    fig, (ax_params, ax_scores) = plt.subplots(1, 2, figsize=(12, 4.5))
    lengths = result["lengths"]
    for kind, name in names.items():
        counts = [models[kind]["mean"][f"params_L{n}"] for n in lengths]
        ax_params.plot(lengths, counts, marker="o", label=name)
    ax_params.set_xscale("log", base=2)
    ax_params.set_yscale("log")
    ax_params.set_xticks(lengths, [str(n) for n in lengths])
    ax_params.set(xlabel="sentence length L (tokens)", ylabel="parameters without embedding",
                  title="Parameters grow with L only for the baseline")
    keys = {"test_accuracy": "test acc.", "test_macro_f1": "test macro-F1", "probe_accuracy": "probe acc.",
            "probe_flip_rate": "probe flips", "word_order_sensitivity": "|ΔP| shuffled"}
    keys = {k: v for k, v in keys.items() if k in models["rnn"]["mean"]}  # no probe figures for 3+ classes
    width = 0.38
    for i, (kind, name) in enumerate(names.items()):
        xs = [j + (i - 0.5) * width for j in range(len(keys))]
        means = [models[kind]["mean"][k] for k in keys]
        stds = [models[kind]["std"][k] or 0.0 for k in keys]
        ax_scores.bar(xs, means, width, yerr=stds, capsize=3, label=name)
    ax_scores.set_xticks(range(len(keys)), list(keys.values()))
    ax_scores.set(ylim=(0, 1), ylabel="share / probability",
                  title=f"Scores (mean ± std over {len(result['seeds'])} seed(s))")
    for ax in (ax_params, ax_scores):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_atomically(plt, fig, path)


def plot_explanations(grid: list[list[dict]], path: Path, row_titles: list[str] | None = None) -> None:
    """explain's figure: one block per text (grid[row][column]), words along x and three rows each:
    the running P(target) after each word, integrated gradients and occlusion (both signed toward the target)."""

    plt = _pyplot()
    columns = max(len(row) for row in grid)
    widths = max(([max(5.0, 0.75 * len(r["tokens"])) for r in row] for row in grid), key=len)  # inches per column
    fig = plt.figure(figsize=(sum(widths) + 1.5, 5.4 * len(grid)), layout="constrained")
    blocks = fig.subfigures(len(grid), columns, squeeze=False, width_ratios=widths)
    for i, row in enumerate(grid):
        for j, record in enumerate(row):
            _explanation_block(blocks[i][j], record, (row_titles[i] + ": ") if row_titles else "")
    _save_atomically(plt, fig, path)


def _explanation_block(block, record: dict, prefix: str) -> None:
    tokens = record["tokens"]
    xs = range(len(tokens))
    words = [t["word"] + ("\n[UNK]" if t["unknown"] else "") for t in tokens]
    target = record["target"]
    ax_p, ax_ig, ax_occ = block.subplots(3, 1, sharex=True)
    text = record["text"] if len(record["text"]) <= 70 else record["text"][:67] + "..."
    block.suptitle(f"{prefix}\"{text}\"\n-> {record['label']} (P({target}) = {record['probabilities'][target]:.2f})",
                   fontsize=10)
    ax_p.plot(xs, [t["p_running"] for t in tokens], marker="o")
    ax_p.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_p.set(ylim=(0, 1), ylabel=f"P({target})\nso far")
    ax_p.set_title("running " + ("(top layer's output)" if record["reading"] == "top_layer" else "(prefixes re-read)"),
                   fontsize=9)
    panels = ((ax_ig, "integrated_gradients", "integrated\ngradients"), (ax_occ, "occlusion", "occlusion"))
    for ax, key, label in panels:
        values = [t[key] for t in tokens]
        ax.bar(xs, values, color=["tab:green" if v > 0 else "tab:red" for v in values])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(label)
    slanted = len(tokens) > 12  # long texts: slanted labels so neighbouring words do not overlap
    ax_occ.set_xticks(list(xs), words, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    for ax in (ax_p, ax_ig, ax_occ):
        ax.grid(alpha=0.3)


def plot_lm_curve(metrics: dict, path: Path) -> None:
    """pretrain-lm: training loss per step (a running mean) and held-out loss at the end of each epoch."""
    import numpy as np

    plt = _pyplot()
    losses = np.asarray(metrics["loss_per_step"], dtype=float)
    window = max(1, len(losses) // 100)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")  # running mean over `window` steps
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"training (mean of {window} steps)")
    ends = np.cumsum([h["steps"] for h in metrics["history"]])
    ax.plot(ends, [h["held_out_loss"] for h in metrics["history"]], "o-", label="held-out")
    ax.set(xlabel="optimizer step", ylabel="next-word cross-entropy (log perplexity)", title="Language model")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_atomically(plt, fig, path)


# summary.json figures that get a panel, where the sweep has them (macro-F1 and seconds stay in the table)
SWEEP_PANELS = ("val_accuracy", "left_out_accuracy", "test_accuracy", "probe_pairs_right")


def plot_sweep(summary: dict, path: Path) -> list[str]:
    """sweep's figure: per figure (validation accuracy, the left-out phrases' where scored, test accuracy, the
    probe where scored), each setting's runs as points and their mean as a bar with ±1 sample std; the setting
    chosen on validation is starred. Returns the panels' titles, left to right."""
    plt = _pyplot()
    keys = [k for k in SWEEP_PANELS if k in summary["figures"]]
    rows = summary["settings"]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6, 1.2 * len(rows) + 2) * len(keys) / 2 + 2, 4.5),
                             squeeze=False)
    names = [row["setting"] + (" ★" if row["setting"] == summary["best"]["setting"] else "") for row in rows]
    for ax, key in zip(axes[0], keys, strict=True):
        for x, row in enumerate(rows):
            values = [run[key] for run in row["runs"]]
            offsets = [x + 0.08 * (i - (len(values) - 1) / 2) for i in range(len(values))]  # side by side
            ax.scatter(offsets, values, color="tab:blue", alpha=0.6, zorder=3)
            ax.errorbar([x], [row["mean"][key]], yerr=[row["std"][key] or 0.0], fmt="_", color="black",
                        markersize=24, capsize=6, zorder=4)
        ax.set_xticks(range(len(rows)), names, rotation=20 if len(rows) > 3 else 0, ha="right" if len(rows) > 3
                      else "center")
        ax.set(ylabel=summary["figures"][key], xlim=(-0.6, len(rows) - 0.4), title=summary["figures"][key])
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Sweep over seeds {', '.join(map(str, summary['seeds']))}: dots are runs, bars their mean ± sample "
                 "std; ★ best mean validation accuracy")
    fig.tight_layout()
    _save_atomically(plt, fig, path)
    return [summary["figures"][key] for key in keys]
