"""HTTP server: OpenAI-compatible embeddings, index search, health, models and Prometheus metrics.

One worker thread owns the model. Request handlers validate their input and put a job on a
bounded queue; the worker takes every job waiting (up to ``max_step_texts`` texts), tokenizes
them, packs the texts of all jobs into token-budget batches (rows x longest row <=
``max_batch_tokens``), runs the forward passes and hands each job its vectors. A full queue is
answered with 503 and ``Retry-After`` instead of growing without bound.

Endpoints: ``POST /v1/embeddings`` (OpenAI schema, plus ``prompt_name``/``instruction`` and
``truncate``), ``POST /v1/search`` (when an index is loaded), ``GET /v1/models``,
``GET /health``, ``GET /metrics``. Errors are OpenAI-style ``{"error": {"message", "type",
"param", "code"}}`` objects; bad input never crashes the server. With an API key every endpoint
but ``/health`` needs ``Authorization: Bearer KEY``. On SIGTERM/SIGINT uvicorn stops accepting
connections and lets in-flight requests finish; then the worker drains its queue and stops.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time
# and the request models are local to create_app.
import argparse
import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from fastapi import FastAPI

    from diffembed.index.index import VectorIndex
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)

API_KEY_ENV = "DIFFEMBED_API_KEY"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
KNOWN_PATHS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")


@dataclass
class ServeConfig:
    """Server limits and options.

    Attributes:
        model_name: the id clients send as ``model`` and ``/v1/models`` lists.
        max_batch_tokens: token budget of one forward pass (rows x longest row).
        max_step_texts: most texts the worker takes from the queue for one step.
        max_queue_texts: texts waiting or in progress before new requests get 503.
        max_inputs: most inputs in one request.
        max_body_bytes: largest request body (413 above).
        batch_wait_ms: how long the worker waits for more requests before a step (0: none;
            requests that arrive during a step are batched together anyway).
        api_key: required bearer token (None: open).
        max_k: largest ``k`` for search.
        retry_after_s: the ``Retry-After`` of a 503.
        threads: torch intra-op threads of the worker (None: torch's default). Leaving a core
            or two to the event loop and the clients avoids oversubscribing the CPU.
    """

    model_name: str = "diffembed"
    max_batch_tokens: int = 16384
    max_step_texts: int = 1024
    max_queue_texts: int = 8192
    max_inputs: int = 2048
    max_body_bytes: int = 8 << 20
    batch_wait_ms: float = 0.0
    api_key: str | None = None
    max_k: int = 1000
    retry_after_s: int = 1
    threads: int | None = None

    def validate(self) -> None:
        for name in ("max_batch_tokens", "max_step_texts", "max_queue_texts", "max_inputs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_inputs > self.max_queue_texts:
            raise ValueError(
                f"max_inputs ({self.max_inputs}) must not exceed max_queue_texts "
                f"({self.max_queue_texts})"
            )


# ------------------------------------------------------------------------------ errors
class APIError(Exception):
    """An error answered as an OpenAI-style error object."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class QueueFull(Exception):
    """The worker's queue holds ``max_queue_texts`` texts already."""


# ------------------------------------------------------------------------------ metrics
class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count) guarded by the Metrics lock."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{_fmt(b)}"}} {c}'
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


class Metrics:
    """Counters and histograms rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, Histogram] = {}
        self.tokens = 0
        self.inputs = 0
        self.forward_passes = 0
        self.steps = 0
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.step_requests = Histogram(BATCH_BUCKETS)
        self.queue_texts = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP diffembed_requests_total HTTP requests by endpoint and status.",
                "# TYPE diffembed_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(
                    f'diffembed_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP diffembed_request_latency_seconds Request latency by endpoint.",
                "# TYPE diffembed_request_latency_seconds histogram",
            ]
            for endpoint, h in sorted(self.latency.items()):
                lines += h.render("diffembed_request_latency_seconds", f'endpoint="{endpoint}"')
            lines += [
                "# HELP diffembed_tokens_total Tokens embedded (instruction and special tokens "
                "included).",
                "# TYPE diffembed_tokens_total counter",
                f"diffembed_tokens_total {self.tokens}",
                "# HELP diffembed_inputs_total Texts embedded.",
                "# TYPE diffembed_inputs_total counter",
                f"diffembed_inputs_total {self.inputs}",
                "# HELP diffembed_forward_passes_total Model forward passes.",
                "# TYPE diffembed_forward_passes_total counter",
                f"diffembed_forward_passes_total {self.forward_passes}",
                "# HELP diffembed_batch_size Texts per forward pass.",
                "# TYPE diffembed_batch_size histogram",
                *self.batch_size.render("diffembed_batch_size"),
                "# HELP diffembed_step_requests Requests merged into one worker step.",
                "# TYPE diffembed_step_requests histogram",
                *self.step_requests.render("diffembed_step_requests"),
                "# HELP diffembed_queue_texts Texts waiting or in progress.",
                "# TYPE diffembed_queue_texts gauge",
                f"diffembed_queue_texts {self.queue_texts}",
            ]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the worker
@dataclass
class EmbedResult:
    """A job's output: ``vectors`` float32 [n, H] in input order, ``tokens`` per input."""

    vectors: np.ndarray
    tokens: list[int]


@dataclass
class _Job:
    texts: list[str]
    prefix: str
    truncate: bool
    future: concurrent.futures.Future


class Batcher:
    """Owns the model: merges queued jobs into token-budget batches on one worker thread."""

    def __init__(self, embedder: "Embedder", config: ServeConfig, metrics: Metrics) -> None:
        self.embedder = embedder
        self.config = config
        self.metrics = metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._pending = 0  # texts queued or in the current step
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="diffembed-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Finish every queued job, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, texts: list[str], prefix: str, truncate: bool) -> concurrent.futures.Future:
        """Queue ``texts`` (embedded as ``prefix + text``); raises ``QueueFull`` when full."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if self._pending + len(texts) > self.config.max_queue_texts:
                raise QueueFull(
                    f"{self._pending} texts are queued (limit {self.config.max_queue_texts})"
                )
            self._queue.append(_Job(texts, prefix, truncate, future))
            self._pending += len(texts)
            self.metrics.queue_texts = self._pending
            self._cond.notify()
        return future

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self.config.batch_wait_ms > 0 and len(self._queue) == 1:
                self._cond.wait(self.config.batch_wait_ms / 1000)
            jobs = [self._queue.popleft()]
            n = len(jobs[0].texts)
            while self._queue and n + len(self._queue[0].texts) <= self.config.max_step_texts:
                job = self._queue.popleft()
                n += len(job.texts)
                jobs.append(job)
            return jobs

    def _run(self) -> None:
        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                with torch.inference_mode():
                    self._step(jobs)
            except Exception as e:  # never let the worker die
                logger.exception("worker step failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
            finally:
                with self._cond:
                    self._pending -= sum(len(j.texts) for j in jobs)
                    self.metrics.queue_texts = self._pending

    def _tokenize(self, job: _Job) -> tuple[list[list[int]], list[list[int]]] | None:
        emb = self.embedder
        try:
            tok = emb.tokenize(job.texts, job.prefix, truncate=job.truncate, warn=False)
            return tok.ids, tok.masks
        except (ValueError, TypeError) as e:
            lengths = [
                len(x)
                for x in emb.tokenizer(
                    [job.prefix + t for t in job.texts], add_special_tokens=True, verbose=False
                )["input_ids"]
            ]
            over = [(i, n) for i, n in enumerate(lengths) if n > emb.max_length]
            if over and not job.truncate:
                shown = ", ".join(f"input[{i}] has {n} tokens" for i, n in over[:5])
                message = (
                    f"{len(over)} input(s) exceed the model's max_length={emb.max_length} tokens "
                    f"(instruction and special tokens included): {shown}; send "
                    '"truncate": true to truncate them'
                )
            else:
                message = str(e).replace("texts[", "input[")
            job.future.set_exception(
                APIError(400, message, param="input", code="context_length_exceeded")
            )
            return None
        except Exception as e:  # one bad job must not fail the others of its step
            logger.exception("tokenizing a request failed")
            job.future.set_exception(
                APIError(400, f"could not tokenize the input: {type(e).__name__}: {e}")
            )
            return None

    def _step(self, jobs: list[_Job]) -> None:
        from diffembed.model.embedder import token_budget_batches

        emb = self.embedder
        ids: list[list[int]] = []
        masks: list[list[int]] = []
        owner: list[tuple[int, int]] = []  # (job, position) of each text
        live: list[int] = []
        for j, job in enumerate(jobs):
            got = self._tokenize(job)
            if got is None:
                continue
            live.append(j)
            ids.extend(got[0])
            masks.extend(got[1])
            owner.extend((j, i) for i in range(len(job.texts)))
        if not ids:
            return
        lengths = [len(x) for x in ids]
        outputs = {j: np.empty((len(jobs[j].texts), emb.dim), np.float32) for j in live}
        batches = token_budget_batches(lengths, self.config.max_batch_tokens)
        for batch, array in emb.embed_batches(ids, masks, batches):
            for row, i in enumerate(batch):
                j, pos = owner[i]
                outputs[j][pos] = array[row]
            with self.metrics.lock:
                self.metrics.forward_passes += 1
                self.metrics.batch_size.observe(len(batch))
        start = 0
        per_job_tokens: dict[int, list[int]] = {}
        for j in live:
            n = len(jobs[j].texts)
            per_job_tokens[j] = lengths[start : start + n]
            start += n
        with self.metrics.lock:
            self.metrics.steps += 1
            self.metrics.step_requests.observe(len(live))
            self.metrics.tokens += sum(lengths)
            self.metrics.inputs += len(lengths)
        for j in live:
            jobs[j].future.set_result(EmbedResult(outputs[j], per_job_tokens[j]))


# ------------------------------------------------------------------------------ ASGI guard
class Guard:
    """Pure ASGI middleware: API key, body size limit, request metrics, error objects."""

    def __init__(self, app: Any, config: ServeConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else "other"
        status_box = [500]

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
            await send(message)

        try:
            error = self._check_key(scope, path)
            if error is None:
                receive, error = await self._limit_body(scope, receive)
            if error is not None:
                await _send_error(send_tracked, error)
            else:
                await self.app(scope, receive, send_tracked)
        finally:
            self.metrics.request(endpoint, status_box[0], time.perf_counter() - start)

    def _check_key(self, scope: dict, path: str) -> APIError | None:
        key = self.config.api_key
        if not key or path == "/health":
            return None
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        token = token or headers.get(b"x-api-key", b"").decode("latin-1")
        if token and hmac.compare_digest(token.encode(), key.encode()):
            return None
        return APIError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer KEY'",
            type_="invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _limit_body(self, scope: dict, receive: Any) -> tuple[Any, APIError | None]:
        limit = self.config.max_body_bytes
        too_big = APIError(
            413,
            f"request body exceeds the limit of {limit} bytes",
            code="request_too_large",
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return receive, too_big
            except ValueError:
                return receive, APIError(400, "malformed Content-Length header")
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive, None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                chunks = []
                break
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                return receive, too_big
            chunks.append(body)
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return replay, None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ the app
def create_app(
    embedder: "Embedder", config: ServeConfig | None = None, index: "VectorIndex | None" = None
) -> "FastAPI":
    """The ASGI app. Its lifespan starts the model's worker thread and, on shutdown, drains it.

    ``index`` (optional) must have been built with ``embedder``'s model (see
    ``diffembed.index.index.check_model``); it enables ``POST /v1/search``.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config = config or ServeConfig()
    config.validate()
    metrics = Metrics()
    batcher = Batcher(embedder, config, metrics)
    created = int(time.time())
    search_lock = threading.Lock()

    class EmbeddingRequest(BaseModel):
        """OpenAI's embeddings request, plus ``prompt_name``/``instruction`` and ``truncate``."""

        model_config = ConfigDict(extra="forbid")
        input: StrictStr | list[StrictStr] = Field(
            description="a string or a list of strings (token arrays are not accepted)"
        )
        model: StrictStr | None = Field(default=None, description="the served model id")
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: StrictInt | None = Field(
            default=None, description="keep the first N dimensions and renormalise"
        )
        user: StrictStr | None = None
        prompt_name: StrictStr | None = Field(
            default=None, description="a prompt saved with the model, e.g. 'query'"
        )
        instruction: StrictStr | None = Field(
            default=None, description="an instruction prepended to every input"
        )
        truncate: StrictBool = Field(
            default=False, description="truncate over-long inputs instead of refusing them"
        )

    class SearchRequest(BaseModel):
        """A text query against the loaded index."""

        model_config = ConfigDict(extra="forbid")
        query: StrictStr
        k: StrictInt = 10
        prompt_name: StrictStr | None = None
        instruction: StrictStr | None = None
        truncate: StrictBool = False

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        batcher.start()
        logger.info("worker started: %s (dim %d)", config.model_name, embedder.dim)
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)
            logger.info("worker stopped")

    app = FastAPI(
        title="diffembed",
        version="1",
        description="OpenAI-compatible embeddings and search with a diffembed model.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.config = config
    app.state.index = index

    def error_response(err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            message = f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            return error_response(APIError(400, message, code="invalid_json"))
        where = ".".join(loc) or "body"
        message = f"{where}: {first.get('msg', 'invalid request')}"
        if loc and loc[0] == "input" and first.get("type") != "missing":
            message = "input must be a string or a list of strings (token arrays are not accepted)"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more error(s))"
        return error_response(APIError(400, message, param=loc[0] if loc else None))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error_response(APIError(err.status_code, str(err.detail), code=code))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return error_response(
            APIError(500, f"internal error: {type(err).__name__}", type_="server_error")
        )

    def check_model(name: str | None) -> None:
        if name is not None and name != config.model_name:
            raise APIError(
                404,
                f"model {name!r} is not served here; this server serves {config.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def resolve_prefix(prompt_name: str | None, instruction: str | None, default: str | None):
        if prompt_name is not None and instruction is not None:
            raise APIError(400, "give prompt_name or instruction, not both", param="prompt_name")
        if prompt_name is not None:
            if prompt_name not in embedder.prompts:
                raise APIError(
                    400,
                    f"unknown prompt_name {prompt_name!r}; known: {sorted(embedder.prompts)}",
                    param="prompt_name",
                )
            return embedder.instruction_prefix(embedder.prompts[prompt_name])
        if instruction is not None:
            return embedder.instruction_prefix(instruction)
        return embedder.instruction_prefix(default)

    async def embed(texts: list[str], prefix: str, truncate: bool) -> EmbedResult:
        try:
            future = batcher.submit(texts, prefix, truncate)
        except QueueFull as e:
            raise APIError(
                503,
                f"server busy: {e}; retry later",
                type_="server_error",
                code="queue_full",
                headers={"Retry-After": str(config.retry_after_s)},
            ) from None
        return await asyncio.wrap_future(future)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest) -> Response:
        """Embed ``input`` (OpenAI schema)."""
        check_model(req.model)
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise APIError(400, "input is an empty list", param="input")
        if len(texts) > config.max_inputs:
            raise APIError(
                400,
                f"input has {len(texts)} items; at most {config.max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        for i, t in enumerate(texts):
            if not t.strip():
                raise APIError(400, f"input[{i}] is empty or whitespace only", param=f"input[{i}]")
            if not _is_unicode(t):
                raise APIError(400, f"input[{i}] is not valid Unicode (lone surrogate)")
        if req.dimensions is not None and not 1 <= req.dimensions <= embedder.dim:
            raise APIError(
                400,
                f"dimensions must be between 1 and {embedder.dim}, got {req.dimensions}",
                param="dimensions",
            )
        prefix = resolve_prefix(req.prompt_name, req.instruction, None)
        result = await embed(texts, prefix, req.truncate)
        vectors = result.vectors
        if req.dimensions is not None and req.dimensions < embedder.dim:
            vectors = vectors[:, : req.dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if req.encoding_format == "base64":
            items: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
        else:
            items = vectors.tolist()
        tokens = int(sum(result.tokens))
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)
            ],
            "model": config.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict[str, Any]:
        """The ``k`` best documents of the loaded index for ``query``."""
        if index is None:
            raise APIError(404, "no index is loaded (start with --index)", code="no_index")
        if not req.query.strip():
            raise APIError(400, "query is empty or whitespace only", param="query")
        if not _is_unicode(req.query):
            raise APIError(400, "query is not valid Unicode (lone surrogate)", param="query")
        if not 1 <= req.k <= config.max_k:
            raise APIError(400, f"k must be between 1 and {config.max_k}", param="k")
        default = embedder.prompts.get("query")
        prefix = resolve_prefix(req.prompt_name, req.instruction, default)
        result = await embed([req.query], prefix, req.truncate)

        def run() -> list[dict[str, Any]]:
            with search_lock:
                return [h.to_dict() for h in index.search(result.vectors, req.k)[0]]

        hits = await run_in_threadpool(run)
        tokens = int(sum(result.tokens))
        return {
            "object": "list",
            "data": hits,
            "model": config.model_name,
            "index": {
                "documents": index.n_documents,
                "vectors": index.ntotal,
                **index.mode,
                "description": index.describe_mode(),
            },
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The served model (OpenAI's list format)."""
        return {
            "object": "list",
            "data": [
                {
                    "id": config.model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "diffembed",
                    "dimensions": embedder.dim,
                    "max_length": embedder.max_length,
                    "prompts": embedder.prompts,
                }
            ],
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is loaded (no API key needed)."""
        return {
            "status": "ok",
            "model": config.model_name,
            "dimensions": embedder.dim,
            "queue_texts": batcher.pending,
            "index": None
            if index is None
            else {"documents": index.n_documents, "vectors": index.ntotal, **index.mode},
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests, tokens, batch sizes, latency histogram."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return Guard(app, config, metrics)  # type: ignore[return-value]


# ------------------------------------------------------------------------------ running
def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (0: a free port), for
    ``make_server(...).run(sockets=[sock])``.

    Made with ``IPPROTO_TCP`` on purpose: asyncio only sets ``TCP_NODELAY`` on connections of
    sockets whose protocol says TCP, and a plain ``socket.socket()`` (protocol 0) gives every
    response a ~40 ms Nagle/delayed-ACK stall (measured: 44 ms -> 0.3 ms per request).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8080, **kw: Any) -> Any:
    """A uvicorn server for ``app`` (graceful shutdown: in-flight requests finish)."""
    import uvicorn

    kw.setdefault("log_level", "info")
    kw.setdefault("timeout_graceful_shutdown", 60)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown; a clean stop exits 0.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False, **kw)
    return Server(config)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP server: OpenAI-compatible embeddings and index search",
        description="Serve a model over HTTP: POST /v1/embeddings (OpenAI schema), POST "
        "/v1/search (with --index), GET /v1/models, /health, /metrics. Concurrent requests are "
        "merged into token-budget batches by one worker; a full queue answers 503.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--index", type=Path, help="index directory built with this model")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})"
    )
    p.add_argument("--model-name", help="model id for clients (default: the directory name)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="compute precision")
    p.add_argument("--max-length", type=int, help="max tokens per input (default: the model's)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    d = ServeConfig()
    p.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens)
    p.add_argument("--max-queue", type=int, default=d.max_queue_texts, help="texts queued")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms)
    p.add_argument("--threads", type=int, help="torch threads of the worker (default: torch's)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from diffembed.index.index import VectorIndex, check_model
    from diffembed.model.embedder import Embedder

    overrides: dict[str, Any] = {}
    if args.dtype is not None:
        overrides["precision"] = args.dtype
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    index = None
    if args.index is not None:
        index = VectorIndex.open(args.index)
        check_model(index.meta, args.model)
        for key in ("precision", "max_length"):
            overrides.setdefault(key, index.meta["embedding"][key])
    embedder = Embedder.load(args.model, device=args.device, **overrides)
    config = ServeConfig(
        model_name=args.model_name or args.model.resolve().name,
        max_batch_tokens=args.max_batch_tokens,
        max_queue_texts=args.max_queue,
        max_inputs=min(args.max_inputs, args.max_queue),
        max_body_bytes=args.max_body_bytes,
        batch_wait_ms=args.batch_wait_ms,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        threads=args.threads,
    )
    app = create_app(embedder, config, index)
    logger.info(
        "serving %s on http://%s:%d (index: %s, API key: %s)",
        config.model_name,
        args.host,
        args.port,
        args.index or "none",
        "required" if config.api_key else "none",
    )
    make_server(app, args.host, args.port).run()
    return 0
