"""The search page of ``diffembed serve --index DIR``: ``GET /`` in a browser.

``GET /?q=TEXT&mode=MODE&k=N`` renders the hits on the server (``serve.page_render``) from the
body ``POST /v1/search`` would answer (``serve.search.search_route``: one search path), so the
page works without JavaScript. Only the snippets differ: the page shows the stretch of each
hit's best chunk that holds the query's words (``LiveIndex.passages``), where the JSON API gives
the chunk's start. Every error is a page with a message and its HTTP status, never a
traceback or JSON: an empty or over-long query, ``k`` out of range, an unknown mode, no index.

With an API key set, the page searches only for a browser that sent the key once through its
form (``POST /key``): the answer sets a cookie holding an HMAC of the key (``guard.
page_cookie_value``), HttpOnly (no script reads it) and SameSite=Strict (no other site's page
makes the browser send it), Secure when served over HTTPS. A client may send the bearer header
instead, as the JSON API requires. ``POST /key/forget`` deletes the cookie.

Every page carries a Content-Security-Policy that allows only this server's own stylesheet,
script, form targets and fetches, and ``X-Content-Type-Options: nosniff``.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.
import logging
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from diffembed.serve.guard import (
    PAGE_COOKIE,
    APIError,
    key_matches,
    page_authorized,
    page_cookie_value,
)
from diffembed.serve.live_index import IndexChanged
from diffembed.serve.page_render import MODE_LABELS, PAGE_CSS, PAGE_JS, PageView, render_page
from diffembed.serve.search import SearchContext, index_facts, search_route

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 1000  # the longest query the page takes (characters)
DEFAULT_K = 10
COOKIE_MAX_AGE_S = 30 * 24 * 3600  # the key is asked for again after 30 days
MAX_FORM_BYTES = 64 * 1024  # the key form's largest body
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # hits depend on the key and on the index's generation
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class PageQuery:
    """A search the page runs: ``serve.search.SearchParams`` with the JSON API's defaults (the
    model's query prompt, no truncation, hybrid fused as ``/v1/search`` fuses by default)."""

    query: str
    k: int
    mode: str | None
    prompt_name: str | None = None
    instruction: str | None = None
    truncate: bool = False
    fusion: str | None = None
    alpha: float | None = None


def add_page_routes(app: "FastAPI", routes: SearchContext) -> None:
    """Register ``GET /``, ``POST /key``, ``POST /key/forget``, ``GET /page.css`` and
    ``GET /page.js`` on ``app`` (left out of the OpenAPI spec: they answer HTML)."""

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        return await search_page(routes, request)

    @app.post("/key", include_in_schema=False)
    async def key(request: Request) -> Response:
        return await submit_key(routes, request)

    @app.post("/key/forget", include_in_schema=False)
    async def forget(request: Request) -> Response:
        if _cross_site(request):
            return _refused(routes)
        response = RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
        response.delete_cookie(
            PAGE_COOKIE, path="/", secure=_https(request), httponly=True, samesite="strict"
        )
        return response

    @app.get("/page.css", include_in_schema=False)
    async def css() -> Response:
        return Response(PAGE_CSS, media_type="text/css; charset=utf-8", headers=ASSET_HEADERS)

    @app.get("/page.js", include_in_schema=False)
    async def js() -> Response:
        return Response(PAGE_JS, media_type="text/javascript; charset=utf-8", headers=ASSET_HEADERS)


# ------------------------------------------------------------------------------ the page
async def search_page(routes: SearchContext, request: Request) -> Response:
    """``GET /``: the form, the index's facts and, with ``q``, the hits or why there are none;
    the key form instead while an API key is set and the request does not carry it."""
    params = request.query_params
    view = _view(routes, params.get("q", ""), params.get("mode", ""), params.get("k", ""))
    await _add_facts(routes, view)
    key = routes.config.api_key
    if not page_authorized(dict(request.scope["headers"]), request.cookies, key):
        view.locked = True
        return _page(view, 401, {"WWW-Authenticate": "Bearer"})
    view.can_forget = bool(key) and PAGE_COOKIE in request.cookies
    if "q" not in params:
        status = 200
        if routes.index is None:  # nothing to search: say so where the hits would be
            view.error, status = view.facts_error, 404
        return _page(view, status)
    status = 200
    try:
        view.result = await search_route(routes, _page_query(view))
        view.facts = view.result["index"]  # the generation that answered
        view.passages = await _passages(routes, view.result["data"])
    except APIError as err:
        view.error, status = _message(err, routes), err.status
    except Exception as err:  # an error page, never a traceback
        logger.exception("internal error rendering the search page")
        view.error, status = f"Internal error ({type(err).__name__}); see the server's log.", 500
    return _page(view, status)


def _view(routes: SearchContext, query: str, mode: str, k: str) -> PageView:
    """A page for what the user asked (nothing run yet)."""
    return PageView(
        query=query,
        mode=mode,
        k=k or str(DEFAULT_K),
        max_k=routes.config.max_k,
        model=routes.config.model_name,
        max_query_chars=MAX_QUERY_CHARS,
    )


async def _add_facts(routes: SearchContext, view: PageView) -> None:
    """Set ``view.facts`` from the live generation (reloaded if ``index add`` replaced it), or
    ``view.facts_error``."""
    if routes.index is None:
        view.facts_error = (
            "No index is loaded: start the server with `diffembed serve --model DIR --index "
            "INDEX_DIR` to search."
        )
        return
    try:
        view.facts = index_facts(await run_in_threadpool(routes.index.current))
    except IndexChanged as e:
        view.facts_error = str(e)


async def _passages(routes: SearchContext, hits: list[dict[str, Any]]) -> dict[str, str]:
    """``LiveIndex.passages`` of ``hits``, for snippets around the query's words; none (the
    hits keep their own snippets) when the index cannot give them now."""
    if routes.index is None:
        return {}
    try:
        return await run_in_threadpool(routes.index.passages, hits)
    except (IndexChanged, sqlite3.Error) as e:
        logger.warning("search page: no passages for the snippets (%s)", e)
        return {}


def _page_query(view: PageView) -> PageQuery:
    """The search the page's fields ask for; an ``APIError`` 400 for a field that is wrong
    (``search_route`` checks the rest: ``k``'s range, the mode against the index)."""
    if not view.query.strip():
        raise APIError(400, "The query is empty: type some words to search for.", param="q")
    if len(view.query) > MAX_QUERY_CHARS:
        raise APIError(
            400,
            f"The query is {len(view.query)} characters long; the limit is {MAX_QUERY_CHARS}. "
            "Shorten it.",
            param="q",
        )
    if view.mode and view.mode not in MODE_LABELS:
        choices = ", ".join(MODE_LABELS)
        raise APIError(400, f"Unknown mode {view.mode!r}: choose one of {choices}.", param="mode")
    text = view.k.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise APIError(
            400, f"k must be a whole number from 1 to {view.max_k}, got {view.k!r}.", param="k"
        )
    return PageQuery(query=view.query, k=int(text), mode=view.mode or None)


def _message(err: APIError, routes: SearchContext) -> str:
    """The page's wording of a search error."""
    if err.code == "context_length_exceeded":
        return (
            "The query is longer than the model reads (max_length="
            f"{routes.embedder.max_length} tokens, its instruction included): shorten it."
        )
    if err.code == "no_index":
        return "No index is loaded: start the server with `--index INDEX_DIR` to search."
    return err.message


def _page(view: PageView, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        render_page(view),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**PAGE_HEADERS, **(headers or {})},
    )


# ------------------------------------------------------------------------------ the key
async def submit_key(routes: SearchContext, request: Request) -> Response:
    """``POST /key`` (form fields ``key``, and the ``q``, ``mode``, ``k`` to run): a right key
    sets the page's cookie and goes back to the search (303); a wrong one gets the key form
    again, 401, saying so."""
    if _cross_site(request):
        return _refused(routes)
    form, problem = await _read_form(request)
    view = _view(routes, form.get("q", ""), form.get("mode", ""), form.get("k", ""))
    key = routes.config.api_key
    back = _search_url(form)
    if not key:  # no key needed: straight back to the search
        return RedirectResponse(back, status_code=303, headers=PAGE_HEADERS)
    given = form.get("key", "")
    if problem is not None or not key_matches(given, key):
        await _add_facts(routes, view)
        view.locked = True
        view.key_error = problem or (
            "Wrong API key: it is not the key this server was started with (--api-key or "
            "$DIFFEMBED_API_KEY). Check it and try again."
            if given
            else "Enter the API key to search."
        )
        return _page(view, 401, {"WWW-Authenticate": "Bearer"})
    response = RedirectResponse(back, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        PAGE_COOKIE,
        page_cookie_value(key),
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        secure=_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


async def _read_form(request: Request) -> tuple[dict[str, str], str | None]:
    """The form's fields (first value of each) and the problem with the body, if any."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}, "Send the key with the page's form (application/x-www-form-urlencoded)."
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}, f"The form is over {MAX_FORM_BYTES} bytes."
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}, None


def _search_url(form: dict[str, str]) -> str:
    """``/`` with the search the key form carried (only ``q``, ``mode`` and ``k``)."""
    params = {name: form[name] for name in ("q", "mode", "k") if form.get(name)}
    return "/?" + urllib.parse.urlencode(params) if params else "/"


def _cross_site(request: Request) -> bool:
    """Whether a browser says the form was sent from another site's page."""
    return request.headers.get("sec-fetch-site", "").lower() == "cross-site"


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _refused(routes: SearchContext) -> Response:
    view = _view(routes, "", "", "")
    view.locked = bool(routes.config.api_key)
    view.key_error = "Refused: this form was sent from another site's page."
    view.error = view.key_error
    return _page(view, 403)
