"""The server's error objects and its ASGI guard (API key, body size limit, request metrics).

``APIError`` is answered as an OpenAI-style ``{"error": {"message", "type", "param", "code"}}``
object; ``Guard`` wraps the FastAPI app (``serve.app``) and answers its own errors the same way.
The search page's paths (``PAGE_PATHS``) check the key themselves (``page_authorized``): a
browser sends it in a cookie, and is answered with pages, not JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from diffembed.model.inputs import lone_surrogate
from diffembed.serve.config import ServeConfig
from diffembed.serve.metrics import Metrics

# The search page (``serve.page``): the page, its key form, and its stylesheet and script.
PAGE_PATHS = ("/", "/key", "/key/forget", "/page.css", "/page.js")
KNOWN_PATHS = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics", *PAGE_PATHS)
PAGE_COOKIE = "diffembed_page"


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
        if not key or path == "/health" or path in PAGE_PATHS:
            return None
        if key_matches(bearer_token(dict(scope.get("headers") or [])), key):
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


# ------------------------------------------------------------------------------ API key
def bearer_token(headers: dict[bytes, bytes]) -> str:
    """The key a request sends (``Authorization: Bearer KEY``, else ``X-API-Key``; "" for
    none), from its raw ASGI headers."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return token or headers.get(b"x-api-key", b"").decode("latin-1")


def key_matches(given: str, key: str) -> bool:
    """Whether ``given`` is ``key`` (compared in constant time; "" never matches)."""
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def page_cookie_value(key: str) -> str:
    """The search page's cookie for ``key``: an HMAC-SHA256 of a fixed label under the key, so
    the cookie never holds the key itself (it opens the page, not the JSON API) and changing
    the server's key ends every browser's access."""
    return hmac.new(key.encode(), b"diffembed search page v1", hashlib.sha256).hexdigest()


def page_authorized(headers: dict[bytes, bytes], cookies: dict[str, str], key: str | None) -> bool:
    """Whether a request may see the search page's hits: no key is set, or it sends the key
    (bearer, as the JSON API) or the page's cookie (``page_cookie_value``)."""
    if not key:
        return True
    if key_matches(bearer_token(headers), key):
        return True
    return key_matches(cookies.get(PAGE_COOKIE, ""), page_cookie_value(key))


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
