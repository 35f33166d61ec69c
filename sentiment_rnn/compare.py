"""compare-baseline: the tutorial's argument for RNNs, measured.

For each seed, the configured RNN and the per-word linear baseline (`model.kind: per_word_linear`) are
trained on the same split with the same tokenizer settings and the same embedding width, each into a
normal run directory. Both are then measured side by side: parameters (and how they grow with the
sentence length L), test accuracy and macro-F1, training speed, the context probe, and how much the
prediction moves when a sentence's words are shuffled. comparison.json and comparison.png are written
last, so their presence means the comparison finished.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from sentiment_rnn import data as data_lib
from sentiment_rnn import rundir
from sentiment_rnn.checkpoint import Reporter
from sentiment_rnn.config import Config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import build_model, count_parameters
from sentiment_rnn.predict import Predictor
from sentiment_rnn.probe import DEFAULT_PROBE, load_probe, score_predictor
from sentiment_rnn.stages import train  # a two-stage config trains both models in its two stages

LENGTHS = (16, 64, 256, 1024)  # sentence lengths L at which parameters are counted
RUN_PREFIX = {"rnn": "rnn", "per_word_linear": "baseline"}  # model kind -> run directory prefix
LABELS = {"rnn": "RNN", "per_word_linear": "per-word linear"}  # model kind -> display name (tables, figure)
POSITIVE_NAMES = ("positive", "pos")  # a label named so (any case) is the positive one
COMPARISON, FIGURE = "comparison.json", "comparison.png"
READINGS_FIGURE = "readings.png"  # both models' explain readings of the README pair, side by side

# (key, what the row shows, which way is better, how to print it)
ROWS = [
    ("params_total", "parameters, total", "lower", "count"),
    ("params_without_embedding", "parameters without embedding", "lower", "count"),
    *[(f"params_L{n}", f"params w/o embedding at L={n}", "lower", "count") for n in LENGTHS],
    ("test_accuracy", "test accuracy", "higher", "fraction"),
    ("test_macro_f1", "test macro-F1", "higher", "fraction"),
    ("train_seconds", "training wall time (s)", "lower", "seconds"),
    ("tokens_per_s", "training tokens/s", "higher", "rate"),
    ("probe_accuracy", "context probe accuracy", "higher", "fraction"),
    ("probe_flip_rate", "probe pairs flipped right", "higher", "fraction"),
    ("probe_mean_gap", "probe P(pos) gap, positive minus negative", "higher", "fraction"),
    ("word_order_sensitivity", "mean |ΔP(positive)|, words shuffled", None, "fraction"),
]
PROBE_KEYS = ("probe_accuracy", "probe_flip_rate", "probe_mean_gap")


def positive_label(labels: list[str], given: str | None = None) -> str | None:
    """The label whose probability the context probe reads: `given`, else the one label named 'positive' or
    'pos' (any case). None for data of more than two labels, where the two-class probe does not apply."""
    if len(labels) != 2:
        if given is not None:
            raise SentimentRNNError(f"--positive-label needs two-class data; this data has labels {labels}; "
                                    "drop --positive-label")
        return None
    if given is not None:
        if given not in labels:
            raise SentimentRNNError(f"--positive-label {given!r} is not one of the data's labels {labels}")
        return given
    named = [label for label in labels if label.lower() in POSITIVE_NAMES]
    if len(named) != 1:
        raise SentimentRNNError(f"cannot tell which of the labels {labels} is positive; "
                                f"pass --positive-label {labels[1]!r} (or {labels[0]!r})")
    return named[0]


def _check(config: Config, seeds: int) -> None:
    if seeds < 1:
        raise SentimentRNNError(f"--seeds must be at least 1, got {seeds}")
    if config.seed + seeds > 1 << 32:  # seeds seed, seed + 1, ...: numpy's seeds are 32-bit
        raise SentimentRNNError(f"seeds {config.seed} to {config.seed + seeds - 1} pass 2**32 - 1, the largest seed; "
                                "start lower with --set seed=N")
    if config.model.kind != "rnn":
        raise SentimentRNNError("compare-baseline needs an RNN config (model.kind: rnn); it trains the baseline itself")


def comparison_markers(config: Config) -> tuple[str, str]:
    """What a comparison folder holds, so --overwrite replaces only one: its json, or (stopped before writing
    it) its first run's config."""
    return COMPARISON, f"{RUN_PREFIX['rnn']}-seed{config.seed}/{rundir.CONFIG}"


def compare_baseline(config: Config, output_dir: Path, seeds: int = 1, probe_path: str | Path | None = None,
                     reporter: Reporter | None = None, overwrite: bool = False,
                     positive: str | None = None) -> dict:
    """Train both models for `seeds` seeds, measure them and write comparison.json + comparison.png.

    positive: the label the probe's 1 means (see positive_label); everything is checked before training.
    """
    _check(config, seeds)
    reporter = reporter or Reporter()
    output_dir = Path(output_dir)
    pairs = load_probe(probe_path)  # fail on a broken probe before minutes of training
    split_seed = config.data.carving_seed(config.seed)
    labels = data_lib.load_splits(config.data, split_seed).label_names
    positive = positive_label(labels, positive)
    notes = [] if positive else [f"the context probe needs two classes; this data has {len(labels)} "
                                 f"({', '.join(labels)}), so its rows are skipped"]
    replaced = rundir.prepare_output(output_dir, overwrite, comparison_markers(config), "comparison")
    rundir.settle_replaced(replaced, output_dir)  # a comparison is many runs: the old one goes now
    started = time.perf_counter()
    per_seed: dict[str, list[dict]] = {kind: [] for kind in RUN_PREFIX}
    for i in range(seeds):
        seed = config.seed + i
        runs = {}
        for kind, prefix in RUN_PREFIX.items():
            cfg = config.model_copy(deep=True)
            cfg.seed, cfg.name, cfg.model.kind = seed, f"{config.name}-{prefix}-seed{seed}", kind
            cfg.data.split_seed = split_seed  # every seed on the same rows: the spread is the models' own
            run = output_dir / f"{prefix}-seed{seed}"
            reporter.stage(f"Seed {seed} ({i + 1}/{seeds}): training {LABELS[kind]} -> {run}")
            runs[kind] = (run, train(cfg, run, reporter))
        scored = "the probe and shuffled test sentences" if positive else "shuffled test sentences (no probe)"
        reporter.stage(f"Seed {seed}: scoring {scored}")
        shuffled = _test_texts(runs["rnn"][0], seed)
        for kind, (run, metrics) in runs.items():
            per_seed[kind].append(measure_run(run, metrics, pairs if positive else None, shuffled, positive))
    rows = [row for row in ROWS if positive or row[0] not in PROBE_KEYS]
    result = summarize(per_seed, [config.seed + i for i in range(seeds)], rows)
    result.update(config=config.name, split_seed=split_seed, output=str(output_dir),
                  probe=str(probe_path or DEFAULT_PROBE), probe_pairs=len(pairs), positive_label=positive,
                  notes=notes, model_labels=LABELS,
                  lengths=list(LENGTHS), seconds=time.perf_counter() - started, figure=str(output_dir / FIGURE),
                  runs={kind: [str(output_dir / f"{prefix}-seed{config.seed + i}") for i in range(seeds)]
                        for kind, prefix in RUN_PREFIX.items()})
    first_seed = {kind: output_dir / f"{prefix}-seed{config.seed}" for kind, prefix in RUN_PREFIX.items()}
    result.update(readings=read_pair(first_seed, output_dir / READINGS_FIGURE),
                  readings_figure=str(output_dir / READINGS_FIGURE))
    from sentiment_rnn.plots import plot_comparison

    plot_comparison(result, output_dir / FIGURE)
    rundir.write_json(output_dir / COMPARISON, result)
    return result


def read_pair(runs: dict[str, Path], figure: Path) -> dict:
    """explain's readings of the README pair by each model kind's run, and their figure (a row per model)."""
    from sentiment_rnn.explain import README_PAIR, Explainer
    from sentiment_rnn.plots import plot_explanations

    readings = {kind: [Explainer.from_dir(run).explain(text) for text in README_PAIR] for kind, run in runs.items()}
    plot_explanations(list(readings.values()), figure, [LABELS[kind] for kind in readings])
    return {"texts": list(README_PAIR), "runs": {kind: str(run) for kind, run in runs.items()}, **readings}


def parameters_by_length(run: rundir.LoadedRun, lengths=LENGTHS) -> dict[int, dict]:
    """Parameter counts of the run's model rebuilt at each sentence length L (same vocabulary, classes)."""
    vocab, classes = int(run.meta["vocab_size"]), len(run.meta["label_names"])
    return {n: count_parameters(build_model(run.config.model, vocab, classes, n)) for n in lengths}


def shuffle_words(texts: list[str], tokenizer, max_length: int, seed: int) -> list[str]:
    """Each text's first max_length tokens in a seeded random order, joined by spaces.

    Shuffling the tokens' original substrings (not words split on spaces) keeps exactly the tokens the
    model reads, truncation included, so only their order changes.
    """
    rng = random.Random(seed)
    shuffled = []
    for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True):
        words = [text[a:b] for a, b in enc.offsets[:max_length]]
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    return shuffled


def _test_texts(run: Path, seed: int) -> tuple[list[str], list[str]]:
    """The run's own test sentences, and the same sentences with their words shuffled."""
    loaded = rundir.load_run(run)
    record = rundir.read_json(run / rundir.SPLIT)
    ds, _ = data_lib.recorded_split(loaded.config.data, record, "test", list(loaded.meta["label_names"]))
    texts = list(ds["text"])
    return texts, shuffle_words(texts, loaded.tokenizer, int(loaded.meta["max_length"]), seed)


def measure_run(run: Path, metrics: dict, pairs, shuffled: tuple[list[str], list[str]],
                positive: str | None = None) -> dict:
    """One trained run's figures, flat: every value is a number that can be averaged over seeds.
    pairs None (data of more than two labels): no probe figures."""
    predictor = Predictor.from_dir(run)
    original, reordered = shuffled
    # Half the L1 distance between the class distributions: |ΔP(positive)| for two classes, and defined for more.
    difference = predictor.probabilities(original) - predictor.probabilities(reordered)  # [N, C]
    order_change = 0.5 * difference.abs().sum(-1).mean().item()
    by_length = parameters_by_length(predictor.run)
    figures = {
        "params_total": metrics["parameters"]["total"],
        "params_without_embedding": metrics["parameters"]["without_embedding"],
        **{f"params_L{n}": counts["without_embedding"] for n, counts in by_length.items()},
        **{f"params_total_L{n}": counts["total"] for n, counts in by_length.items()},
        "test_accuracy": metrics["test"]["accuracy"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "train_seconds": metrics["train_seconds"],
        "tokens_per_s": metrics["tokens_per_s"],
        "best_epoch": metrics["best_epoch"],
        "word_order_sensitivity": order_change,
    }
    if pairs is not None:
        probe = score_predictor(pairs, predictor, positive)
        figures.update(probe_accuracy=probe["accuracy"], probe_flip_rate=probe["flip_rate"],
                       probe_mean_gap=probe["mean_gap"])
    return figures


def summarize(per_seed: dict[str, list[dict]], seeds: list[int], rows: list[tuple] = ROWS) -> dict:
    """Mean and standard deviation (over seeds; None for one seed) of every figure, and the verdict rows."""
    models = {}
    for kind, records in per_seed.items():
        keys = records[0].keys()
        models[kind] = {
            "per_seed": records,
            "mean": {k: statistics.fmean(r[k] for r in records) for k in keys},
            "std": {k: statistics.stdev(r[k] for r in records) if len(records) > 1 else None for k in keys},
        }
    verdicts = [verdict(key, label, better, fmt, models) for key, label, better, fmt in rows]
    return {"seeds": seeds, "models": models, "rows": verdicts}


def _amount(diff: float, a: float, b: float, fmt: str, digits: int = 1) -> str:
    """How much two figures differ: points for fractions, a ratio (or a percentage, when close) otherwise."""
    if fmt == "fraction":
        return f"{abs(diff) * 100:.{digits}f} pts"
    low, high = sorted((abs(a), abs(b)))
    if low == 0:
        return "∞x"
    return f"{high / low:.1f}x" if high / low >= 1.1 else f"{(high / low - 1) * 100:.1f}%"


def _spread(value: float, fmt: str, digits: int = 1) -> str:
    if fmt == "fraction":
        return f"±{value * 100:.{digits}f} pts"
    return f"±{value:,.0f}" if fmt in ("count", "rate") else f"±{value:.2f}"


def verdict(key: str, label: str, better: str | None, fmt: str, models: dict) -> dict:
    """Which model leads a row and by how much; it wins only if the margin exceeds both error bars."""
    a, b = models["rnn"]["mean"][key], models["per_word_linear"]["mean"][key]
    sa, sb = models["rnn"]["std"][key], models["per_word_linear"]["std"][key]
    diff = a - b
    spread = None if sa is None else sa + sb  # mean ± std intervals touch when |diff| equals this
    beyond = None if spread is None else abs(diff) > spread
    leader = "rnn" if diff > 0 else "per_word_linear"
    if better == "lower":
        leader = "per_word_linear" if diff > 0 else "rnn"
    # a margin and a spread that round alike get a digit more, so "beyond" never reads as equal figures
    digits = 2 if spread is not None and f"{abs(diff) * 100:.1f}" == f"{spread * 100:.1f}" else 1
    amount = _amount(diff, a, b, fmt, digits)
    if diff == 0:
        winner, text = "tie", "equal"
    elif better is None:
        winner, text = None, f"{LABELS[leader]} higher by {amount}"
    else:
        winner = leader
        verb = "wins" if beyond else "ahead"
        text = f"{LABELS[leader]} {verb}: {better} by {amount}"
    if diff != 0:
        if spread is None:
            text += " (1 seed: spread not measured)"
        elif beyond:
            text += f", beyond the seeds' spread ({_spread(spread, fmt, digits)})"
        else:
            text += f", within the seeds' spread ({_spread(spread, fmt, digits)}): no clear winner"
    return {"key": key, "label": label, "better": better, "format": fmt, "rnn": {"mean": a, "std": sa},
            "per_word_linear": {"mean": b, "std": sb}, "difference": diff, "spread": spread,
            "beyond_spread": beyond, "winner": winner, "verdict": text}
