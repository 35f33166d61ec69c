"""Check a loaded source, name its labels, and split it reproducibly into train, validation and test.

A source's own validation and test splits (a folder's validation.csv and test.csv, a Hub dataset's
splits) are used when it has them; what it lacks is carved from the training split, stratified and
seeded. The record (split.json in a run) names the exact held-out rows, so they can be rebuilt later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc

from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.sources import load_raw, recorded_source, resolve_source, split_label

ROW = "__row__"  # original row number, so a run can record exactly which rows it held out
HELD_OUT = ("validation", "test")


@dataclass
class Splits:
    """The three parts a run uses, plus what is needed to rebuild them and read their labels."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    label_names: list[str]
    record: dict = field(default_factory=dict)  # saved as split.json in the run


def column_numpy(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One column as a numpy array, read through datasets' Arrow format in batches of rows.

    On a selection of rows (what `select` and `shuffle` return), datasets gathers the column one Arrow row
    at a time, each row its own small Arrow object: asked for the whole column at once, it holds all of
    them together. A batch at a time holds one batch's worth."""
    column = ds.select_columns([name]).with_format("arrow")
    parts = [batch.column(name).to_numpy() for batch in column.iter(batch_size=10_000)]
    return np.concatenate(parts) if parts else column[name].to_numpy()


def _label_missing(labels, feature):
    """Rows without a label: empty or NaN, or -1 in a ClassLabel column (how the Hub marks unlabeled rows)."""
    missing = pc.is_null(labels, nan_is_null=True)
    if isinstance(feature, datasets.ClassLabel):
        missing = pc.or_(missing, pc.fill_null(pc.equal(labels, -1), False))
    return missing


def is_unlabeled(ds: datasets.Dataset, cfg: DataConfig) -> bool:
    """A split of texts whose labels are all missing (a GLUE test split: -1 everywhere), or that has no label
    column at all: it can be predicted, never scored."""
    if cfg.label_column not in ds.column_names:
        return cfg.text_column in ds.column_names
    feature = ds.features[cfg.label_column]
    for batch in ds.select_columns([cfg.label_column]).with_format("arrow").iter(65_536):
        if not pc.all(_label_missing(batch.column(cfg.label_column), feature)).as_py():
            return False
    return len(ds) > 0


def unlabeled_error(split: str, source: str, fix: str) -> SentimentRNNError:
    return SentimentRNNError(f"split '{split}' of '{source}' has no labels (every label is -1 or empty), so it "
                             f"cannot be scored; {fix}")


def check_columns(ds: datasets.Dataset, cfg: DataConfig, split: str, option_hint: bool = False,
                  where: str | None = None) -> None:
    """Both columns exist and every row has a text and a label; else name the first bad row.

    option_hint: name the CLI option (--text-column) instead of the config key in the hint.
    where: how errors name the rows (default "split 'NAME'"); a single file is named as the file.
    """
    where = where or split_label(cfg.source, split)
    for key in ("text_column", "label_column"):
        column = getattr(cfg, key)
        if column not in ds.column_names:
            fix = f"pass --{key.replace('_', '-')}" if option_hint else f"set data.{key}"
            raise SentimentRNNError(f"{where} has no column '{column}' (columns: {', '.join(ds.column_names)}); {fix}")
    if len(ds) == 0:
        raise SentimentRNNError(f"{where} of '{cfg.source}' is empty; give a source with rows"
                                if where.startswith("split") else f"{where} is empty; give a source with rows")
    start = 0  # one Arrow batch at a time: trimming a whole text column would copy all of it into memory
    feature = ds.features[cfg.label_column]
    marked = "-1 or empty" if isinstance(feature, datasets.ClassLabel) else "empty or NaN"  # as _label_missing reads
    for batch in ds.select_columns([cfg.text_column, cfg.label_column]).with_format("arrow").iter(65_536):
        texts, labels = batch.column(cfg.text_column), batch.column(cfg.label_column)
        no_label = _label_missing(labels, feature)
        # Kleene "or": a null text gives null from the comparison, and a plain "or" would turn true into null.
        no_text = pc.or_kleene(pc.is_null(texts), pc.equal(pc.utf8_trim_whitespace(pc.cast(texts, "string")), ""))
        for mask, what in ((no_label, f"no label ({marked})"), (no_text, "an empty text")):
            if pc.any(mask).as_py():
                row = start + int(pc.index(mask, True).as_py())
                raise SentimentRNNError(f"{where} row {row + 1} has {what}; fix or remove that row")
        start += batch.num_rows


def _label_key(value) -> str:
    """A label value as the string that names it: 1, 1.0 and "1" all name label "1"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_int(key: str) -> bool:
    return key.lstrip("-").isdigit()


def label_names(raw: dict[str, datasets.Dataset], cfg: DataConfig) -> list[str]:
    """The labels of the training split (the first of `raw`): a ClassLabel's names, else data.label_names for
    integer labels 0, 1, ..., else every value found, as strings, sorted (numerically when every label is an
    integer). A label that only another split has would be a class no row trains: refused."""
    feature = next(iter(raw.values())).features[cfg.label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    found = {split: {_label_key(v) for v in ds.unique(cfg.label_column)} for split, ds in raw.items()}
    train, *others = found
    keys = found[train]
    for split in others:
        if stray := sorted(found[split] - keys):
            raise SentimentRNNError(f"{split_label(cfg.source, split)} has label {stray[0]!r}, which no row of the "
                                    f"training split '{train}' has (its labels: {', '.join(sorted(keys))}); fix that "
                                    "label or drop its rows")
    if cfg.label_names is not None:
        known = {str(i) for i in range(len(cfg.label_names))}
        if stray := sorted(keys - known):
            fix = "give one name per integer label, label 0's first" if _is_int(stray[0]) else "drop data.label_names"
            raise SentimentRNNError(f"data.label_names names labels 0..{len(known) - 1}, but the data has label "
                                    f"{stray[0]!r}; {fix}")
        if unused := sorted(known - keys, key=int):
            raise SentimentRNNError(f"data.label_names names label {unused[0]} ({cfg.label_names[int(unused[0])]!r}), "
                                    "which no training row has; give one name per label the data has")
        return list(cfg.label_names)
    if all(_is_int(k) for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def to_ids(ds: datasets.Dataset, cfg: DataConfig, names: list[str], split: str,
           label_map: dict[str, str] | None = None, where: str | None = None) -> datasets.Dataset:
    """Columns 'text', 'label' (ids into `names`) and the row number.

    label_map: data label -> one of `names`, for data whose labels are spelled otherwise (evaluate --label-map);
    labels it does not name must already be one of `names`. where: how errors name the rows (see check_columns).

    Only the small label column is written anew; the text stays in the source's Arrow file, so a large
    CSV is not copied (nor paged into memory) a second time.
    """
    feature = ds.features[cfg.label_column]
    given = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    lookup = {n: i for i, n in enumerate(names)}

    named = None if given else cfg.label_names  # integer labels named by the config

    def key(value) -> str:
        if given:
            return given[value]
        k = _label_key(value)
        return named[int(k)] if named and _is_int(k) and 0 <= int(k) < len(named) else k

    def convert(labels):
        if given == names and not label_map:
            return {"label": labels}
        keys = [key(v) for v in labels]
        if label_map:
            keys = [label_map.get(k, k) for k in keys]
        unknown = next((k for k in keys if k not in lookup), None)
        if unknown is not None:
            raise SentimentRNNError(f"{where or f'split {split!r}'} has label {unknown!r}, which is not one of "
                                    f"{names}; give data with the same labels, or map them with --label-map")
        return {"label": [lookup[k] for k in keys]}

    labels = ds.map(convert, input_columns=cfg.label_column, batched=True, batch_size=10_000,
                    remove_columns=ds.column_names,
                    features=datasets.Features({"label": datasets.ClassLabel(names=names)}))
    text = ds.select_columns([cfg.text_column])
    if cfg.text_column != "text":
        text = text.rename_column(cfg.text_column, "text")
    if getattr(text.features["text"], "dtype", None) not in ("string", "large_string"):
        text = text.cast_column("text", datasets.Value("string"))
    out = datasets.concatenate_datasets([text, labels], axis=1)
    return out.add_column(ROW, np.arange(len(out), dtype=np.int64))


def _stratified_split(rows: np.ndarray, labels: np.ndarray, test_share: float, seed: int,
                      label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of `rows` keeping each label's share (`labels[rows]`) in both parts; whole row counts,
    so no row is dropped.

    scikit-learn draws the rows from the label column as one array. `Dataset.train_test_split` does the
    same draw, but reads the labels through a column object row by row, which takes minutes on millions.
    """
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[rows], minlength=len(label_names))
    if (counts == 1).any():
        single = label_names[int(np.flatnonzero(counts == 1)[0])]
        raise SentimentRNNError(f"label '{single}' has a single row, too few for a stratified split; "
                                "remove that row or add more rows of that label")
    n_test = int(np.ceil(test_share * len(rows)))
    kept, held = train_test_split(rows, test_size=n_test, stratify=labels[rows], random_state=seed)
    return kept, held


def _carve_rows(rows: np.ndarray, labels: np.ndarray, shares: tuple[float, float, float], seed: int,
                names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train/validation/test split of `rows` (their labels: `labels[rows]`).

    The held-out part is split again by position, so the label column is read once.
    """
    held = shares[1] + shares[2]
    n = len(rows)
    if round(n * held) < 2 * len(names) or round(n * shares[0]) < len(names):
        raise SentimentRNNError(f"only {n} rows: too few to split into train/validation/test; give more data")
    kept, held_out = _stratified_split(rows, labels, held, seed, names)
    validation, test = _stratified_split(held_out, labels, shares[2] / held, seed, names)
    return kept, validation, test


def _carve(train: datasets.Dataset, shares: tuple[float, float, float], seed: int):
    """Stratified, seeded train/validation/test split of one dataset, row by row."""
    rows = _carve_rows(np.arange(len(train)), column_numpy(train, "label"), shares, seed,
                       train.features["label"].names)
    return tuple(train.select(r) for r in rows)


def _carve_by_sentence(train: datasets.Dataset, shares, seed: int, given: dict) -> tuple[dict, int]:
    """Carve whole sentences (see sentence_carving.py); a carved part that a given split replaces trains.

    Returns the parts and how many rows were left out (phrases held only by held-out sentences).
    """
    from sentiment_rnn.sentence_carving import containing_sentences, rows_following_sentences  # this option only

    sentences, holders = containing_sentences(column_numpy(train, "text").tolist())
    labels = column_numpy(train, "label")
    kept, *held = _carve_rows(np.arange(len(sentences)), labels[sentences], shares, seed,
                              train.features["label"].names)
    parts = dict(zip(HELD_OUT, held, strict=True))
    training = np.concatenate([kept, *(parts[p] for p in given)])
    rows = rows_following_sentences(holders, training)
    carved = {"train": train.select(rows),
              **{p: train.select(np.sort(sentences[r])) for p, r in parts.items() if p not in given}}
    return {**carved, **given}, len(train) - len(rows) - sum(len(parts[p]) for p in HELD_OUT if p not in given)


def held_out_splits(cfg: DataConfig, raw) -> tuple[dict[str, str], dict[str, int]]:
    """The source's own splits serving as validation and test: those configured, else those it has that carry
    labels; a part named after the training split is carved from it. Also returns the source's own
    validation/test splits left out for having no labels, with their sizes: they are never scored."""
    chosen, unlabeled = {}, {}
    for part in HELD_OUT:
        split = getattr(cfg, f"{part}_split")
        if split is not None and split not in raw:
            raise SentimentRNNError(
                f"'{cfg.source}' has no split '{split}' (splits: {', '.join(raw)}); set data.{part}_split")
        if split is not None and split != cfg.train_split and is_unlabeled(raw[split], cfg):
            raise unlabeled_error(split, cfg.source, f"set data.{part}_split to a labeled split, or to "
                                                     f"{cfg.train_split} to carve it from the training split")
        if split is None and part in raw and part != cfg.train_split:
            if is_unlabeled(raw[part], cfg):
                unlabeled[part] = len(raw[part])
            else:
                split = part
        if split is not None and split != cfg.train_split:
            if split in chosen.values():  # one split as both: the epoch would be chosen on the test rows
                raise SentimentRNNError(f"data.validation_split and data.test_split are both '{split}'; set "
                                        f"data.validation_split: {cfg.train_split} to carve validation from training")
            chosen[part] = split
    return chosen, unlabeled


def _parts(train: datasets.Dataset, given: dict[str, datasets.Dataset], shares, seed: int,
           by_sentence: bool = False) -> tuple[dict, int]:
    """train/validation/test: the given splits, and the rest carved from `train`; also how many training
    rows were left out (by_sentence only: phrases that lie only in held-out sentences)."""
    if len(given) == len(HELD_OUT):  # nothing to carve: every training row trains
        return {"train": train, **given}, 0
    if by_sentence:
        return _carve_by_sentence(train, shares, seed, given)
    carved = dict(zip(("train", *HELD_OUT), _carve(train, shares, seed), strict=True))
    if not given:
        return carved, 0
    # The carved part that a given split replaces goes back to training.
    carved["train"] = datasets.concatenate_datasets([carved["train"], *(carved[p] for p in given)])
    return {**carved, **given}, 0


def sampled(train: datasets.Dataset, cfg: DataConfig, seed: int) -> datasets.Dataset:
    """data.limit's seeded sample of the training split (the embedded CSV lists every positive row before
    the negatives), or the whole split."""
    if cfg.limit is not None and cfg.limit < len(train):
        return train.shuffle(seed=seed).select(range(cfg.limit))
    return train


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load, validate and split a data source; the record says how to rebuild the exact same parts. The
    carving is drawn with data.split_seed when set, else with the run's seed."""
    seed = cfg.carving_seed(seed)
    raw = load_raw(cfg)
    if cfg.train_split not in raw:
        raise SentimentRNNError(
            f"'{cfg.source}' has no split '{cfg.train_split}' (splits: {', '.join(raw)}); set data.train_split")
    named, unlabeled = held_out_splits(cfg, raw)
    used = {split: raw[split] for split in (cfg.train_split, *named.values())}
    for split, ds in used.items():
        check_columns(ds, cfg, split)
    names = label_names(used, cfg)
    if len(names) < 2:
        raise SentimentRNNError(
            f"the training data has one class only ({names[0]!r}); a classifier needs rows of at least two labels")
    data = {split: to_ids(ds, cfg, names, split) for split, ds in used.items()}
    train = sampled(data[cfg.train_split], cfg, seed)
    parts, left_out = _parts(train, {part: data[split] for part, split in named.items()}, cfg.split, seed,
                             cfg.carve_by_sentence)
    record = {
        "source": resolve_source(cfg.source),  # absolute: the run can be evaluated from any folder
        "source_given": cfg.source,  # as the user wrote it, for display
        "seed": seed,
        "shares": list(cfg.split),
        "splits": {"train": cfg.train_split, **{part: named.get(part, cfg.train_split) for part in HELD_OUT}},
        "rows": {k: column_numpy(v, ROW).tolist() for k, v in parts.items() if k != "train"},
        "sizes": {k: len(v) for k, v in parts.items()},
        "unlabeled": unlabeled,  # the source's own splits without labels, never scored
    }
    if cfg.carve_by_sentence:
        record["carved_by_sentence"] = {"left_out": left_out}  # phrases held only by held-out sentences
    return Splits(parts["train"], parts["validation"], parts["test"], names, record)


def describe_splits(record: dict) -> str:
    """One line naming each part's size and where it came from, e.g. for the training log."""
    train = record["splits"]["train"]
    said = []
    for part in ("train", *HELD_OUT):
        split = record["splits"][part]
        origin = f"split '{split}'" if part == "train" or split != train else f"carved from '{train}'"
        said.append(f"{part} {record['sizes'][part]:,} rows ({origin})")
    line = f"Data {record.get('source_given', record['source'])}: " + ", ".join(said)
    if "carved_by_sentence" in record:
        line += (f"; carved as whole sentences, {record['carved_by_sentence']['left_out']:,} phrases that lie only "
                 "in them left out of training")
    for split, rows in record.get("unlabeled", {}).items():
        line += f"; split '{split}' ({rows:,} rows) has no labels and is never scored"
    return line


def recorded_split(cfg: DataConfig, record: dict, part: str = "test",
                   names: list[str] | None = None) -> tuple[datasets.Dataset, list[str]]:
    """Rebuild exactly the rows a run held out, from its split.json record (its resolved source)."""
    cfg = cfg.model_copy(update={"source": recorded_source(record, cfg.source)})
    raw = load_raw(cfg)
    split = record["splits"][part]
    if split not in raw:
        raise SentimentRNNError(f"'{cfg.source}' no longer has split '{split}'; pass --data to evaluate elsewhere")
    check_columns(raw[split], cfg, split)
    names = names or label_names({split: raw[split]}, cfg)
    ds = to_ids(raw[split], cfg, names, split)
    rows = record["rows"].get(part)
    if rows is not None:
        if rows and max(rows) >= len(ds):
            raise SentimentRNNError(
                f"'{cfg.source}' changed since training (fewer rows); pass --data to evaluate elsewhere")
        ds = ds.select(rows)
    return ds, names


def load_eval_data(cfg: DataConfig, split: str | None, names: list[str],
                   label_map: dict[str, str] | None = None) -> tuple[datasets.Dataset, str]:
    """A whole split of another source, for `evaluate --data`, its labels mapped onto the model's `names`
    (through `label_map` first, where given).

    split None: 'test' if the source has one, else its only split. A single file is scored whole, its split
    returned as None (datasets names it 'train', which is not the user's word for it).
    """
    raw = load_raw(cfg)
    single = len(raw) == 1 and Path(cfg.source).is_file()
    if single and split is not None and split not in raw:
        raise SentimentRNNError(f"'{cfg.source}' is a single file, scored whole; drop --split")
    if split is None:
        split = "test" if "test" in raw else next(iter(raw)) if len(raw) == 1 else None
        if split is None:
            raise SentimentRNNError(
                f"'{cfg.source}' has no test split (splits: {', '.join(raw)}); choose one with --split")
    if split not in raw:
        raise SentimentRNNError(f"'{cfg.source}' has no split '{split}'; pass one of its splits to --split: "
                                f"{', '.join(raw)}")
    if is_unlabeled(raw[split], cfg):
        others = [s for s in raw if s != split]
        fix = f"score a labeled split with --split ({', '.join(others)})" if others else "give labeled data"
        raise unlabeled_error(split, cfg.source, fix + ", or classify its texts with sentiment-rnn predict")
    # A single file is read as one split that datasets names 'train'; errors name the file instead.
    where = f"'{cfg.source}'" if single else None
    check_columns(raw[split], cfg, split, option_hint=True, where=where)
    return to_ids(raw[split], cfg, names, split, label_map, where), None if single else split
