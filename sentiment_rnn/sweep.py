"""sweep: every combination of a small grid of settings, trained over several seeds, reported as mean ± std.

Each (setting, seed) is a normal run directory, OUTPUT/<setting>/seed-<N>/, trained by train.train with
the config that `train --config X --set KEY=VALUE ... --set seed=N` would build, so predict, evaluate,
explain and export work on any of them. Rerunning a sweep keeps every finished run (metrics.json present),
resumes an unfinished one from its checkpoint and trains the rest. Two-stage runs share OUTPUT/stage-one/:
a seed's first stage is trained once for every setting that leaves it unchanged. summary.json and sweep.png are written
last. The best setting is the one with the highest mean validation accuracy: the test split only reports.
"""

from __future__ import annotations

import itertools
import multiprocessing
import re
import statistics
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from sentiment_rnn import rundir, runtime
from sentiment_rnn.checkpoint import Reporter
from sentiment_rnn.config import Config, load_config, parse_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted
from sentiment_rnn.stages import first_stage_of, requested_config, train  # two-stage configs train both

SUMMARY, FIGURE, FIRST_STAGES = "summary.json", "sweep.png", "stage-one"
STD = "sample standard deviation (n - 1 in the denominator) over seeds; null for one seed"
# (key in summary.json, column label); probe_pairs_right only when the data has a positive label,
# left_out_accuracy only when every run was carved by sentence (evaluate --split left-out)
FIGURES = [("val_accuracy", "validation accuracy"), ("left_out_accuracy", "left-out phrases accuracy"),
           ("test_accuracy", "test accuracy"),
           ("test_macro_f1", "test macro-F1"), ("probe_pairs_right", "probe pairs right"),
           ("train_seconds", "training seconds")]
RUNTIME_KEYS = ("threads",)  # train.* keys that change speed, not results: --jobs may set them differently
_OPEN, _CLOSE = "[{(", "]})"


class SweepInterrupted(TrainingInterrupted):
    """Ctrl-C stopped a sweep after the running training wrote its checkpoint; the CLI exits 130."""

    def __init__(self, output: Path):
        self.run, self.resume_command = output, f"the same sentiment-rnn sweep command (--output {output})"
        SentimentRNNError.__init__(self, "sweep stopped; finished runs are kept and each interrupted run has "
                                         f"its checkpoint. Continue with {self.resume_command}")


@dataclass
class Job:
    setting: str  # the setting's name: its grid values, e.g. "model.cell=gru"
    seed: int
    run: Path
    config: Config


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct integers that numpy takes as seeds (32-bit)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise SentimentRNNError(f"--seeds '{text}' is not a comma-separated list of integers; "
                                "write e.g. --seeds 0,1,2") from None
    if any(not 0 <= s < 1 << 32 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SentimentRNNError(f"--seeds '{text}' must be distinct integers from 0 to 2**32 - 1, e.g. --seeds 0,1,2")
    return seeds


def split_values(item: str) -> tuple[str, list[str]]:
    """'KEY=V1,V2' -> (KEY, [V1, V2]). Commas inside brackets, braces, parentheses or quotes do not separate
    values, so 'model.hidden_size=[20,15],[32]' gives [20,15] and [32]; each value is read as
    `train --set KEY=VALUE` reads it."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SentimentRNNError(f"--set '{item}' is not KEY=V1,V2,...; write e.g. --set model.cell=gru,lstm")
    values, current, depth, quote = [], "", 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN or char in _CLOSE:
            depth += 1 if char in _OPEN else -1
        elif char == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += char
    if depth != 0 or quote:
        raise SentimentRNNError(f"--set '{item}' has an unclosed bracket or quote; close it, e.g. "
                                "--set model.hidden_size=[20,15],[32]")
    values.append(current)
    if any(not v.strip() for v in values) and len(values) > 1:
        raise SentimentRNNError(f"--set '{item}' has an empty value between commas; drop the extra comma")
    return key.strip(), [v.strip() for v in values]


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """--set items -> {key: values}, in the order given; seeds come from --seeds, not from seed=."""
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, values = split_values(item)
        if key == "seed":
            raise SentimentRNNError("--set seed=... is what --seeds does; write e.g. --seeds 0,1,2")
        if key in grid:
            raise SentimentRNNError(f"--set gives {key} twice; list all its values once: --set {key}=V1,V2")
        if len(set(values)) != len(values):
            raise SentimentRNNError(f"--set '{item}' repeats a value; list each value once")
        grid[key] = values
    return grid


def settings(grid: dict[str, list[str]], base_name: str) -> list[tuple[str, list[str]]]:
    """Every combination as (name, overrides). The name lists the keys that vary; with none, the config's."""
    varying = [k for k, v in grid.items() if len(v) > 1]
    combos = []
    for values in itertools.product(*grid.values()):
        chosen = dict(zip(grid, values, strict=True))
        name = ",".join(f"{k}={chosen[k]}" for k in varying) or base_name
        combos.append((name, [f"{k}={v}" for k, v in chosen.items()]))
    return combos


def folder_name(setting: str) -> str:
    """A setting's name as a folder name: characters other than letters, digits and . , = + - become _."""
    return re.sub(r"[^A-Za-z0-9.,=+-]", "_", setting)


def plan(config: str | Path, items: list[str] | None, seeds: list[int], output: Path | None) -> tuple[Path, list[Job]]:
    """The sweep folder and every job, seed by seed (a stopped sweep has every setting's first seeds);
    each job's config is built and validated here, so a bad value fails before anything is trained."""
    grid = parse_grid(items)
    base = load_config(config, [f"{k}={v[0]}" for k, v in grid.items()], Config)
    output = Path(output) if output is not None else rundir.DEFAULT_ROOT / f"sweep-{base.name}"
    combos = settings(grid, base.name)
    folders = [folder_name(name) for name, _ in combos]
    if len(set(folders)) != len(folders):
        raise SentimentRNNError("two settings give the same folder name once characters other than letters, "
                                "digits and . , = + - are replaced; write the values alike, e.g. both as [20,15]")
    jobs = [Job(name, seed, output / folder / f"seed-{seed}", load_config(config, [*overrides, f"seed={seed}"], Config))
            for seed in seeds for (name, overrides), folder in zip(combos, folders, strict=True)]
    check_output(output)
    return output, jobs


def check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise SentimentRNNError(f"'{output}' is a file, not a folder; choose another --output")
    if (output / rundir.CONFIG).is_file():
        raise SentimentRNNError(f"'{output}' is a run directory, not a sweep folder; choose another --output")


def _comparable(config: Config) -> dict:
    dump = config.model_dump(mode="json")
    for key in RUNTIME_KEYS:
        dump["train"].pop(key)
    return dump


def state(job: Job) -> str:
    """'done' (kept), 'resume' (an unfinished run with a checkpoint) or 'new' (trained from the start); a run
    directory trained with another config is refused, never overwritten."""
    if not job.run.is_dir():
        return "new"
    done, unfinished = rundir.is_complete(job.run), (job.run / rundir.CHECKPOINT).is_file()
    if not (done or unfinished):
        return "new"  # killed before its first checkpoint: nothing in it to keep
    if _comparable(requested_config(job.run)) != _comparable(job.config):
        raise SentimentRNNError(f"'{job.run}' was trained with another config than this sweep's {job.setting}, "
                                f"seed {job.seed}; choose another --output, or delete '{job.run}' to retrain it")
    return "done" if done else "resume"


def run_sweep(config: str | Path, items: list[str] | None, seeds: str, output: Path | None = None, jobs: int = 1,
              report_to: str | None = None, reporter: Reporter | None = None, probe_path: Path | None = None) -> dict:
    """Train what is missing, then summarize every run of the sweep; returns summary.json's content."""
    from sentiment_rnn import tracking
    from sentiment_rnn.probe import load_probe

    reporter = reporter or Reporter()
    if jobs < 1:
        raise SentimentRNNError(f"--jobs must be at least 1, got {jobs}")
    tracking.check(report_to)
    pairs = load_probe(probe_path)  # a broken probe fails before any training
    output, planned = plan(config, items, parse_seeds(seeds), output)
    states = {job.run: state(job) for job in planned}
    for job in planned:
        if states[job.run] == "done":
            reporter.stage(f"Kept finished run {job.run} (metrics.json present)")
    output.mkdir(parents=True, exist_ok=True)
    (output / SUMMARY).unlink(missing_ok=True)  # an earlier sweep's summary would not describe this one
    _train_missing([job for job in planned if states[job.run] != "done"], states, jobs, report_to, reporter, output)
    summary = summarize(planned, pairs, output, probe_path)
    summary.update(config=str(config), grid=parse_grid(items), trained=sum(s == "new" for s in states.values()),
                   resumed=sum(s == "resume" for s in states.values()),
                   kept=sum(s == "done" for s in states.values()), jobs=jobs, report_to=report_to)
    from sentiment_rnn.plots import plot_sweep

    summary["figure_panels"] = plot_sweep(summary, output / FIGURE)  # sweep.png's panels, left to right
    rundir.write_json(output / SUMMARY, summary)
    return summary


def _train_missing(todo: list[Job], states: dict, jobs: int, report_to: str | None, reporter: Reporter,
                   output: Path) -> None:
    """Train (or resume) the jobs, here one after the other or in `jobs` processes; Ctrl-C stops them at a
    checkpoint and raises SweepInterrupted. Two-stage runs keep their first stages in OUTPUT/stage-one/, so
    settings that differ only in the second stage train each seed's first stage once."""
    first_stages = output / FIRST_STAGES
    try:
        if jobs == 1 or len(todo) <= 1:
            for i, job in enumerate(todo, 1):
                _announce(reporter, job, states[job.run], i, len(todo))
                train(job.config, job.run, reporter, overwrite=job.run.exists() and states[job.run] == "new",
                      resume=states[job.run] == "resume", report_to=report_to, first_stages=first_stages)
        else:
            _train_parallel(todo, states, jobs, report_to, reporter, first_stages)
    except (TrainingInterrupted, KeyboardInterrupt):  # under --jobs the processes got the Ctrl-C too
        raise SweepInterrupted(output) from None


def _announce(reporter: Reporter, job: Job, how: str, i: int, total: int) -> None:
    verb = "Resuming unfinished run" if how == "resume" else "Training"
    reporter.stage(f"[{i}/{total}] {verb} {job.setting}, seed {job.seed} -> {job.run}")


def thread_share(jobs: int) -> int:
    """Torch threads for each of `jobs` runs at a time: the usable cores split evenly."""
    return max(1, runtime.usable_cores() // jobs)


def next_startable(pending: list[Job], first_stage: dict, building: set) -> Job | None:
    """The first pending job that does not need a first stage another process is training now (it waits,
    then reuses that stage instead of training the same one beside it)."""
    for job in pending:
        if first_stage[job.run] is None or first_stage[job.run] not in building:
            return job
    return None


def _train_parallel(todo: list[Job], states: dict, jobs: int, report_to: str | None, reporter: Reporter,
                    first_stages: Path) -> None:
    """`jobs` runs at a time, each in its own process (spawned: a fresh torch) with its share of the cores
    unless train.threads is set; the processes report nothing, this one a line per run started and ended."""
    share, context = thread_share(jobs), multiprocessing.get_context("spawn")
    first_stage = {job.run: first_stage_of(job.config, job.run, first_stages) for job in todo}
    pending, running, building, started = list(todo), {}, set(), 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        try:
            while pending or running:
                while len(running) < jobs and (job := next_startable(pending, first_stage, building)):
                    pending.remove(job)
                    if first_stage[job.run] is not None and not rundir.is_complete(first_stage[job.run]):
                        building.add(first_stage[job.run])
                    config = job.config.model_copy(deep=True)
                    config.train.threads = config.train.threads or share
                    started += 1
                    _announce(reporter, job, states[job.run], started, len(todo))
                    running[pool.submit(_train_job, config.model_dump(mode="json"), str(job.run), states[job.run],
                                        report_to, str(first_stages))] = job
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    future.result()  # the process's error, raised here
                    building.discard(first_stage[job.run])
                    reporter.stage(f"Finished {job.setting}, seed {job.seed} -> {job.run}")
        except BaseException:
            for future in running:
                future.cancel()  # running ones stop at Ctrl-C with a checkpoint
            raise


def _train_job(config: dict, run: str, how: str, report_to: str | None, first_stages: str) -> None:
    """One run in a worker process. An interruption comes back as a plain SentimentRNNError, which crosses
    the process boundary (TrainingInterrupted's constructor does not)."""
    try:
        train(parse_config(config), Path(run), overwrite=Path(run).exists() and how == "new", resume=how == "resume",
              report_to=report_to, first_stages=Path(first_stages))
    except TrainingInterrupted as exc:
        raise SentimentRNNError(str(exc)) from None


def run_figures(job: Job, pairs, positive: str | None) -> dict:
    """One finished run's figures, from its own metrics.json (and the probe, scored with the run's model)."""
    metrics = rundir.read_json(job.run / rundir.METRICS)
    figures = {"seed": job.seed, "run": str(job.run), "best_epoch": metrics["best_epoch"],
               "val_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
               "test_macro_f1": metrics["test"]["macro_f1"], "train_seconds": metrics["train_seconds"]}
    if "carved_by_sentence" in rundir.read_json(job.run / rundir.SPLIT):
        from sentiment_rnn.evaluate import LEFT_OUT, evaluate_run

        figures["left_out_accuracy"] = evaluate_run(job.run, split=LEFT_OUT)["accuracy"]  # rows that chose nothing
    if positive is not None:
        from sentiment_rnn.predict import Predictor
        from sentiment_rnn.probe import score_predictor

        probe = score_predictor(pairs, Predictor.from_dir(job.run), positive)
        figures["probe_pairs_right"] = probe["flip_rate"]  # both sentences of a pair classified right
        figures["probe_categories"] = {name: c["flip_rate"] for name, c in probe["categories"].items()}
        figures["readme_pair_right"] = probe["readme_pair_right"]
    return figures


def probe_by_category(runs: list[dict], pairs) -> dict:
    """Per '# category' of the probe: its pairs, and the mean and sample std over the runs of the share right."""
    sizes: dict[str, int] = {}
    for pair in pairs:
        sizes[pair.category] = sizes.get(pair.category, 0) + 1
    by_category = {}
    for name, size in sizes.items():
        rates = [run["probe_categories"][name] for run in runs]
        by_category[name] = {"pairs": size, "mean": statistics.fmean(rates),
                             "std": statistics.stdev(rates) if len(rates) > 1 else None}
    return by_category


def _positive(run: Path) -> str | None:
    """The label the probe's 1 means (compare-baseline's rule), or None when the data has no such label."""
    from sentiment_rnn.compare import positive_label

    try:
        return positive_label(list(rundir.read_json(run / rundir.META)["label_names"]))
    except SentimentRNNError:
        return None


def summarize(planned: list[Job], pairs, output: Path, probe_path: Path | None = None) -> dict:
    """Per setting: each run's figures, their mean and sample std, the probe per category and how many seeds
    read the README pair right (when the data has a positive label); the best setting on validation."""
    from sentiment_rnn.probe import DEFAULT_PROBE, README_PAIR

    positive = _positive(planned[0].run)
    by_setting: dict[str, list[dict]] = {}
    for job in planned:
        by_setting.setdefault(job.setting, []).append(run_figures(job, pairs, positive))
    every_run = [run for runs in by_setting.values() for run in runs]
    keys = [key for key, _ in FIGURES if all(key in run for run in every_run)]
    rows = []
    for name, runs in by_setting.items():
        rows.append({"setting": name, "runs": runs,
                     "mean": {k: statistics.fmean(r[k] for r in runs) for k in keys},
                     "std": {k: statistics.stdev(r[k] for r in runs) if len(runs) > 1 else None for k in keys}})
        if positive is not None:
            rows[-1].update(probe_categories=probe_by_category(runs, pairs),
                            readme_pair_right=sum(r["readme_pair_right"] for r in runs))  # seeds, of len(runs)
    best = max(rows, key=lambda row: row["mean"]["val_accuracy"])  # ties: the first listed
    notes = [] if positive else ["the context probe needs a label named positive or pos among two; its column "
                                 "is left out"]
    return {"output": str(output), "seeds": list(dict.fromkeys(job.seed for job in planned)),
            "figures": {k: label for k, label in FIGURES if k in keys}, "std": STD, "settings": rows,
            "best": {"setting": best["setting"], "chosen_on": "mean validation accuracy",
                     "mean": best["mean"], "std": best["std"]},
            "positive_label": positive, "probe": str(probe_path or DEFAULT_PROBE), "probe_pairs": len(pairs),
            "readme_pair": [README_PAIR.first_text, README_PAIR.second_text] if positive else None,
            "notes": notes, "figure": str(output / FIGURE)}
