"""PNG figures for a run: learning curves and gradient norms through time (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


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
    fig, ax = plt.subplots(figsize=(7, 4))
    for probe in probes:
        norms = probe["norms"]
        ax.plot(range(len(norms)), norms, label=f"epoch {probe['epoch']}")
    ax.set_yscale("log")
    ax.set(xlabel="steps back from the last token", ylabel="||dLoss/dh_t|| (mean over sentences)",
           title=title or "Gradient flowing back through time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
