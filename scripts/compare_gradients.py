"""Overlay the gradients-through-time probes of several runs in one figure, and print the norms.

    python scripts/compare_gradients.py RUN_DIR... --output docs/gradients-imdb.png [--epoch 1]

Reads each run's metrics.json (`grad_through_time`: mean ||dLoss/dh_t|| by steps back from the last
token, recorded at train.grad_probe_epochs) and prints the norm at 0, 10, 50, 100 and 200 steps back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STEPS = (0, 10, 50, 100, 200)


def read_probe(run: Path, epoch: int) -> tuple[str, list[float]]:
    """The run's cell label and its probe's norms at `epoch`; a run without them is a one-line error."""
    import yaml

    if not (run / "metrics.json").is_file() or not (run / "config.yaml").is_file():
        raise SystemExit(f"Error: '{run}' holds no metrics.json and config.yaml; pass the folder of a finished run")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    model = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["model"]
    probes = {p["epoch"]: p["norms"] for p in metrics.get("grad_through_time") or []}
    if epoch not in probes:
        raise SystemExit(f"Error: '{run}' recorded no gradient probe at epoch {epoch}; it has epochs "
                         f"{sorted(probes)} (train.grad_probe_epochs): pass one of them with --epoch")
    return ("tanh RNN" if model["cell"] == "rnn" else model["cell"].upper()), probes[epoch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with a metrics.json")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--epoch", type=int, default=1, help="which recorded probe epoch to compare")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [read_probe(run, args.epoch) for run in args.runs]  # every run checked before drawing
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, (label, norms) in zip(args.runs, curves, strict=True):
        ax.plot(range(len(norms)), norms, label=label)
        shown = "  ".join(f"{k}: {norms[k]:.2e}" for k in STEPS if k < len(norms))
        print(f"{label:8} {run}  epoch {args.epoch}  {shown}")
    ax.set_yscale("log")
    ax.set(xlabel="steps back from the last token", ylabel="||dLoss/dh_t|| (mean over sentences)",
           title=f"Gradient flowing back through time (IMDB, after epoch {args.epoch})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=100)


if __name__ == "__main__":
    main()
