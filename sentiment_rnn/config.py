"""Typed run configuration: YAML + dotted overrides, validated once at the edge.

Every field has its default here and nowhere else. Unknown keys are errors (with the closest valid key
suggested), so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiment_rnn.errors import SentimentRNNError

CellName = Literal["rnn", "gru", "lstm"]  # the recurrent cells; checked here once, for every module
CELLS: tuple[str, ...] = get_args(CellName)
# model.* keys that fix the embedding's and encoder's tensor shapes: model.init_from needs a source that matches
SHAPE_KEYS = ("cell", "encoder", "embedding_dim", "hidden_size", "num_layers", "bidirectional")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    # rotten_tomatoes | imdb | imdb_sentences (IMDB's sentences labeled by their review) | a file or folder | hf:NAME
    source: str = "rotten_tomatoes"
    hf_subset: str | None = None  # the Hub dataset's configuration name, if it has several
    text_column: str = "text"  # column holding the text
    label_column: str = "label"  # column holding the label (int or string)
    train_split: str = "train"  # split (or file stem, in a folder) to train on
    # None: the source's own labeled 'validation' / 'test' split if it has one, else carved from train;
    # the train split's name (e.g. train): carved from it even where the source has its own
    validation_split: str | None = None
    test_split: str | None = None
    label_names: list[str] | None = None  # names of integer labels 0, 1, ... (e.g. [negative, positive]), if none
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/validation/test shares when carving
    max_length: int = Field(64, ge=1, le=100_000)  # tokens kept per text (truncation)
    limit: int | None = Field(None, ge=10)  # a sample of this many training-split rows, drawn before carving
    split_seed: int | None = Field(None, ge=0, lt=1 << 32)  # carves (and draws limit's sample); None: the run's seed
    carve_by_sentence: bool = False  # carve whole sentences; phrases follow them (SST-2; sentence_carving.py)

    def carving_seed(self, run_seed: int) -> int:
        """The seed that carves the splits (and draws limit's sample): split_seed, else the run's seed."""
        return self.split_seed if self.split_seed is not None else run_seed

    @field_validator("split", mode="before")
    @classmethod
    def _three_shares(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) != 3:
            raise ValueError(f"data.split must be three shares (train, validation, test) that sum to 1, "
                             f"e.g. [0.8, 0.1, 0.1]; got {len(value)}: {list(value)}")
        return value

    @field_validator("label_names")
    @classmethod
    def _two_or_more_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value) or not all(value)):
            raise ValueError(f"data.label_names must be two or more distinct names, label 0's first, e.g. "
                             f"[negative, positive] (got {value})")
        return value

    @model_validator(mode="after")
    def _split_sums_to_one(self) -> DataConfig:
        if any(s <= 0 for s in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError("data.split must be three positive shares that sum to 1, e.g. [0.8, 0.1, 0.1]")
        return self


class TokenizerConfig(_Strict):
    lowercase: bool = True  # fold case before splitting
    min_frequency: int = Field(2, ge=1)  # words seen fewer times map to [UNK]
    max_vocab: int = Field(20_000, ge=3)  # vocabulary size cap, [PAD] and [UNK] included
    split_contractions: bool = False  # "don't" -> "do n't", as the Penn Treebank (SST-2, GloVe) writes it


class EmbeddingConfig(_Strict):
    pretrained: str | None = None  # glove-6b-50d (the [glove] extra; embedding_dim's first 50) or a GloVe text file
    freeze: bool = False  # keep pretrained vectors fixed during training


class ModelConfig(_Strict):
    kind: Literal["rnn", "per_word_linear"] = "rnn"  # the recurrent classifier or the naive baseline
    embedding_dim: int = Field(100, ge=1)  # feature_len: width of each word vector
    embedding: EmbeddingConfig = EmbeddingConfig()
    cell: CellName = "rnn"  # recurrent cell
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # only for cell: rnn (a GRU's or LSTM's gates fix their own)
    encoder: Literal["layer", "cells"] = "layer"  # nn.RNN-style layer, or nn.RNNCell unrolled by hand
    hidden_size: int | list[int] = 128  # one state width for every layer, or one per layer ([20, 15]: encoder cells)
    num_layers: int = Field(1, ge=1, le=16)  # stacked layers; a hidden_size list sets it to its length
    bidirectional: bool = False  # also read each sentence right to left
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # between stacked layers
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the word vectors
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the final state, before the linear head
    pooling: Literal["last", "concat"] = "last"  # the head reads the last real token's state, or [last, max, mean]
    init_from: str | None = None  # start embedding + encoder from this pretrain-lm or train run (and its tokenizer)

    @model_validator(mode="before")
    @classmethod
    def _one_width_per_layer(cls, data: Any) -> Any:
        """hidden_size: one width, or one per layer, which sets num_layers to their count. Equal widths read as one,
        so a model has one spelling: nn.RNN's own (hidden_size, num_layers) wherever it can have it."""
        sizes = data.get("hidden_size", 1) if isinstance(data, dict) else 1
        widths = sizes if isinstance(sizes, list) else [sizes]
        if not widths or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in widths):
            raise ValueError(f"model.hidden_size must be a positive width or a list of per-layer widths, e.g. 128 "
                             f"or [20, 15] (got {sizes!r})")
        if not isinstance(sizes, list):
            return data
        if len(set(sizes)) > 1 and data.get("encoder", cls.model_fields["encoder"].default) != "cells":
            raise ValueError(f"model.hidden_size {sizes} gives each layer its own width, which needs model.encoder: "
                             "cells (nn.RNN's layers share one width)")
        return {**data, "hidden_size": sizes[0] if len(set(sizes)) == 1 else sizes, "num_layers": len(sizes)}

    @model_validator(mode="after")
    def _nonlinearity_of_rnn_only(self) -> ModelConfig:
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ValueError(f"model.nonlinearity: relu is for cell: rnn, not {self.cell}; set cell: rnn or drop it")
        return self

    def layer_sizes(self) -> list[int]:
        """Hidden width of every layer, bottom first."""
        sizes = self.hidden_size
        return list(sizes) if isinstance(sizes, list) else [sizes] * self.num_layers


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)  # upper bound; early stopping usually ends sooner
    batch_size: int = Field(64, ge=1)  # sentences per optimizer step; under torchrun, split among the processes
    lr: float = Field(2e-3, gt=0)  # AdamW learning rate
    weight_decay: float = Field(0.01, ge=0)  # AdamW decoupled weight decay
    clip_grad_norm: float | None = Field(1.0, gt=0)  # clip against exploding gradients through time
    patience: int = Field(3, ge=1)  # epochs without validation gain before stopping
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: OMP_NUM_THREADS, else the cores (at most 4)
    amp_bf16: bool = False  # bf16 autocast on CUDA
    fast_cpu: bool = False  # hand-written CPU kernels (sentiment_rnn/speed): faster; same math, other dropout masks
    max_steps: int | None = Field(None, ge=1)  # stop each epoch after this many steps (smoke runs)
    checkpoint_every: int | None = Field(None, ge=1)  # also checkpoint every N optimizer steps
    grad_probe_epochs: list[int] = [1]  # epochs after which dLoss/dh_t is recorded on a validation batch
    bucket_pool: int = Field(50, ge=1)  # batches per pool sorted by length (less padding)
    layer_lr_decay: float = Field(1.0, ge=1.0)  # head: lr; each layer group below: lr / decay once more (ULMFiT: 2.6)
    schedule: Literal["constant", "onecycle", "warmup_linear"] = "constant"  # learning rate per batch
    warmup_steps: int = Field(100, ge=0)  # schedule warmup_linear: steps of linear warm-up before the linear decay
    unfreeze: int | None = Field(None, ge=1)  # gradual unfreezing: epochs per layer group, head first; None: all train
    class_weights: Literal["balanced"] | list[float] | None = None  # loss weights, label order; balanced: n / (k*count)

    @field_validator("class_weights", mode="before")
    @classmethod
    def _balanced_or_positive(cls, value: Any) -> Any:
        """One readable message instead of pydantic's two union branches; the count is checked against the
        data's classes once the labels are known (train.class_weights)."""
        numbers = isinstance(value, list) and value and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in value)
        if value is None or value == "balanced" or numbers:
            return value
        raise ValueError(f"must be balanced or a list of positive weights, one per class, e.g. [1, 9] (got {value!r})")


class LMConfig(_Strict):
    """pretrain-lm's corpus and batching; its optimizer, epochs and threads are the train.* keys."""

    # embedded: training rows of lm.corpora; else a .txt file (one document per line) or a data source
    # whose data.text_column is read
    source: str = "embedded"
    corpora: list[str] = ["rotten_tomatoes", "imdb"]  # embedded corpora read (training rows under seed, data.split)
    held_out: float = Field(0.01, gt=0.0, lt=0.5)  # share of the corpus's documents kept aside for held-out perplexity
    batching: Literal["stream", "documents"] = "stream"  # one stream with state carried, or single documents
    bptt: int = Field(35, ge=2)  # tokens per truncated-BPTT segment
    eval_batch_size: int = Field(10, ge=1)  # parallel streams when scoring the held-out text
    cutoffs: list[int] = [2000, 10000]  # nn.AdaptiveLogSoftmaxWithLoss cluster boundaries, by word frequency rank
    div_value: float = Field(4.0, ge=1.0)  # each tail cluster's projection is this many times narrower
    time_limit_s: float | None = Field(None, gt=0)  # end each epoch's training after this many seconds


class StageOneConfig(_Strict):
    """A first training stage on other labeled data (sentiment_rnn/stages.py); data.source then trains from it."""

    enabled: bool = False  # train on stage_one.source first, then on data.source starting from that run
    source: str = "imdb_sentences"  # the first stage's data.source
    epochs: int = Field(2, ge=1)  # the first stage's train.epochs
    lr: float | None = Field(None, gt=0)  # the first stage's train.lr; null: train.lr (the second may fine-tune slower)
    limit: int | None = Field(None, ge=10)  # the first stage's data.limit (rows of its source)
    split: tuple[float, float, float] = (0.96, 0.02, 0.02)  # the first stage's data.split: a small validation


class Config(_Strict):
    """A classifier's config (train, compare-baseline, sweep): what shapes a classifier run, and nothing else."""

    name: str = "default"  # run name; the run lands in runs/<name>/ unless --output says otherwise
    seed: int = Field(0, ge=0, lt=1 << 32)  # numpy's generators take 32-bit seeds
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    stage_one: StageOneConfig = StageOneConfig()  # an optional first stage on the review sentences

    @model_validator(mode="after")
    def _one_start(self) -> Config:
        if self.stage_one.enabled and self.model.init_from is not None:
            raise ValueError("stage_one.enabled and model.init_from both choose where the model starts; set "
                             "stage_one.enabled: false to start from model.init_from")
        return self


class LMRunConfig(Config):
    """pretrain-lm's config: the classifier's keys (the model it pretrains, its optimizer and loop) and lm.*."""

    lm: LMConfig = LMConfig()


# Keys of features measured and removed (README, "Transfer"), with the value that meant "off": a saved run's config
# loads as before; any other value is refused in one line, so a config for the feature never trains without it.
RETIRED = {
    ("train", "lm_loss_weight"): (0.0, "the auxiliary next-word loss tripled training time for no gain"),
    ("lm", "objective"): ("next_word", "the sequence autoencoder scored below training from scratch"),
}


def _drop_retired(raw: dict, origin: str, overrides: dict[str, str]) -> None:
    """Remove retired keys at their "off" value; refuse any other value, naming the removal."""
    for (section, key), (off, reason) in RETIRED.items():
        node = raw.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        value = node.pop(key)
        if value != off:
            where = _origin_of((section, key), origin, overrides)
            raise SentimentRNNError(f"{where}: {section}.{key} was removed ({reason}; README, Transfer); "
                                    f"delete the key (a saved run loads without it) and train or load again")


def _read_hidden_sizes(raw: dict, origin: str, overrides: dict[str, str], saved_run: bool = False) -> None:
    """model.hidden_sizes: [20, 15] is written model.hidden_size: [20, 15]. A run saved before (null there for
    encoder: layer) loads as that list form; a config giving the old key is refused, naming the new one."""
    model = raw.get("model")
    sizes = model.pop("hidden_sizes", None) if isinstance(model, dict) else None
    if sizes is not None and not saved_run:
        where = _origin_of(("model", "hidden_sizes"), origin, overrides)
        raise SentimentRNNError(f"{where}: model.hidden_sizes is now written model.hidden_size: "
                                f"{yaml.safe_dump(sizes, default_flow_style=True).strip()}; rename the key")
    if sizes is not None:
        model.update(hidden_size=sizes, num_layers=len(sizes))


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at a nested location, for 'did you mean' hints."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(err: dict, schema: type[Config]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "config"
    if err["type"] == "extra_forbidden" and loc[:1] == ("lm",):
        return ("'lm' configures a language model, which `sentiment-rnn pretrain-lm --config` trains; to train a "
                "classifier from this config, drop the lm: section")
    if err["type"] == "extra_forbidden":
        valid = _field_names(schema, loc[:-1])
        close = [key.removesuffix(str(loc[-1])) + name for name in difflib.get_close_matches(str(loc[-1]), valid, n=1)]
        if len(loc) == 1:  # a section's key written at the top (hidden_size=64): name the section's
            close = [f"{s}.{key}" for s in valid if key in _field_names(schema, (s,))] or close
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"  # as --set takes it
        return f"unknown key '{key}'; {hint}"
    if err["type"] == "value_error":  # our own validators' messages already say what is allowed (and the key)
        msg = err["msg"].removeprefix("Value error, ")
        return msg if msg.startswith((f"{key}.", f"{key} ")) else f"'{key}': {msg}"
    return f"'{key}': {err['msg']} (got {err.get('input')!r})"


def _origin_of(loc: tuple, origin: str, overrides: dict[str, str], message: str = "", unknown: bool = False) -> str:
    """Blame the --set override that wrote the failing key (or, for an unknown key, a key under it), not the file,
    when one did. A check of a whole section names the keys it read: the first override named is blamed."""
    key = ".".join(str(p) for p in loc)
    for written, item in overrides.items():
        if key == written or key.startswith(written + ".") or (unknown and written.startswith(key + ".")):
            return f"--set {item}"
    named = sorted((message.find(w), w) for w in overrides if w.startswith(key + ".") and w in message)
    return f"--set {overrides[named[0][1]]}" if named else origin


def parse_config(raw: dict[str, Any], origin: str = "config", overrides: dict[str, str] | None = None,
                 schema: type[Config] | None = None) -> Config:
    """Validate a plain dict into a Config, or raise one readable error.

    overrides: the dotted keys that --set wrote, with the override as given, to name it in errors.
    schema: Config (a classifier) or LMRunConfig (pretrain-lm); None: LMRunConfig when there is an lm section.
    """
    if not isinstance(raw, dict):
        raise SentimentRNNError(f"{origin}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    _drop_retired(raw, origin, overrides or {})
    _read_hidden_sizes(raw, origin, overrides or {})
    schema = schema or (LMRunConfig if "lm" in raw else Config)
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        first, *rest = exc.errors()
        said = _describe(first, schema)
        more = f" (and {len(rest)} more)" if rest else ""
        where = _origin_of(tuple(first["loc"]), origin, overrides or {}, said, first["type"] == "extra_forbidden")
        raise SentimentRNNError(f"{where}: {said}{more}") from None


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise SentimentRNNError(f"override '{item}' is not KEY=VALUE; write e.g. --set model.hidden_size=256")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SentimentRNNError(f"override '{item}': '{part}' is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def packaged_configs() -> dict[str, Traversable]:
    """The configs shipped inside the package, by name (`default`, `gru`, ...)."""
    folder = resources.files("sentiment_rnn").joinpath("configs")
    return {item.name.rsplit(".", 1)[0]: item for item in folder.iterdir() if item.name.endswith(".yaml")}


def resolve_config(spec: str | Path) -> Path | Traversable:
    """A config file on disk, else a packaged config named by `spec`.

    `default`, `default.yaml` and `configs/default.yaml` all name the shipped config when no such file
    exists where the command runs, so the commands work from any folder after `pip install`.
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = packaged_configs()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent in (Path("."), Path("configs")) and name in shipped:
        return shipped[name]
    if path.is_dir():
        raise SentimentRNNError(f"config '{path}' is a directory; pass a YAML file or a shipped config name "
                                f"({', '.join(sorted(shipped))})")
    raise SentimentRNNError(f"config file '{path}' not found; pass an existing YAML file or a shipped config name "
                            f"({', '.join(sorted(shipped))})")


def _read_yaml(source: Path | Traversable, origin: str) -> Any:
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise SentimentRNNError(f"{origin}: not UTF-8 text; save the config as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SentimentRNNError(f"{origin}: YAML syntax error{where}: {problem}; fix the file's syntax") from None


def load_config(spec: str | Path | None, overrides: list[str] | None = None, schema: type[Config] | None = None,
                saved_run: bool = False) -> Config:
    """Read a YAML config (see resolve_config; the schema's defaults when None) and apply KEY=VALUE overrides.

    schema: see parse_config. saved_run: the file is a run's own config.yaml: a classifier's lm: section (runs saved
    before the split held pretrain-lm's defaults) shaped nothing and is left out; see _read_hidden_sizes.
    """
    raw: Any = {}
    origin = "defaults"
    if spec is not None:
        source = resolve_config(spec)
        origin = str(spec) if isinstance(source, Path) else f"{source.name} (shipped)"
        raw = _read_yaml(source, origin)
        if isinstance(raw, dict) and "name" not in raw:
            raw["name"] = source.name.rsplit(".", 1)[0]
        if saved_run and isinstance(raw, dict):
            if schema is Config:
                raw.pop("lm", None)
            _read_hidden_sizes(raw, origin, {}, saved_run=True)
    written = {}
    for item in overrides or []:
        if not isinstance(raw, dict):
            break
        _apply_override(raw, item)
        written[item.partition("=")[0].strip()] = item
    return parse_config(raw, origin, written, schema)


def dump_config(config: Config, schema: type[Config] | None = None) -> str:
    """The resolved config as YAML, as saved in every run directory; schema Config keeps a classifier's keys only."""
    keys = set((schema or type(config)).model_fields)
    return yaml.safe_dump(config.model_dump(mode="json", include=keys), sort_keys=False)
