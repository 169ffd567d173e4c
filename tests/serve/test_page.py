"""The search page (``GET /``), server side: the form and the index's facts, hits equal to
``/v1/search``'s, highlighting, escaping of everything typed or stored, every error as a page,
the API key kept in a cookie, and the facts following ``index add``."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from pageparse import parse_page
from test_serve import LONG, ServerThread, assert_error, request

from diffembed.formats.corpus import Document
from diffembed.index.build import add_documents, build_index
from diffembed.index.store import VectorIndex, current_generation
from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig, create_app
from diffembed.serve.guard import PAGE_COOKIE, PAGE_PATHS
from diffembed.serve.page import MAX_QUERY_CHARS
from diffembed.serve.page_render import PageView, focused_snippet, highlight, render_page

WORDS = ["fox", "river", "bank", "tokens", "keys", "needles", "haystacks", "query", "words"]
XSS_TITLE = "<script>alert('title')</script>"
XSS_TEXT = '<script>alert(1)</script> & <b>bold</b> "quoted" fox'
KEY = "s3cret-key"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def page_docs() -> list[Document]:
    rng = np.random.default_rng(1)
    docs = [
        Document(id=f"d{i}", title=f"Document {i}", text=" ".join(rng.choice(WORDS, 9)))
        for i in range(10)
    ]
    docs.append(Document(id="xss", title=XSS_TITLE, text=XSS_TEXT))
    docs.append(Document(id="rare", text="zebra stripes field guide"))
    filler = "river bank notes " * 30  # the word searched for is far past the snippet's start
    docs.append(Document(id="long", text=f"{filler}where the platypus lives. {filler}"))
    return docs


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir)


@pytest.fixture(scope="module")
def index_dir(model_dir, embedder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "ix"
    build_index(page_docs(), path, model_dir, embedder=embedder).close()
    return path


def serve(embedder: Embedder, index_dir: Path | None, **config: object) -> ServerThread:
    index = None if index_dir is None else VectorIndex.open(index_dir)
    return ServerThread(create_app(embedder, ServeConfig(model_name="tiny", **config), index))


@pytest.fixture(scope="module")
def server(embedder, index_dir):
    with serve(embedder, index_dir) as s:
        yield s


@pytest.fixture(scope="module")
def key_server(embedder, index_dir):
    with serve(embedder, index_dir, api_key=KEY) as s:
        yield s


def get_page(port: int, params: dict | None = None, headers: dict | None = None):
    """``GET /?params``: ``(status, headers, html)``."""
    path = "/?" + urllib.parse.urlencode(params) if params is not None else "/"
    status, hdrs, body = request(port, "GET", path, headers=headers)
    assert hdrs["content-type"] == "text/html; charset=utf-8", body
    assert isinstance(body, str)
    return status, hdrs, body


def assert_safe_headers(headers: dict[str, str]) -> None:
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "style-src 'self'" in csp and "form-action 'self'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


# ----------------------------------------------------------------------------- the page
def test_page_has_labelled_form_and_index_facts(server, index_dir):
    status, headers, body = get_page(server.port)
    assert status == 200
    assert_safe_headers(headers)
    page = parse_page(body)
    assert page.forms == ["search"] and page.hits == [] and page.error is None
    assert {"q": "input", "mode": "select", "k": "input"}.items() <= page.controls.items()
    assert {"q", "mode", "k"} <= page.labels  # every control has a label
    assert 'value="hybrid" selected' in body  # the index has BM25: hybrid by default
    assert 'value="dense"' in body and 'value="bm25"' in body and ">BM25<" in body
    assert page.facts["documents"] == "13"
    assert page.facts["model"] == "tiny"
    assert page.facts["embedded"].startswith("whole documents")
    assert page.facts["generation"] == current_generation(index_dir).name
    # Nothing outside the server: one script and one stylesheet, both its own.
    assert page.scripts == ["/page.js"] and "/page.css" in page.urls
    assert all(u.startswith("/") and not u.startswith("//") for u in page.urls), page.urls
    assert "http://" not in body and "https://" not in body and "<style" not in body
    for path, kind in (("/page.css", "text/css"), ("/page.js", "text/javascript")):
        status, hdrs, text = request(server.port, "GET", path)
        assert status == 200 and hdrs["content-type"].startswith(kind) and text
        assert hdrs["x-content-type-options"] == "nosniff"
        assert "http" not in text and "@import" not in text and "url(" not in text
    # HTML pages are no part of the JSON API's spec.
    spec = request(server.port, "GET", "/openapi.json")[2]
    assert not set(spec["paths"]) & set(PAGE_PATHS)


@pytest.mark.parametrize(
    "query,mode,k",
    [
        ("fox river", "hybrid", 5),
        ("fox river", "dense", 3),
        ("zebra keys", "bm25", 4),
        ("needles haystacks", None, 13),  # the index's default mode (hybrid)
    ],
)
def test_page_hits_equal_v1_search(server, query, mode, k):
    body = {"query": query, "k": k} | ({"mode": mode} if mode else {})
    status, _, want = request(server.port, "POST", "/v1/search", body)
    assert status == 200, want
    params = {"q": query, "k": str(k)} | ({"mode": mode} if mode else {})
    status, headers, html = get_page(server.port, params)
    assert status == 200, html
    assert_safe_headers(headers)
    page = parse_page(html)
    docs = {d.id: d for d in page_docs()}
    assert len(page.hits) == len(want["data"]) > 0
    for got, hit in zip(page.hits, want["data"], strict=True):
        assert (got["rank"], got["id"], got["chunk"]) == (hit["rank"], hit["id"], hit["chunk"])
        assert got["score"] == pytest.approx(hit["score"], rel=1e-6, abs=1e-7)
        assert got["title"] == (hit["title"] or hit["id"])
        # The snippet: the hit's own (its chunk's start), or a stretch of the document that
        # holds the query's words.
        text = flat(docs[hit["id"]].full_text)
        assert got["snippet"] == hit["snippet"] or got["marks"]
        assert got["snippet"].strip("…") in text
        assert got["where"] == "whole document" + (", truncated" if hit["truncated"] else "")
    used = want["search"]["mode"]
    assert f'value="{used}" selected' in html
    assert page.facts["generation"] == want["index"]["generation"]
    assert page.title.startswith(query)


def test_snippets_mark_the_query_words(server):
    status, _, html = get_page(server.port, {"q": "FOX River", "mode": "bm25", "k": "13"})
    assert status == 200
    hits = parse_page(html).hits
    assert hits
    for hit in hits:
        found = re.findall(r"\b(?:fox|river)\b", hit["snippet"], re.IGNORECASE)
        assert hit["marks"] == found  # every occurrence, in order, and nothing else
    assert any(hit["marks"] for hit in hits)


def test_snippet_shows_where_the_query_words_are(server):
    status, _, want = request(
        server.port, "POST", "/v1/search", {"query": "platypus", "mode": "bm25", "k": 1}
    )
    assert status == 200 and "platypus" not in want["data"][0]["snippet"]  # the start
    status, _, html = get_page(server.port, {"q": "Platypus", "mode": "bm25", "k": "1"})
    hit = parse_page(html).hits[0]
    assert hit["id"] == "long" and hit["marks"] == ["platypus"]
    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")
    assert hit["snippet"].strip("…") in flat(page_docs()[-1].text)


def test_focused_snippet_picks_the_stretch_with_the_most_query_words():
    words = [f"w{i}" for i in range(200)]
    words[50], words[120], words[124] = "alpha", "alpha", "beta"
    passage = "  ".join(words)  # whitespace is collapsed
    got = focused_snippet(passage, "Alpha beta", "FALLBACK", limit=60)
    assert "alpha" in got and "beta" in got and got.index("alpha") < got.index("beta")
    assert got.startswith("…") and got.endswith("…") and len(got) <= 62
    assert got.strip("…") in " ".join(words)
    assert set(got.strip("…").split()) <= set(words)  # cut at spaces, never inside a word
    assert focused_snippet(passage, "gamma", "FALLBACK") == "FALLBACK"
    assert focused_snippet("a short alpha text", "alpha", "F") == "a short alpha text"
    assert focused_snippet(passage, "", "F") == "F"


def test_highlight_escapes_and_marks_whole_words():
    got = highlight('Fox <b>"foxes"</b> & fox.', "fox <b>")
    assert got == (
        "<mark>Fox</mark> &lt;<mark>b</mark>&gt;&quot;foxes&quot;&lt;/<mark>b</mark>&gt; "
        "&amp; <mark>fox</mark>."
    )
    assert highlight("<i>", "") == "&lt;i&gt;"
    # Stop words are marked only when the query has no other word.
    assert highlight("the fox and the river", "the fox") == "the <mark>fox</mark> and the river"
    assert highlight("the fox and", "and the") == "<mark>the</mark> fox <mark>and</mark>"
    assert highlight("x+y (z)", "(z) x+y") == "<mark>x</mark>+<mark>y</mark> (<mark>z</mark>)"


def test_chunked_hits_say_which_chunk():
    facts = {
        "documents": 2,
        "vectors": 5,
        "mode": "chunked",
        "bm25": True,
        "description": "chunked: 16-token windows, overlap 4; documents ranked by their best chunk",
        "generation": "gen-000001",
    }
    hit = {"rank": 1, "id": "a", "score": 0.5, "title": "", "snippet": "s", "chunk": 2}
    hit |= {"char_start": 30, "char_end": 61, "truncated": False, "meta": {}}
    result = {
        "data": [hit],
        "search": {"mode": "dense", "fusion": None, "alpha": None},
        "note": None,
        "index": facts,
    }
    page = parse_page(render_page(PageView(query="s", facts=facts, result=result)))
    assert page.hits[0]["where"] == "chunk 2, characters 30–61"
    assert page.facts["documents"] == "2 (5 vectors)" and page.facts["embedded"].startswith(
        "chunked"
    )
    result["index"] = facts | {"mode": "whole"}
    hit["truncated"] = True
    page = parse_page(render_page(PageView(query="s", facts=facts, result=result)))
    assert page.hits[0]["where"] == "whole document, truncated"


# ----------------------------------------------------------------------------- escaping
def test_typed_and_stored_text_is_escaped(server):
    query = "<script>alert(1)</script> \"><img src=x onerror=alert(2)> 'alert'"
    status, _, html = get_page(server.port, {"q": query, "mode": "bm25", "k": "3"})
    assert status == 200
    page = parse_page(html)
    assert page.scripts == ["/page.js"] and "img" not in page.tags and "b" not in page.tags
    assert page.values["q"] == query and page.title.startswith(query)
    xss = next(h for h in page.hits if h["id"] == "xss")  # the document shows as text
    assert xss["title"] == XSS_TITLE
    assert "<script>alert(1)</script>" in xss["snippet"] and "<b>bold</b>" in xss["snippet"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # What the user typed into mode and k is shown escaped on the error pages too.
    for params in ({"q": "fox", "mode": "<script>m</script>"}, {"q": "fox", "k": '"><b>k'}):
        status, _, html = get_page(server.port, params)
        assert status == 400
        page = parse_page(html)
        assert page.scripts == ["/page.js"] and "b" not in page.tags
        assert ("<script>m</script>" in page.error) or ('"><b>k' in page.error)
    assert parse_page(html).values["k"] == '"><b>k'


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "params,status,words",
    [
        ({"q": ""}, 400, "The query is empty"),
        ({"q": "  \t "}, 400, "The query is empty"),
        ({"q": "fox", "k": "0"}, 400, "k must be between 1 and 1000"),
        ({"q": "fox", "k": "1001"}, 400, "k must be between 1 and 1000"),
        ({"q": "fox", "k": "ten"}, 400, "k must be a whole number from 1 to 1000, got 'ten'"),
        ({"q": "fox", "k": "-3"}, 400, "k must be a whole number"),
        ({"q": "fox", "k": "9" * 5000}, 400, "k must be a whole number"),
        ({"q": "fox", "mode": "sparse"}, 400, "Unknown mode 'sparse'"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, 400, f"the limit is {MAX_QUERY_CHARS}"),
        ({"q": LONG, "mode": "dense"}, 400, "longer than the model reads (max_length=48"),
    ],
)
def test_errors_are_pages(server, params, status, words):
    got, headers, html = get_page(server.port, params)
    assert got == status
    assert_safe_headers(headers)
    page = parse_page(html)
    assert page.error is not None and words in page.error, page.error
    assert page.hits == [] and "Traceback" not in html
    assert page.forms == ["search"] and page.values["q"] == params["q"]  # try again from here
    assert page.title.startswith("Error")


def test_no_index_is_a_page(embedder):
    with serve(embedder, None) as s:
        for params in (None, {"q": "fox"}):
            status, headers, html = get_page(s.port, params)
            assert status == 404
            assert_safe_headers(headers)
            page = parse_page(html)
            assert page.error is not None and "No index is loaded" in page.error
            assert "No index is loaded" in page.facts_text and page.hits == []


# ----------------------------------------------------------------------------- API key
def post_key(port: int, fields: dict[str, str], headers: dict | None = None):
    raw = urllib.parse.urlencode(fields).encode()
    return request(port, "POST", "/key", raw=raw, headers={**FORM, **(headers or {})})


def test_key_is_asked_once_and_kept_in_a_strict_httponly_cookie(key_server):
    port = key_server.port
    # No key: the key form, no hits, whatever was asked; the query is carried along.
    for params in (None, {"q": "fox", "k": "3"}):
        status, headers, html = get_page(port, params)
        assert status == 401
        assert_safe_headers(headers)
        page = parse_page(html)
        assert page.forms == ["key-form"] and page.hits == [] and "key" in page.labels
    assert page.hidden == {"q": "fox", "k": "3"}
    # The JSON API keeps its bearer header.
    assert_error(request(port, "POST", "/v1/search", {"query": "fox"}), 401, "API key")
    # A wrong or missing key: the same page, saying so.
    for given, words in (("nope", "Wrong API key"), ("", "Enter the API key")):
        status, _, html = post_key(port, {"key": given, "q": "fox", "k": "3"})
        page = parse_page(html)
        assert status == 401 and page.forms == ["key-form"] and words in page.error
        assert page.hidden == {"q": "fox", "k": "3"} and page.hits == []
    # The right key: back to the search, with a cookie that is not the key.
    status, headers, _ = post_key(port, {"key": KEY, "q": "fox", "k": "3"})
    assert status == 303 and headers["location"] == "/?q=fox&k=3"
    cookie = headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert KEY not in cookie
    value = cookie.split(";")[0]
    assert value.startswith(PAGE_COOKIE + "=")
    status, _, html = get_page(port, {"q": "fox", "k": "3"}, {"Cookie": value})
    page = parse_page(html)
    assert status == 200 and len(page.hits) == 3 and "/key/forget" in page.urls
    # The bearer header opens the page too; a forged cookie does not; the cookie does not
    # open the JSON API.
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert len(parse_page(get_page(port, {"q": "fox", "k": "2"}, bearer)[2]).hits) == 2
    assert get_page(port, {"q": "fox"}, {"Cookie": f"{PAGE_COOKIE}=00ff"})[0] == 401
    assert_error(request(port, "POST", "/v1/search", {"query": "fox"}, {"Cookie": value}), 401)
    assert request(port, "POST", "/v1/search", {"query": "fox"}, bearer)[0] == 200
    # Forgetting the key deletes the cookie.
    status, headers, _ = request(port, "POST", "/key/forget", raw=b"", headers=FORM)
    assert status == 303 and headers["location"] == "/"
    assert headers["set-cookie"].startswith(f'{PAGE_COOKIE}=""') or "max-age=0" in (
        headers["set-cookie"].lower()
    )


def test_key_form_refuses_other_sites_and_other_bodies(key_server):
    port = key_server.port
    status, _, html = post_key(port, {"key": KEY}, {"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "another site" in parse_page(html).error
    status, headers, html = request(port, "POST", "/key", {"key": KEY})  # JSON, not the form
    assert status == 401 and "set-cookie" not in headers
    assert "form" in parse_page(html).error


# ----------------------------------------------------------------------------- reloads
def test_page_follows_index_add(model_dir, embedder, tmp_path):
    ix = tmp_path / "ix"
    build_index(page_docs()[:3], ix, model_dir, embedder=embedder).close()
    with serve(embedder, ix) as s:
        facts = parse_page(get_page(s.port)[2]).facts
        assert facts["documents"] == "3"
        new = Document(id="new", text="a brand new page about zebra crossings")
        add_documents(ix, [new], embedder=embedder).close()
        page = parse_page(get_page(s.port)[2])
        assert page.facts["documents"] == "4"
        assert page.facts["generation"] == current_generation(ix).name != facts["generation"]
        page = parse_page(get_page(s.port, {"q": "zebra crossings", "mode": "bm25"})[2])
        assert page.hits[0]["id"] == "new" and page.facts["documents"] == "4"
