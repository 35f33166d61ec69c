"""`sentiment-rnn serve`: a real server of the installed CLI on 127.0.0.1, good and bad requests, SIGTERM.

The same app in this process, where mutation testing sees it: tests/test_serve_app.py."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "sentiment-rnn")
START_TIMEOUT_S = 90


def start(model: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """The installed CLI serving `model` on 127.0.0.1, on a port the OS picks; returns (process, base URL)."""
    proc = subprocess.Popen([CLI, "serve", "--model", str(model), "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:  # bounded: readline returns '' once the process has exited
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            proc.banner = line  # the start-up line, naming what is served
            return proc, found.group(0)
        if not line:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.communicate(timeout=10)[1][-2000:]}")


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM, wait, and return the server's log; uvicorn re-raises the signal after a graceful shutdown."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]
    return err


@pytest.fixture(scope="module")
def server(tiny_export):
    proc, url = start(tiny_export, "--max-texts", "100", "--max-chars", "5000")
    yield url
    log = stop(proc)
    assert "Application shutdown complete" in log


def test_predict_returns_labels_and_probabilities_in_order(server):
    texts = ["a warm, witty and wonderful film", "a dull mess", "ok"]
    reply = httpx.post(f"{server}/predict", json={"texts": texts}, timeout=30)
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == 3
    for p in predictions:
        assert p["label"] in ("negative", "positive")
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert p["probability"] == max(p["probabilities"].values())
    alone = [httpx.post(f"{server}/predict", json={"texts": [t]}, timeout=30).json()["predictions"][0] for t in texts]
    assert alone == predictions  # batching with other texts changes nothing


def test_health_metadata_and_docs(server, tiny_run):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    meta = httpx.get(f"{server}/metadata").json()
    assert meta["labels"] == ["negative", "positive"] and meta["backend"] == "onnx"
    assert meta["source_run"] == str(tiny_run.resolve()) and meta["model"]["hidden_size"] == 16
    assert meta["limits"]["max_texts"] == 100
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "body is empty"),
    (b'{"texts": ["unclosed', 400, "not valid JSON"),
    (b'{"texts": ["caf\xe9 \xff\xfe"]}', 400, "not UTF-8 JSON"),
    (b'{"texts": "one string"}', 422, "texts"),
    (b'{"texts": [1, 2]}', 422, "texts[0]: Input should be a valid string"),
    (b'{"texts": []}', 422, "at least 1"),
    (b'{"text": ["typo"]}', 422, "texts"),
    (b'[1, 2]', 422, "body"),
    (b'{"texts": ["fine", "   "]}', 422, "texts[1] is empty"),
    (json.dumps({"texts": ["word"] * 10_000}).encode(), 413, "at most 100"),
    (json.dumps({"texts": ["a" * 1_000_000]}).encode(), 413, "the limit is 5,000"),
    (json.dumps({"texts": ["a" * (8 << 20)]}).encode(), 413, "the request body is over 8,388,608 bytes"),
])
def test_bad_requests_get_a_message_and_the_server_lives_on(server, body, status, words):
    reply = httpx.post(f"{server}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_concurrent_requests_each_get_their_own_answers(server):
    texts = [f"the {n}th film was {'great' if n % 2 else 'awful'}" for n in range(40)]
    expected = httpx.post(f"{server}/predict", json={"texts": texts}, timeout=30).json()["predictions"]

    def one(n: int) -> dict:
        return httpx.post(f"{server}/predict", json={"texts": [texts[n]]}, timeout=30).json()["predictions"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one, range(40))) == expected


def test_the_small_load_test_has_no_errors_and_flat_memory(tiny_export):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from loadtest import run_load
    finally:
        sys.path.pop(0)
    result = run_load(str(tiny_export), requests=120, concurrency=8, timeout_s=120, rounds=3)
    assert result["requests"] == 120 and result["errors"] == 0, result["first_errors"]
    assert result["p99_ms"] >= result["p50_ms"] > 0
    # The README measures about 8 MB over a first round of 2,000 requests, then 1 to 3 MB a round; this tiny
    # export grew about 1 MB over its first round and 0.1 MB a round after. Flat means the later rounds add ~nothing.
    first, *later = result["rss_after_each_round_mb"]
    assert first < result["rss_before_mb"] + 8, result
    assert later[-1] < first + 2, result
    assert result["server_exit_code"] in (0, -signal.SIGTERM)


def test_sigterm_finishes_the_request_in_flight(tiny_export):
    proc, url = start(tiny_export, "--max-wait-ms", "1500", "--max-batch", "1000")  # requests wait 1.5 s
    assert proc.banner.startswith(f"Serving {tiny_export} (onnx) on http://127.0.0.1:")  # the export, not its run
    replies: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: replies.append(
        httpx.post(f"{url}/predict", json={"texts": ["still answered"]}, timeout=30)))
    sender.start()
    time.sleep(0.5)  # the request is now waiting in the micro-batcher
    log = stop(proc)
    sender.join(timeout=30)
    assert replies and replies[0].status_code == 200, log[-2000:]
    assert replies[0].json()["predictions"][0]["label"] in ("negative", "positive")


def test_a_port_in_use_and_an_unfinished_run_are_one_line_errors(tiny_export, tiny_run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        done = subprocess.run([CLI, "serve", "--model", str(tiny_export), "--port", port],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    done = subprocess.run([CLI, "serve", "--model", str(unfinished)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "training did not finish" in done.stderr


def test_serving_a_run_directory_uses_torch(tiny_run):
    proc, url = start(tiny_run, "--max-wait-ms", "1")
    try:
        reply = httpx.post(f"{url}/predict", json={"texts": ["a fine film"]}, timeout=30)
        assert reply.status_code == 200 and httpx.get(f"{url}/metadata").json()["backend"] == "torch"
    finally:
        stop(proc)

