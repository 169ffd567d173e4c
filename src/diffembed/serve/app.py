"""HTTP server: OpenAI-compatible embeddings, index search, health, models and Prometheus metrics.

Endpoints: ``POST /v1/embeddings`` (OpenAI schema, plus ``prompt_name``/``instruction`` and
``truncate``), ``POST /v1/search`` (when an index is loaded), ``GET /v1/models``,
``GET /health``, ``GET /metrics``, and the search page ``GET /`` (``serve.page``). Handlers
validate their input and queue the texts for the worker (``serve.batcher``); a full queue is
answered with 503 and ``Retry-After``. Errors are OpenAI-style ``{"error": {"message", "type",
"param", "code"}}`` objects (the page answers pages); bad input never crashes the server. The
``Guard`` middleware checks the API key (every endpoint but ``/health`` and the page's needs
``Authorization: Bearer KEY`` when one is set; the page asks a browser for the key once and
keeps a cookie), limits body sizes and counts requests. On SIGTERM/SIGINT in-flight requests
finish, then the worker drains its queue and stops.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.
import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diffembed.model.dimensions import dimensions_warning, truncate
from diffembed.serve.batcher import Batcher, EmbedResult, QueueFull, RejectedInput
from diffembed.serve.config import API_KEY_ENV as API_KEY_ENV  # re-exported for the CLI
from diffembed.serve.config import ServeConfig
from diffembed.serve.guard import APIError, Guard, unicode_error
from diffembed.serve.live_index import LiveIndex
from diffembed.serve.metrics import Metrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from diffembed.index.store import VectorIndex
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ the app
def create_app(
    embedder: "Embedder",
    config: ServeConfig | None = None,
    index: "VectorIndex | None" = None,
    trained_dims: "tuple[int, ...] | list[int]" = (),
) -> "FastAPI":
    """The ASGI app. Its lifespan starts the model's worker thread and, on shutdown, drains it.

    ``index`` (optional) must have been built with ``embedder``'s model (see
    ``diffembed.index.store.check_model``); it enables ``POST /v1/search``. ``trained_dims``:
    the shorter lengths the model was trained for (``model_dir.trained_dims``); a request's
    ``dimensions`` of another length is answered with a ``warning`` field.
    """
    from fastapi import FastAPI

    config = config or ServeConfig()
    config.validate()
    metrics = Metrics()
    live = LiveIndex(index) if index is not None else None
    routes = _Routes(embedder, config, Batcher(embedder, config, metrics), live)
    routes.trained_dims = tuple(trained_dims)
    app = FastAPI(
        title="diffembed",
        version="1",
        description="OpenAI-compatible embeddings and search with a diffembed model.",
        lifespan=routes.lifespan,
    )
    app.state.batcher = routes.batcher
    app.state.metrics = metrics
    app.state.config = config
    app.state.index = live
    _add_error_handlers(app)
    _add_routes(app, routes)
    from diffembed.serve.page import add_page_routes

    add_page_routes(app, routes)
    return Guard(app, config, metrics)  # type: ignore[return-value]


def _request_models() -> tuple[type, type]:
    """The request bodies ``(EmbeddingRequest, SearchRequest)`` (pydantic, strict, no extras)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

    class EmbeddingRequest(BaseModel):
        """OpenAI's embeddings request, plus ``prompt_name``/``instruction`` and ``truncate``."""

        model_config = ConfigDict(extra="forbid")
        input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = Field(
            description="a string, a list of strings, or token ids of the served model's own "
            "tokenizer: a list of ids (one input) or a list of id lists"
        )
        model: StrictStr | None = Field(default=None, description="the served model id")
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: StrictInt | None = Field(
            default=None,
            description="keep the first N dimensions and renormalise; a length the model was "
            "not trained for (Matryoshka) adds a 'warning' field to the response",
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
        mode: Literal["dense", "bm25", "hybrid"] | None = Field(
            default=None, description="default: hybrid when the index has BM25, else dense"
        )
        fusion: Literal["convex", "rrf"] | None = Field(
            default=None,
            description="hybrid: convex (default) or rrf (reciprocal-rank fusion, k = 60)",
        )
        alpha: float | None = Field(
            default=None,
            ge=0,
            le=1,
            description="hybrid, fusion convex: weight of dense (0..1); default 0.1",
        )

    return EmbeddingRequest, SearchRequest


# ------------------------------------------------------------------------------ errors
def _error_response(err: APIError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _validation_message(err: Any, content_type: str | None = None) -> APIError:
    """A request body that does not fit the schema (or is not JSON) as one 400 error; a body
    not declared as JSON (``content_type``, the request's header) is never parsed, so that is
    the error."""
    if not _is_json_type(content_type):
        got = f"is {content_type!r}" if content_type else "is missing"
        return APIError(
            400,
            f"the Content-Type header {got}: send the body as JSON with "
            "'Content-Type: application/json'",
            code="invalid_content_type",
        )
    errors = err.errors()
    first = errors[0] if errors else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        message = f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
        return APIError(400, message, code="invalid_json")
    where = ".".join(loc) or "body"
    message = f"{where}: {first.get('msg', 'invalid request')}"
    if loc and loc[0] == "input" and first.get("type") != "missing":
        message = (
            "input must be a string, a list of strings, a list of token ids or a list of "
            "token-id lists"
        )
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return APIError(400, message, param=loc[0] if loc else None)


def _is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type header declares JSON (``application/json`` or ``+json``), the
    bodies FastAPI parses."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _body_not_utf8(err: Exception) -> APIError | None:
    """The error for a body FastAPI could not parse because it is not UTF-8 (its message would
    be "There was an error parsing the body"), naming the first bad byte; None otherwise."""
    cause = err.__cause__
    if not isinstance(cause, UnicodeDecodeError):
        return None
    byte = cause.object[cause.start]
    return APIError(
        400,
        f"the body is not valid UTF-8 (byte 0x{byte:02x} at offset {cause.start}): send JSON "
        "encoded as UTF-8",
        code="invalid_json",
    )


def _add_error_handlers(app: "FastAPI") -> None:
    """Every error, ours or the framework's, answered as an OpenAI-style error object."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_message(err, request.headers.get("content-type")))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        error = _body_not_utf8(err) or APIError(err.status_code, str(err.detail), code=code)
        return _error_response(error)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return _error_response(
            APIError(500, f"internal error: {type(err).__name__}", type_="server_error")
        )


# ------------------------------------------------------------------------------ endpoints
def _add_routes(app: "FastAPI", routes: "_Routes") -> None:
    """The endpoints (their names, annotations and docstrings make the OpenAPI spec)."""
    from fastapi.responses import PlainTextResponse, Response

    EmbeddingRequest, SearchRequest = _request_models()  # noqa: N806

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest) -> Response:  # type: ignore[valid-type]
        """Embed ``input`` (OpenAI schema)."""
        return await routes.embeddings(req)

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """The ``k`` best documents of the loaded index for ``query``."""
        return await routes.search(req)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The served model (OpenAI's list format)."""
        return routes.models()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is loaded (no API key needed)."""
        return await routes.health()

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests, tokens, batch sizes, latency histogram."""
        return PlainTextResponse(routes.metrics.render(), media_type="text/plain; version=0.0.4")


class _Routes:
    """What the endpoints do: validate, queue texts for the worker, search, describe."""

    def __init__(
        self,
        embedder: "Embedder",
        config: ServeConfig,
        batcher: Batcher,
        index: LiveIndex | None,
    ) -> None:
        self.embedder = embedder
        self.config = config
        self.batcher = batcher
        self.metrics = batcher.metrics
        self.index = index
        self.created = int(time.time())
        self.trained_dims: tuple[int, ...] = ()  # create_app sets the model's (Matryoshka)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: "FastAPI"):  # noqa: ANN201
        from starlette.concurrency import run_in_threadpool

        self.batcher.start()
        logger.info("worker started: %s (dim %d)", self.config.model_name, self.embedder.dim)
        try:
            yield
        finally:
            await run_in_threadpool(self.batcher.stop)
            logger.info("worker stopped")

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name:
            raise APIError(
                404,
                f"model {name!r} is not served here; this server serves {self.config.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def resolve_prefix(
        self, prompt_name: str | None, instruction: str | None, default: str | None
    ) -> str:
        embedder = self.embedder
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

    async def embed(
        self, texts: list[str], prefix: str, truncate: bool, field: str = "input"
    ) -> EmbedResult:
        """The vectors of ``texts`` (from the request's ``field``: errors name it) from the
        worker; a full queue is a 503, texts it refuses a 400."""
        try:
            future = self.batcher.submit(texts, prefix, truncate, field)
        except QueueFull as e:
            raise APIError(
                503,
                f"server busy: {e}; retry later",
                type_="server_error",
                code="queue_full",
                headers={"Retry-After": str(self.config.retry_after_s)},
            ) from None
        try:
            return await asyncio.wrap_future(future)
        except RejectedInput as e:
            raise APIError(400, str(e), param=e.param, code=e.code) from None

    def input_texts(self, value: Any) -> list[str]:
        """``input`` as texts. Token ids (a list: one input; a list of lists: several) must be
        the served model's own tokenizer's; they are decoded (special tokens dropped) and
        embedded as that text, which re-tokenizes to the same ids for tokenizer output."""
        if isinstance(value, str):
            return [value]
        items = list(value)
        if not items or isinstance(items[0], str):
            return items
        flat = isinstance(items[0], int)
        rows = [items] if flat else items
        if len(rows) > self.config.max_inputs:
            self.check_texts(rows)  # the too-many-inputs error
        tokenizer = self.embedder.tokenizer
        vocab = len(tokenizer)
        texts = []
        for i, row in enumerate(rows):
            if not row:
                raise APIError(400, f"input[{i}] is an empty token list", param=f"input[{i}]")
            bad = next((j for j, t in enumerate(row) if not 0 <= t < vocab), None)
            if bad is not None:
                where = f"input[{bad}]" if flat else f"input[{i}][{bad}]"
                raise APIError(
                    400,
                    f"{where}: token id {row[bad]} is not in the model's vocabulary (0..{vocab - 1});"
                    " send token ids of the served model's own tokenizer, or text",
                    param=where,
                    code="invalid_token_id",
                )
            text = tokenizer.decode(row, skip_special_tokens=True)
            if not text.strip():
                where = "input" if flat else f"input[{i}]"
                raise APIError(
                    400,
                    f"{where}: the token ids decode to no text (only special tokens such as "
                    f"{_special_names(tokenizer)}, or whitespace): nothing to embed; send the "
                    "ids of a non-empty text",
                    param=where,
                    code="invalid_token_id",
                )
            texts.append(text)
        return texts

    def check_texts(self, texts: list[Any]) -> None:
        if not texts:
            raise APIError(400, "input is an empty list", param="input")
        if len(texts) > self.config.max_inputs:
            raise APIError(
                400,
                f"input has {len(texts)} items; at most {self.config.max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        for i, t in enumerate(texts):
            if not t.strip():
                raise APIError(400, f"input[{i}] is empty or whitespace only", param=f"input[{i}]")
            error = unicode_error(t, f"input[{i}]")
            if error is not None:
                raise error

    async def embeddings(self, req: Any) -> Any:
        from fastapi.responses import Response

        dim = self.embedder.dim
        self.check_model(req.model)
        texts = self.input_texts(req.input)
        self.check_texts(texts)
        if req.dimensions is not None and not 1 <= req.dimensions <= dim:
            raise APIError(
                400,
                f"dimensions must be between 1 and {dim}, got {req.dimensions}",
                param="dimensions",
            )
        prefix = self.resolve_prefix(req.prompt_name, req.instruction, None)
        result = await self.embed(texts, prefix, req.truncate)
        vectors = result.vectors
        if req.dimensions is not None and req.dimensions < dim:
            vectors = truncate(vectors, req.dimensions)
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
            "model": self.config.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        warning = dimensions_warning(req.dimensions, dim, self.trained_dims)
        if warning is not None:  # not OpenAI's: clients that do not know it ignore it
            body["warning"] = warning
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    async def search(self, req: Any) -> dict[str, Any]:
        from diffembed.serve.search import search_route

        return await search_route(self, req)

    def models(self) -> dict[str, Any]:
        embedder = self.embedder
        return {
            "object": "list",
            "data": [
                {
                    "id": self.config.model_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "diffembed",
                    "dimensions": embedder.dim,
                    "trained_dimensions": sorted({*self.trained_dims, embedder.dim}),
                    "max_length": embedder.max_length,
                    "prompts": embedder.prompts,
                }
            ],
        }

    async def health(self) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        info = None if self.index is None else await run_in_threadpool(self.index.describe)
        return {
            "status": "ok",
            "model": self.config.model_name,
            "dimensions": self.embedder.dim,
            "queue_texts": self.batcher.pending,
            "index": info,
        }


def _special_names(tokenizer: Any) -> str:
    """The tokenizer's special tokens, for a message: ``'<|pad|>', '<|bos|>' ...``."""
    names = list(dict.fromkeys(tokenizer.all_special_tokens))
    shown = ", ".join(repr(n) for n in names[:4])
    return shown + (" ..." if len(names) > 4 else "") if names else "padding"


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
