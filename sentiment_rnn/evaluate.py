"""Score a trained run on its own recorded held-out rows, or on another source."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch

from sentiment_rnn import data as data_lib
from sentiment_rnn import rundir, splits
from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.inputs import parse_label_map
from sentiment_rnn.records import add_predictions, check_output_file, scored_rows
from sentiment_rnn.scoring import classification_metrics, predict_batches
from sentiment_rnn.sources import resolve_source
from sentiment_rnn.tokenizer import UNK, unknown_shares

LEFT_OUT = "left-out"  # a run carved by sentence: the phrases that lie only in its held-out sentences
RECORDED = ("test", "validation", LEFT_OUT)


def evaluate_run(model_dir: Path | None, source: str | None = None, split: str | None = None,
                 text_column: str | None = None, label_column: str | None = None, precision: str = "fp32",
                 label_map: str | None = None, predictions: Path | None = None, show_wrong: int = 0,
                 overwrite: bool = False) -> dict:
    """Metrics of a run on `split`: its recorded held-out rows by default (split None: test; left-out: the
    phrases a run carved by sentence left out of training), or a whole split of `source` (split None: its
    test split, or a single file's rows). precision "bf16" scores the model as `predict --precision bf16`
    runs it. label_map: "pos=positive,..." for a source whose labels are spelled otherwise. predictions: a
    JSON-lines file of every scored row (an existing one replaced only with overwrite); show_wrong: the N most
    confidently wrong rows go into the metrics."""
    if label_map and source is None:
        raise SentimentRNNError("--label-map maps the labels of --data; the run's own rows have the model's labels")
    if (text_column or label_column) and source is None:
        raise SentimentRNNError("--text-column and --label-column name columns of --data; the run's own rows are read "
                                "with the run's columns, so pass --data SOURCE or drop them")
    check_output_file(predictions, overwrite, reading=source)
    run = rundir.load_run(model_dir, precision=precision)
    cfg = run.config.data
    names = list(run.meta["label_names"])
    record = rundir.read_json(run.path / rundir.SPLIT)
    if source is None:
        split = split or "test"
        if split == cfg.train_split:
            raise SentimentRNNError(f"'{split}' is the split this run trained on: its rows show what the model "
                                    "memorized, not how it does on new text; score --split test or validation")
        if split not in RECORDED:
            kept = RECORDED if "carved_by_sentence" in record else RECORDED[:2]  # left-out: carved by sentence
            raise SentimentRNNError(f"the run records only its {', '.join(kept[:-1])} and {kept[-1]} rows, not "
                                    f"'{split}'; to score a split of a source, pass --data SOURCE --split NAME")
        if split == LEFT_OUT:
            ds = recorded_left_out(cfg, record, names)
        else:
            ds, _ = splits.recorded_split(cfg, record, split, names)
        shown = record.get("source_given", record.get("source", cfg.source))
    else:
        updates = {"source": source, "limit": None}
        if text_column:
            updates["text_column"] = text_column
        if label_column:
            updates["label_column"] = label_column
        mapping = parse_label_map(label_map, names) if label_map else None
        ds, split = data_lib.load_eval_data(cfg.model_copy(update=updates), split, names, mapping)
        shown = source
    encoded = data_lib.encode(ds, run.tokenizer, int(run.meta["max_length"]))
    loader = data_lib.make_loader(encoded, 256, shuffle=False)
    result = predict_batches(run.model, loader, torch.device("cpu"))
    metrics = classification_metrics(result["y_true"], result["y_pred"], names)
    metrics.update(run=str(run.path), split=split, source=shown, loss=result["loss"],
                   numeric_precision=precision)  # not "precision": that names a per-class metric here
    metrics.update(unknown_shares(encoded["input_ids"], run.tokenizer.token_to_id(UNK)))
    if source is not None and (warning := _trained_on(source, split, cfg, record)):
        metrics["warning"] = warning
    if predictions is not None or show_wrong:
        order = [i for batch in loader.sampler for i in batch]  # the loader reads rows in length buckets
        probs = torch.empty_like(result["probs"])  # [N, C]
        probs[order] = result["probs"]
        rows = scored_rows(ds["text"], ds["label"], probs, names)
        add_predictions(metrics, rows, predictions, show_wrong)
    return metrics


def _trained_on(source: str, split: str | None, cfg: DataConfig, record: dict) -> str | None:
    """A warning when --data's split (None: a file's every row) is the one the run trained on: the run's own
    source, its training split. 'hf:' in front of a local folder reads the same folder."""
    def place(name: str) -> str:
        return resolve_source(name).removeprefix("hf:")

    if split not in (None, cfg.train_split) or place(source) != place(record.get("source", cfg.source)):
        return None
    rows = f"the '{split}' split" if split else "every row"
    return (f"{rows} of {source} holds the rows this run trained on: the figures show what it memorized, not how "
            "it does on new text")


def recorded_left_out(cfg: DataConfig, record: dict, names: list[str] | None = None) -> datasets.Dataset:
    """The phrases a run carved by sentence left out of training (they lie only in its held-out sentences),
    rebuilt from its split.json record: rows that chose nothing and were never trained on."""
    from sentiment_rnn.sentence_carving import left_out_rows  # this option only

    if "carved_by_sentence" not in record:
        raise SentimentRNNError("this run was carved row by row, so it left no phrases out (data.carve_by_sentence "
                                "does); score --split validation or test instead")
    train_split = record["splits"]["train"]
    whole, _ = splits.recorded_split(cfg, {**record, "rows": {}}, "train", names)
    train = splits.sampled(whole, cfg, record["seed"])
    position = {row: k for k, row in enumerate(splits.column_numpy(train, splits.ROW).tolist())}
    held = {position[row] for part in splits.HELD_OUT if record["splits"][part] == train_split
            for row in record["rows"][part] if row in position}
    rows = left_out_rows(splits.column_numpy(train, "text").tolist(), held)
    then = record["carved_by_sentence"]["left_out"]
    if then == 0:
        raise SentimentRNNError("this run's carving left no phrases out (its data holds no phrases that lie only in "
                                "held-out sentences: whole sentences only); score --split validation or test instead")
    if len(rows) != then:
        raise SentimentRNNError(f"'{cfg.source}' changed since training ({len(rows):,} phrases left out now, "
                                f"{then:,} then); pass --data to evaluate elsewhere")
    return train.select(rows)
