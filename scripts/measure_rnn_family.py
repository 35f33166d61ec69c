"""Accuracy of the RNN family: every shipped config x 3 seeds, with and without pretrained vectors, plus the
embedding/cell grid tuned on validation and the IMDB gradients-through-time runs. Results: summary.json
(validation and test accuracy per run) and results.tar.gz (metrics.json, config.yaml, PNGs, logs) in $OUT.

    sentiment-rnn pretrain-embeddings                                   # vectors for seed 0
    sentiment-rnn pretrain-embeddings --set seed=1 --output vectors/movie-reviews-100d-seed1.txt
    sentiment-rnn pretrain-embeddings --set seed=2 --output vectors/movie-reviews-100d-seed2.txt
    OUT=/tmp/out python scripts/measure_rnn_family.py SECONDS [smoke]

Seed N also changes the train/validation/test carving, so seed N's pretrained runs use vectors trained
without seed N's held-out rows. Each job is exactly `sentiment-rnn train --config ... --set seed=N ...
--output /tmp/runs/NAME/sN`. 73 runs took 364 s on one H100 (8 + 5 parallel jobs); on CPU, hours.
SECONDS is a deadline: jobs not started by then are skipped. `smoke` shrinks every job to 300 rows, 1 epoch.
"""
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

START = time.time()
DEADLINE = START + float(sys.argv[1])
SMOKE = len(sys.argv) > 2 and sys.argv[2] == "smoke"
OUT = Path(os.environ.get("OUT", "/tmp/out"))
RUNS = Path("/tmp/runs")
PY = [sys.executable, "-m", "sentiment_rnn", "train"]
SEEDS = (0, 1, 2)
LOCK = threading.Lock()
results = []


def vec(seed):
    return "vectors/movie-reviews-100d.txt" if seed == 0 else f"vectors/movie-reviews-100d-seed{seed}.txt"


def job(name, config, seed, sets=(), pre=False):
    sets = [f"seed={seed}", *sets, "train.threads=2"]
    if pre and seed != 0 or pre == "force":
        sets.append(f"model.embedding.pretrained={vec(seed)}")
    if SMOKE:
        sets += ["data.limit=300", "train.epochs=1"]
    args = ["--config", f"configs/{config}.yaml"]
    for s in sets:
        args += ["--set", s]
    return {"name": name, "seed": seed, "args": args, "output": str(RUNS / name / f"s{seed}")}


def rt_jobs():
    jobs = []
    for c in ("default", "gru", "lstm", "bilstm", "tutorial", "cells"):
        jobs += [job(c, c, s) for s in SEEDS]
    for c in ("default", "gru", "lstm", "tutorial", "cells"):
        jobs += [job(f"{c}+pre", c, s, pre="force") for s in SEEDS]
    jobs += [job("bilstm-pretrained", "bilstm-pretrained", s, pre=True) for s in SEEDS]
    for cell in ("lstm", "gru"):
        for freeze in ("false", "true"):
            for drop in ("0.3", "0.5"):
                if (cell, freeze, drop) == ("lstm", "false", "0.3"):
                    continue  # that is bilstm-pretrained itself
                sets = [f"model.cell={cell}", f"model.embedding.freeze={freeze}", f"model.embedding_dropout={drop}"]
                jobs += [job(f"grid-bi{cell}-freeze{freeze}-drop{drop}", "bilstm-pretrained", s, sets, pre=True)
                         for s in SEEDS]
    return jobs


def imdb_jobs():
    bi = ["model.bidirectional=true", "model.hidden_size=128"]
    first = [job("imdb", "imdb", 0), job("imdb-pretrained", "imdb-pretrained", 0, pre=True),
             job("imdb-rnn-tanh", "imdb", 0, ["model.cell=rnn"]), job("imdb-lstm", "imdb", 0, ["model.cell=lstm"])]
    rest = []
    for s in (1, 2):
        rest += [job("imdb", "imdb", s), job("imdb-pretrained", "imdb-pretrained", s, pre=True)]
    for s in SEEDS:
        rest += [job("imdb-bigru128", "imdb", s, bi),
                 job("imdb-bigru128-pretrained", "imdb-pretrained", s, bi, pre=True)]
    return first + rest


def run(j):
    left = DEADLINE - time.time()
    if left < 20:
        status, seconds = "skipped", 0.0
    else:
        log = Path(j["output"] + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with log.open("w") as fh:
            try:
                rc = subprocess.run(PY + j["args"] + ["--output", j["output"]], stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=left).returncode
                status = "ok" if rc == 0 else f"rc={rc}"
            except subprocess.TimeoutExpired:
                status = "timeout"
        seconds = time.time() - t0
    rec = {**j, "status": status, "seconds": round(seconds, 1)}
    m = Path(j["output"]) / "metrics.json"
    if m.is_file():
        d = json.loads(m.read_text())
        rec.update(val=d["validation"]["accuracy"], test=d["test"]["accuracy"], best_epoch=d["best_epoch"],
                   epochs=len(d["history"]), tokens_per_s=round(d["tokens_per_s"]), device=d["device"])
    elif status.startswith("rc"):
        rec["log_tail"] = Path(j["output"] + ".log").read_text()[-1500:]
    with LOCK:
        results.append(rec)
        print(f"[{time.time() - START:5.0f}s] {j['name']} s{j['seed']}: {status} {rec.get('val', '')} "
              f"{rec.get('test', '')} ({rec['seconds']}s)", flush=True)
        (OUT / "summary.json").write_text(json.dumps(results, indent=1))


def pack():
    with tarfile.open(OUT / "results.tar.gz", "w:gz") as tar:
        for path in RUNS.rglob("*"):
            result_suffix = path.suffix in (".json", ".yaml", ".png", ".log")
            if path.is_file() and result_suffix and path.name not in ("split.json", "tokenizer.json"):
                tar.add(path, arcname=str(path.relative_to(RUNS)))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    smoke = [job("smoke-bilstm", "tiny", 0, ["model.cell=lstm", "model.bidirectional=true"]),
             job("smoke-cells", "tiny", 0, ["model.encoder=cells", "model.hidden_size=[8,6]", "model.cell=gru",
                                            "model.bidirectional=true"])]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, smoke))
    if any(r["status"] != "ok" for r in results):
        print("SMOKE FAILED", json.dumps(results, indent=1)[-3000:])
        return
    with ThreadPoolExecutor(5) as imdb, ThreadPoolExecutor(8) as rt:
        cap = int(os.environ.get("MAXJOBS", 1000))
        futures = [imdb.submit(run, j) for j in imdb_jobs()[:cap]] + [rt.submit(run, j) for j in rt_jobs()[:cap]]
        for f in futures:
            f.result()


try:
    main()
finally:
    pack()
    print(f"done in {time.time() - START:.0f}s; {sum(r['status'] == 'ok' for r in results)} ok of {len(results)}")
