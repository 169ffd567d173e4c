"""The server's error objects and its ASGI guard (API key, body size limit, request metrics).

``APIError`` is answered as an OpenAI-style ``{"error": {"message", "type", "param", "code"}}``
object; ``Guard`` wraps the FastAPI app (``serve.app``) and answers its own errors the same way.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import TYPE_CHECKING, Any

from diffembed.model.inputs import lone_surrogate
from diffembed.serve.metrics import Metrics

if TYPE_CHECKING:
    from diffembed.serve.app import ServeConfig

KNOWN_PATHS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")


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
        """``{"error": {"message", "type", "param", "code"}}``."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error}


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


def unicode_error(text: str, param: str) -> APIError | None:
    """A 400 naming ``param`` when ``text`` is not valid Unicode (a lone surrogate, which JSON
    can carry as a ``\\ud800`` escape and no tokenizer takes), else None."""
    at = lone_surrogate(text)
    if at is None:
        return None
    return APIError(
        400,
        f"{param} is not valid Unicode: a lone surrogate U+{ord(text[at]):04X} at character "
        f"{at} (a \\u escape of half a UTF-16 pair); send the whole character, or drop it",
        param=param,
    )


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
