"""The serve app in this process (httpx's ASGI transport, the real FastAPI app and micro-batcher, no socket).

tests/test_serve.py runs the installed CLI as a server; this file checks the same app where mutation testing
(scripts/mutate.py serve) can see it, on an untrained run that takes a blink to write.
"""

import asyncio
import json
import os
import socket

import httpx
import pytest
import torch

from sentiment_rnn import rundir
from sentiment_rnn.config import Config, dump_config, load_config
from sentiment_rnn.errors import SentimentRNNError
from sentiment_rnn.models import build_model
from sentiment_rnn.predict import Predictor
from sentiment_rnn.serve import Limits, bind, create_app, load_predictor
from sentiment_rnn.tokenizer import train_tokenizer

from conftest import TINY

WORDS = "a warm witty and wonderful film ; a dull mess , far too long and ok".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A complete run directory of configs/tiny.yaml's model, untrained: serving needs real weights, not good ones."""
    torch.manual_seed(0)
    config = load_config(TINY)
    tokenizer = train_tokenizer(iter([WORDS]), config.tokenizer)
    model = build_model(config.model, tokenizer.get_vocab_size(), 2, config.data.max_length)
    out = tmp_path_factory.mktemp("serve") / "run"
    out.mkdir()
    tokenizer.save(str(out / rundir.TOKENIZER))
    rundir.atomic_write(out / rundir.CONFIG, dump_config(config, Config))
    meta = {"label_names": ["negative", "positive"], "vocab_size": tokenizer.get_vocab_size(),
            "max_length": config.data.max_length}
    rundir.save_run(out, model, meta, {})
    return out


def serve_in_process(predictor, limits: Limits, send, metadata: dict | None = None):
    """Await send(client) against the app in this process, its lifespan (the micro-batcher) included."""
    app = create_app(predictor, metadata or {"backend": "torch"}, limits)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                return await send(client)

    return asyncio.run(asyncio.wait_for(go(), timeout=20))  # a hang, the shutdown's included, fails the test


def answers(predictor, texts: list[str]) -> list[dict]:
    """What /predict should say for texts: the predictor's own records, without the echoed text."""
    return [{k: r[k] for k in ("label", "probability", "probabilities")} for r in predictor.predict(texts)]


def test_concurrent_requests_reach_the_model_together_in_micro_batches(run):
    predictor = Predictor.from_dir(run)
    calls, predict = [], predictor.predict
    predictor.predict = lambda texts: calls.append(len(texts)) or predict(texts)  # the real model, counted
    texts = [f"the {n}th film was {'great' if n % 2 else 'awful'}" for n in range(8)]

    async def send(client):
        replies = await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in texts))
        return [reply.json()["predictions"][0] for reply in replies]

    got = serve_in_process(predictor, Limits(max_batch=4, max_wait_ms=2000), send)
    assert calls == [4, 4]  # eight requests, two model calls: each batch closed on reaching --max-batch
    assert got == answers(predictor, texts)


def test_requests_of_several_texts_share_a_batch_and_each_gets_its_own_slice_in_order(run):
    predictor = Predictor.from_dir(run)
    calls, predict = [], predictor.predict
    predictor.predict = lambda texts: calls.append(list(texts)) or predict(texts)
    requests = [WORDS[:3], WORDS[3:4], WORDS[4:9]]  # 3 + 1 + 5 texts

    async def send(client):
        replies = await asyncio.gather(*(client.post("/predict", json={"texts": t}) for t in requests))
        return [reply.json()["predictions"] for reply in replies]

    got = serve_in_process(predictor, Limits(max_batch=9, max_wait_ms=2000), send)
    assert calls == [[t for texts in requests for t in texts]]  # one model call, texts in arrival order
    assert got == [answers(predictor, texts) for texts in requests]


def test_a_lone_request_is_answered_once_max_wait_passes_without_filling_the_batch(run):
    predictor = Predictor.from_dir(run)

    async def send(client):
        loop = asyncio.get_running_loop()
        start = loop.time()
        reply = await client.post("/predict", json={"texts": ["a fine film"]})
        return reply, loop.time() - start

    reply, seconds = serve_in_process(predictor, Limits(max_batch=1000, max_wait_ms=300), send)
    assert reply.status_code == 200 and reply.json()["predictions"] == answers(predictor, ["a fine film"])
    assert seconds >= 0.3  # the batch stayed open for others until max_wait_ms


def test_shutdown_answers_a_request_still_waiting_in_the_batcher(run):
    """uvicorn runs the lifespan's exit after SIGTERM: the queued request must still get its answer."""
    predictor = Predictor.from_dir(run)
    app = create_app(predictor, {}, Limits(max_batch=1000, max_wait_ms=5000))

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://serve")
            pending = asyncio.ensure_future(client.post("/predict", json={"texts": ["still answered"]}))
            await asyncio.sleep(0.2)  # the request now waits in the micro-batcher, whose batch is open for 5 s
        return await asyncio.wait_for(pending, timeout=2)  # answered by the drain, well before the 5 s

    reply = asyncio.run(asyncio.wait_for(go(), timeout=4))
    assert reply.status_code == 200 and reply.json()["predictions"] == answers(predictor, ["still answered"])


def test_a_model_failure_fails_its_requests_and_the_server_answers_the_next(run):
    predictor = Predictor.from_dir(run)
    model, head = predictor.run.model, predictor.run.model.head

    async def send(client):
        model.head = torch.nn.Linear(3, 2)  # a real error in the forward pass: the head reads the wrong width
        failed = await client.post("/predict", json={"texts": ["a fine film"]})
        model.head = head
        return failed, await client.post("/predict", json={"texts": ["a fine film"]}), await client.get("/health")

    failed, after, health = serve_in_process(predictor, Limits(), send)
    assert failed.status_code == 500
    assert after.status_code == 200 and after.json()["predictions"] == answers(predictor, ["a fine film"])
    assert health.json() == {"status": "ok"}


LIMITS = Limits(max_texts=3, max_chars=10, max_body_bytes=100)


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "the request body is empty; send {\"texts\": [\"...\"]}"),
    (b'{"texts": ["unclosed', 400, "the request body is not valid JSON; send {\"texts\": [\"...\"]}"),
    (b'{"texts": ["caf\xe9 \xff\xfe"]}', 400, "the request body is not UTF-8 JSON; send {\"texts\": [\"...\"]}"),
    (b'{"texts": "one string"}', 422, "texts: Input should be a valid list; send {\"texts\": [\"...\"]} with"),
    (b'{"texts": [1, 2]}', 422, "texts[0]: Input should be a valid string; send"),
    (b'{"texts": []}', 422, "texts: List should have at least 1 item"),
    (b'{"text": ["typo"]}', 422, "texts: Field required"),
    (b'[1, 2]', 422, "body: Input should be a valid dictionary"),
    (b'{"texts": ["fine", "   "]}', 422, "texts[1] is empty; every text needs at least one word"),
    (b'{"texts": ["a", "b", "c", "d"]}', 413, "4 texts in one request; send at most 3 per request"),
    (b'{"texts": ["fine", "a very long text"]}', 413, "texts[1] has 16 characters; the limit is 10"),
    (json.dumps({"texts": ["word"] * 30}).encode(), 413, "the request body is over 100 bytes; send fewer"),
])
def test_bad_requests_get_a_status_and_a_message_and_the_server_lives_on(run, body, status, words):
    predictor = Predictor.from_dir(run)

    async def send(client):
        reply = await client.post("/predict", content=body, headers={"content-type": "application/json"})
        return reply, await client.post("/predict", json={"texts": ["fine"]})

    reply, after = serve_in_process(predictor, LIMITS, send)
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"].startswith(words), reply.json()
    assert after.status_code == 200 and after.json()["predictions"] == answers(predictor, ["fine"])


@pytest.mark.parametrize("headers, status, words", [
    ({"content-type": "application/x-www-form-urlencoded"}, 415, "the body was sent as application/x-www-form-url"),
    ({"content-type": "text/plain; charset=utf-8"}, 415, "the body was sent as text/plain; send it as JSON with"),
    ({}, 415, "the body was sent without a content-type; send it as JSON with the header 'content-type: appl"),
    ({"content-type": "application/json"}, 411,  # a streamed body: httpx sends it chunked, without a length
     "send the request body with a Content-Length header, not chunked (at most 100 bytes)"),
])
def test_a_body_sent_as_a_form_or_chunked_is_refused_with_the_header_to_send(run, headers, status, words):
    predictor = Predictor.from_dir(run)

    async def chunks():
        yield b'{"texts": ["fine"]}'
        yield b" " * 1000  # over the limit, which no Content-Length announced

    async def send(client):
        body = chunks() if status == 411 else b'{"texts": ["fine"]}'
        reply = await client.post("/predict", content=body, headers=headers)
        return reply, await client.post("/predict", json={"texts": ["fine"]})

    reply, after = serve_in_process(predictor, LIMITS, send)
    assert reply.status_code == status and reply.json()["detail"].startswith(words), reply.text
    assert after.status_code == 200 and after.json()["predictions"] == answers(predictor, ["fine"])


def test_requests_exactly_at_each_limit_are_answered(run):
    predictor = Predictor.from_dir(run)
    at_limits = {"texts": ["a" * 10, "b", "c"]}  # 3 texts, one of 10 characters
    body = json.dumps(at_limits).encode()
    limits = Limits(max_texts=3, max_chars=10, max_body_bytes=len(body))

    async def send(client):
        return await client.post("/predict", content=body, headers={"content-type": "application/json"})

    reply = serve_in_process(predictor, limits, send)
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == answers(predictor, at_limits["texts"])


def test_health_metadata_and_docs(run):
    predictor, metadata = load_predictor(run)

    async def send(client):
        return [await client.get(path) for path in ("/health", "/metadata", "/openapi.json", "/docs")]

    health, meta, openapi, docs = serve_in_process(predictor, LIMITS, send, metadata)
    assert health.json() == {"status": "ok"}
    assert meta.json() == {"backend": "torch", "labels": ["negative", "positive"], "source_run": str(run),
                           "model": load_config(TINY).model.model_dump(mode="json"),
                           "versions": rundir.read_json(run / rundir.META)["versions"],
                           "limits": {"max_texts": 3, "max_chars": 10, "max_body_bytes": 100, "max_batch": 64,
                                      "max_wait_ms": 5.0}}
    assert "/predict" in openapi.json()["paths"] and docs.status_code == 200
    info = openapi.json()["info"]  # the title and summary /docs shows
    assert (info["title"], info["summary"]) == ("sentiment-rnn", "Sentiment labels and probabilities from a trained "
                                                                 "RNN classifier.")


def test_the_server_loads_its_model_with_server_threads(run, tiny_export, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))  # predict would take 4, serve 2
    before = torch.get_num_threads()
    try:
        load_predictor(run)
        assert torch.get_num_threads() == 2
        exported, _ = load_predictor(tiny_export)
        assert exported.session.get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(before)


def test_bind_listens_on_a_free_port_and_a_taken_port_is_a_one_line_error():
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening: the connection is accepted into the backlog
        with pytest.raises(SentimentRNNError, match=f"^port {port} on 127.0.0.1 is already in use; stop what "):
            bind("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(SentimentRNNError, match=r"^cannot listen on 192\.0\.2\.1:0 \(.+\); pass another --host"):
        bind("192.0.2.1", 0)  # TEST-NET-1: no interface of this machine has it


def test_a_wrong_method_or_path_keeps_starlettes_status_detail_and_headers(run):
    predictor = Predictor.from_dir(run)

    async def send(client):
        return await client.get("/predict"), await client.post("/nowhere", json={"texts": ["fine"]})

    wrong_method, wrong_path = serve_in_process(predictor, LIMITS, send)
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})
    assert wrong_method.headers["allow"] == "POST"
    assert (wrong_path.status_code, wrong_path.json()) == (404, {"detail": "Not Found"})


def test_bind_listens_on_an_ipv6_host():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    sock = bind("::1", 0)
    try:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[1] > 0
    finally:
        sock.close()

