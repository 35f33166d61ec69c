"""Reading context, measured: train named variants over seeds through the installed CLI, then score each run
on its test split and on the context probe (pairs right on both sides, overall and per category).

    python scripts/measure_context.py --variants sst2 sst2-noglove --seeds 0 1 2 \\
        --set data.source=/path/to/sst2   # an offline copy of stanfordnlp/sst2 in the Hub's layout

Every run lands in runs/context/<variant>-seed<N>/ (kept, so predict/explain/evaluate work on it; an existing
complete run is scored again, not retrained); the table goes to stdout and runs/context/summary.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

# variant -> (config, --set overrides); the --set given on the command line applies to the sst2 ones
VARIANTS = {
    "default": ("default", []),  # IMDB review sentences first (stage_one.*), then Rotten Tomatoes; GloVe 6B 50d
    "reviews-then-rt-noglove": ("default", ["model.embedding_dim=100", "model.embedding.pretrained=null"]),
    "rt-only-glove": ("default", ["stage_one.enabled=false", "model.embedding_dim=100"]),  # GloVe + 50 learned
    "rt-only": ("default", ["stage_one.enabled=false", "model.embedding_dim=100",  # the default before stage_one
                            "model.embedding.pretrained=null"]),
    "sst2": ("sst2", []),
    "sst2-noglove": ("sst2", ["model.embedding.pretrained=null"]),
    "sst2-noglove100": ("sst2", ["model.embedding.pretrained=null", "model.embedding_dim=100"]),
    "sst2-glove100": ("sst2", ["model.embedding_dim=100"]),  # GloVe's 50 dimensions + 50 learned
    "sst2-1layer": ("sst2", ["model.num_layers=1"]),
    "sst2-bilstm": ("sst2", ["model.bidirectional=true"]),
    "sst2-gru": ("sst2", ["model.cell=gru"]),
    "sst2-wide": ("sst2", ["model.hidden_size=256"]),
    "sst2-drop5": ("sst2", ["model.embedding_dropout=0.5", "model.head_dropout=0.5", "model.dropout=0.5"]),
    "default-on-sst2": ("default", ["stage_one.enabled=false", "data.source=hf:stanfordnlp/sst2",
                                    "data.text_column=sentence", "data.validation_split=train",
                                    "data.test_split=validation"]),
}


def train(variant: str, seed: int, extra: list[str], root: Path) -> Path:
    config, sets = VARIANTS[variant]
    run = root / f"{variant}-seed{seed}"
    if (run / "metrics.json").is_file():
        return run
    sets = [*sets, *(extra if "sst2" in variant else []), f"seed={seed}"]
    cmd = ["sentiment-rnn", "train", "--config", config, "--output", str(run), "--overwrite"]
    for item in sets:
        cmd += ["--set", item]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run


def measure(run: Path) -> dict:
    from sentiment_rnn.predict import Predictor
    from sentiment_rnn.probe import load_probe, score_predictor

    metrics = json.loads((run / "metrics.json").read_text())
    probe = score_predictor(load_probe(), Predictor.from_dir(run), "positive")  # as sweep scores it
    return {"test": metrics["test"]["accuracy"], "validation": metrics["validation"]["accuracy"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
            "tokens_per_s": metrics["tokens_per_s"], "probe": probe["flip_rate"],
            **{f"probe: {name}": c["flip_rate"] for name, c in probe["categories"].items()},
            "readme_pair": float(probe["readme_pair_right"])}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["sst2"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override for the sst2 variants")
    parser.add_argument("--root", type=Path, default=Path("runs/context"))
    args = parser.parse_args()
    summary_path = args.root / "summary.json"
    for variant in args.variants:
        records = [measure(train(variant, seed, args.sets, args.root)) for seed in args.seeds]
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}  # other processes' too
        summary[variant] = {"seeds": args.seeds, "per_seed": records,
                            "mean": {k: spread([r[k] for r in records]) for k in records[0]}}
        summary_path.write_text(json.dumps(summary, indent=2))
        print(f"\n{variant} (seeds {args.seeds})")
        for key, value in summary[variant]["mean"].items():
            print(f"  {key:60s} {value}")


if __name__ == "__main__":
    main()
