"""Write an imbalanced sample of the embedded Rotten Tomatoes sentences as a CSV, for measuring class weights.

    python scripts/imbalanced_sample.py --output /tmp/rt_imbalanced.csv   # every negative, positives = 10%
    sentiment-rnn train -c configs/default.yaml --set data.source=/tmp/rt_imbalanced.csv \
        --set train.class_weights=balanced -o runs/imbalanced-balanced

Keeps every negative sentence and draws just enough positives (without replacement, fixed seed) that
they make up --positive-share of the rows. Labels are written as neg/pos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from sentiment_rnn.data import embedded_csv


def imbalanced_sample(positive_share: float, seed: int) -> pd.DataFrame:
    rows = pd.read_csv(embedded_csv())
    rt = rows[rows["source"] == "rotten_tomatoes"]
    negative, positive = rt[rt["label"] == 0], rt[rt["label"] == 1]
    wanted = round(len(negative) * positive_share / (1 - positive_share))  # positives / all = positive_share
    sample = pd.concat([negative, positive.sample(n=wanted, random_state=seed)]).sample(frac=1, random_state=seed)
    return pd.DataFrame({"text": sample["text"], "label": sample["label"].map({0: "neg", 1: "pos"})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("/tmp/rt_imbalanced.csv"), help="CSV file to write")
    parser.add_argument("--positive-share", type=float, default=0.1, help="share of positive rows, in (0, 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the positive rows' draw")
    args = parser.parse_args()
    if not 0 < args.positive_share < 1:
        parser.error("--positive-share must be between 0 and 1, e.g. 0.1")
    sample = imbalanced_sample(args.positive_share, args.seed)
    sample.to_csv(args.output, index=False)
    counts = sample["label"].value_counts().to_dict()
    print(f"wrote {len(sample)} rows to {args.output}: {counts}")


if __name__ == "__main__":
    main()
