"""An HTTP JSON API over a run or an ONNX export: FastAPI for the API, uvicorn as the server.

FastAPI validates requests with pydantic (already our config library) and writes the OpenAPI docs
(/docs, /openapi.json) from the same types; uvicorn finishes requests in flight on SIGTERM before it
runs the app's shutdown, which drains the micro-batcher. Concurrent requests are micro-batched: the
first waiting request opens a batch, which closes at max_batch texts or after max_wait_ms, and the
model reads it in one call on a single worker thread, so the event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentiment_rnn.errors import SentimentRNNError


@dataclass
class Limits:
    max_texts: int = 256  # texts per request; more is a 413
    max_chars: int = 20_000  # characters per text; more is a 413
    max_body_bytes: int = 8 << 20  # request body size by Content-Length (required); more is a 413
    max_batch: int = 64  # texts the micro-batcher hands the model at once
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong with the request and how to fix it.")


ERROR_RESPONSES = {  # for the OpenAPI docs
    400: {"model": ErrorResponse, "description": "Empty body, broken JSON or bytes that are not UTF-8."},
    411: {"model": ErrorResponse, "description": "A body without Content-Length (chunked)."},
    413: {"model": ErrorResponse, "description": "Too many texts, a text too long, or a body too large."},
    415: {"model": ErrorResponse, "description": "A body sent with a content-type other than JSON."},
    422: {"model": ErrorResponse, "description": "A wrong type, an unknown field or an empty text."},
}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify, each non-empty.",
                                   examples=[["a gripping, beautifully shot film", "dull and far too long"]])


class Prediction(BaseModel):
    label: str
    probability: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per input text, in input order.")


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent requests into batches of up to max_batch texts, waiting at most max_wait_ms."""

    def __init__(self, predict, max_batch: int, max_wait_ms: float):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")  # one batch at a time
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued request, then stop (uvicorn calls this after requests in flight are done)."""
        await self.queue.put(None)
        if self.task is not None:
            await self.task
        self.worker.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(texts, future))
        return await future

    async def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """The batch that `first` opens, and whether the stop marker was met while collecting."""
        batch, size = [first], len(first.texts)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            timeout = deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                break
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            if item is None:
                return batch, True
            batch.append(item)
            size += len(item.texts)
        return batch, False

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            batch, stopping = await self._collect(first)
            texts = [t for item in batch for t in item.texts]
            try:
                records = await asyncio.get_running_loop().run_in_executor(self.worker, self.predict, texts)
            except Exception as exc:  # a model failure fails this batch's requests, never the server
                for item in batch:
                    item.future.set_exception(exc)
                continue
            start = 0
            for item in batch:
                if not item.future.cancelled():  # the client may have gone away meanwhile
                    item.future.set_result(records[start:start + len(item.texts)])
                start += len(item.texts)


def load_predictor(model: Path | None):
    """(predictor, metadata) for a run directory (torch) or an ONNX export (onnxruntime, no torch)."""
    from sentiment_rnn import onnx_backend, runtime

    threads = runtime.server_threads()
    if model is not None and onnx_backend.is_export(Path(model)):
        predictor, stale = onnx_backend.load_export(model, threads)
        meta = predictor.meta
        return predictor, {"backend": "onnx", "labels": predictor.labels, "model": meta.get("model"),
                           "source_run": meta.get("source_run"), "export": str(predictor.path),
                           "source_weights_sha256": meta.get("source_weights_sha256"), "versions": meta.get("versions"),
                           "warning": stale}
    # oneDNN keeps a compiled kernel, with its buffers, for each (steps, batch) shape it has seen, up to 1,024
    # of them: a server sees every shape, and its RSS grew with each new one. A user's own setting wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    from sentiment_rnn.predict import Predictor

    predictor = Predictor.from_dir(model, threads=threads)
    run = predictor.run
    return predictor, {"backend": "torch", "labels": predictor.labels,
                       "model": run.config.model.model_dump(mode="json"),
                       "source_run": str(run.path), "versions": run.meta.get("versions")}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """400 for a body that is not JSON (or none at all), 422 naming the first wrong field otherwise."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, "the request body is not valid JSON; send {\"texts\": [\"...\"]}"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return 400, "the request body is empty; send {\"texts\": [\"...\"]}"
    parts = first.get("loc", ())[1:]  # ("texts", 0) -> texts[0], as the empty-text message writes it
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".") or "body"
    return 422, f"{where}: {first.get('msg', 'invalid value')}; send {{\"texts\": [\"...\"]}} with non-empty strings"


def _add_error_handlers(app: FastAPI, limits: Limits) -> None:
    """Every bad request gets a status and a one-line message; none reaches the model or stops the server."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (kind.endswith("/json") or kind.endswith("+json")):  # FastAPI left the body unparsed, as bytes
            sent = f"as {kind}" if kind else "without a content-type"
            return _error(415, f"the body was sent {sent}; send it as JSON with the header "
                               "'content-type: application/json'")
        return _error(*_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's own "error parsing the body": bytes that are not UTF-8 JSON
            return _error(400, "the request body is not UTF-8 JSON; send {\"texts\": [\"...\"]}")
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)

    @app.middleware("http")
    async def body_size(request: Request, call_next):
        if "transfer-encoding" in request.headers:  # a chunked body has no size to check before it is read
            return _error(411, f"send the request body with a Content-Length header, not chunked (at most "
                               f"{limits.max_body_bytes:,} bytes)")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > limits.max_body_bytes:
            return _error(413, f"the request body is over {limits.max_body_bytes:,} bytes; send fewer or shorter texts")
        return await call_next(request)


def create_app(predictor, metadata: dict, limits: Limits | None = None) -> FastAPI:
    """The API over a loaded predictor: POST /predict, GET /health, GET /metadata, docs at /docs."""
    limits = limits or Limits()
    batcher = MicroBatcher(predictor.predict, limits.max_batch, limits.max_wait_ms)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="sentiment-rnn", summary="Sentiment labels and probabilities from a trained RNN classifier.",
                  lifespan=lifespan)
    _add_error_handlers(app, limits)

    @app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES)
    async def predict(request: PredictRequest):
        texts = request.texts
        if len(texts) > limits.max_texts:
            return _error(413, f"{len(texts):,} texts in one request; send at most {limits.max_texts:,} per request")
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                return _error(413, f"texts[{i}] has {len(text):,} characters; the limit is {limits.max_chars:,}")
            if not text.strip():
                return _error(422, f"texts[{i}] is empty; every text needs at least one word")
        records = await batcher.submit(texts)
        return {"predictions": [{k: r[k] for k in ("label", "probability", "probabilities")} for r in records]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata")
    async def info() -> dict:
        return {**metadata, "limits": limits.__dict__}

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a port in use is a one-line error before anything starts (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse a TIME_WAIT port
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SentimentRNNError(
                f"port {port} on {host} is already in use; stop what uses it or pass --port N") from None
        raise SentimentRNNError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pass another --host or --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(app: FastAPI, sock: socket.socket, log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C; uvicorn then lets requests in flight finish (up to 30 s)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=30, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
