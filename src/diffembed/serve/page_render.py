"""The search page's HTML, stylesheet and script (``serve.page`` serves them).

Rendering uses only the standard library: ``string.Template`` for the page's frame and
``html.escape`` on every piece of text that enters it, whether the user typed it (query, mode,
``k``), a document holds it (id, title, snippet) or a message quotes either. The page works
without JavaScript; ``PAGE_JS`` only adds search as you type. Nothing is fetched from outside the
server: no fonts, no CDN.
"""

from __future__ import annotations

import functools
import html
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from diffembed.index.search import SNIPPET_CHARS

# The modes the page offers, in its order, with what each uses.
MODE_LABELS = {"hybrid": "hybrid", "dense": "dense", "bm25": "BM25"}
MAX_MARKED_WORDS = 32  # the most distinct query words a snippet highlights
MAX_MATCHES = 4096  # the most query-word matches of one passage looked at for its snippet


@dataclass
class PageView:
    """Everything one page shows, as plain text (``render_page`` escapes it all).

    Attributes:
        query: the query as typed ("" when none).
        mode: the mode as chosen ("" for the index's default).
        k: ``k`` as typed.
        max_k: the largest ``k`` the server takes.
        model: the served model's name.
        facts: the index's facts (``serve.search.index_facts``), or None.
        facts_error: why there are none (no index loaded, or an index of another model).
        result: ``/v1/search``'s body for the query (``serve.search.search_route``), or None.
        passages: each hit's best chunk as text (``LiveIndex.passages``), by document id: its
            snippet is the stretch with the query's words (``focused_snippet``).
        error: why the search could not run (shown instead of hits).
        locked: an API key is needed: the page asks for it instead of searching.
        key_error: why the key given was refused.
        can_forget: the browser holds the key's cookie: offer to forget it.
        max_query_chars: the longest query the page takes.
    """

    query: str = ""
    mode: str = ""
    k: str = "10"
    max_k: int = 1000
    model: str = ""
    facts: dict[str, Any] | None = None
    facts_error: str | None = None
    result: dict[str, Any] | None = None
    passages: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    locked: bool = False
    key_error: str | None = None
    can_forget: bool = False
    max_query_chars: int = 1000


_FRAME = string.Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title</title>
<link rel="stylesheet" href="/page.css">
<script src="/page.js" defer></script>
</head>
<body>
<header>
<div class="top"><h1>diffembed search</h1>$forget</div>
$facts
</header>
<main>
$form
<section id="results" aria-label="Results" aria-live="polite">
$results
</section>
</main>
</body>
</html>
"""
)


def esc(text: object) -> str:
    """``text`` as HTML text or attribute value (``&``, ``<``, ``>``, both quotes escaped)."""
    return html.escape(str(text), quote=True)


def render_page(view: PageView) -> str:
    """The whole page for ``view`` (an HTML document as text)."""
    if view.error is not None:
        title = "Error — diffembed search"
    elif view.query.strip() and not view.locked:
        title = f"{view.query.strip()[:80]} — diffembed search"
    else:
        title = "diffembed search"
    forget = ""
    if view.can_forget:
        forget = (
            '<form class="forget" method="post" action="/key/forget">'
            '<button type="submit">Forget the API key</button></form>'
        )
    form = _key_form(view) if view.locked else _search_form(view)
    return _FRAME.substitute(
        title=esc(title),
        forget=forget,
        facts=_facts(view),
        form=form,
        results="" if view.locked else _results(view),
    )


def _facts(view: PageView) -> str:
    """The index's facts as a description list (``id="facts"``), or why there are none."""
    if view.facts is None:
        message = view.facts_error or "no index"
        return f'<p id="facts" class="facts warn" role="status">{esc(message)}</p>'
    f = view.facts
    vectors = f["vectors"]
    extra = f" ({vectors} vectors)" if vectors != f["documents"] else ""
    rows = [
        ("Documents", f"{f['documents']}{extra}", "documents"),
        ("Model", view.model, "model"),
        ("Embedded", f["description"], "embedded"),
        ("Generation", f["generation"], "generation"),
    ]
    items = "".join(
        f'<div><dt>{esc(name)}</dt><dd data-fact="{key}">{esc(value)}</dd></div>'
        for name, value, key in rows
    )
    return f'<dl id="facts" class="facts">{items}</dl>'


def _mode_options(chosen: str, facts: dict[str, Any] | None) -> str:
    """The mode ``<option>``s, ``chosen`` selected (else the index's default)."""
    if chosen not in MODE_LABELS:
        chosen = "hybrid" if facts is None or facts.get("bm25") else "dense"
    return "".join(
        f'<option value="{value}"{" selected" if value == chosen else ""}>{label}</option>'
        for value, label in MODE_LABELS.items()
    )


def _search_form(view: PageView) -> str:
    """The search form: query, mode, ``k`` and a button, each control labelled."""
    used = view.result["search"]["mode"] if view.result else view.mode
    return (
        '<form id="search" class="search" method="get" action="/" role="search">'
        '<div class="field query"><label for="q">Query</label>'
        f'<input id="q" name="q" type="search" value="{esc(view.query)}" '
        f'maxlength="{view.max_query_chars}" autocomplete="off" spellcheck="false" autofocus>'
        "</div>"
        '<div class="field"><label for="mode">Mode</label>'
        f'<select id="mode" name="mode">{_mode_options(used, view.facts)}</select></div>'
        '<div class="field k"><label for="k">Results (k)</label>'
        f'<input id="k" name="k" type="number" min="1" max="{view.max_k}" '
        f'value="{esc(view.k)}" inputmode="numeric"></div>'
        '<button type="submit">Search</button>'
        "</form>"
    )


def _key_form(view: PageView) -> str:
    """The form that asks for the API key, carrying the query to run once it is accepted."""
    error = ""
    if view.key_error is not None:
        error = f'<p id="error" class="error" role="alert">{esc(view.key_error)}</p>'
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{esc(value)}">'
        for name, value in (("q", view.query), ("mode", view.mode), ("k", view.k))
        if value
    )
    return (
        '<form id="key-form" class="key" method="post" action="/key">'
        "<p>This server needs its API key to search. Enter it once: the browser then keeps a "
        "cookie made from it for this site only (HttpOnly, SameSite=Strict; the key itself "
        "is not stored).</p>"
        f"{error}"
        '<div class="field"><label for="key">API key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" '
        "required autofocus></div>"
        f"{hidden}"
        '<button type="submit">Use this key</button>'
        "</form>"
    )


def _results(view: PageView) -> str:
    """The error, or the summary, the BM25 note and the hits; "" before any search."""
    if view.error is not None:
        return f'<p id="error" class="error" role="alert">{esc(view.error)}</p>'
    if view.result is None:
        return ""
    result = view.result
    hits = result["data"]
    search = result["search"]
    how = MODE_LABELS.get(search["mode"], search["mode"])
    if search["mode"] == "hybrid":
        fusion = "RRF k=60" if search["fusion"] == "rrf" else f"convex alpha={search['alpha']:g}"
        how += f", {fusion}"
    noun = "document" if len(hits) == 1 else "documents"
    parts = [f'<p class="summary">{len(hits)} {noun} for <q>{esc(view.query)}</q> ({esc(how)})</p>']
    if result.get("note"):
        parts.append(f'<p class="note" role="status">{esc(result["note"])}</p>')
    if not hits:
        parts.append('<p class="empty">No document matched.</p>')
        return "".join(parts)
    chunked = result["index"]["mode"] == "chunked"
    items = "".join(_hit(h, view.query, chunked, view.passages.get(h["id"])) for h in hits)
    parts.append(f'<ol class="hits">{items}</ol>')
    return "".join(parts)


def _hit(hit: dict[str, Any], query: str, chunked: bool, passage: str | None) -> str:
    """One hit: rank, title (else id), id, score, where it came from, and a snippet of its
    ``passage`` (else its own) with the query's words highlighted."""
    snippet = hit["snippet"] if passage is None else focused_snippet(passage, query, hit["snippet"])
    if chunked:
        where = f"chunk {hit['chunk']}, characters {hit['char_start']}–{hit['char_end']}"
    else:
        where = "whole document" + (", truncated" if hit["truncated"] else "")
    title = hit["title"] or hit["id"]
    return (
        f'<li class="hit" data-rank="{hit["rank"]}" data-id="{esc(hit["id"])}" '
        f'data-score="{hit["score"]!r}" data-chunk="{hit["chunk"]}">'
        f'<h2><span class="rank">{hit["rank"]}.</span> '
        f'<span class="title">{esc(title)}</span></h2>'
        f'<p class="meta"><span class="id">id {esc(hit["id"])}</span> · '
        f'<span class="score">score {hit["score"]:.4f}</span> · '
        f'<span class="where">{esc(where)}</span></p>'
        f'<p class="snippet">{highlight(snippet, query)}</p>'
        "</li>"
    )


@functools.cache
def _stop_words() -> frozenset[str]:
    """The English stop words BM25 drops (bm25s's list, ``diffembed.eval.bm25``), which
    snippets do not highlight unless the query has no other word."""
    try:
        from bm25s.stopwords import STOPWORDS_EN
    except ImportError:  # bm25s comes with the serve extra; without it, mark every word
        return frozenset()
    return frozenset(STOPWORDS_EN)


def _word_pattern(query: str) -> re.Pattern[str] | None:
    """A pattern matching any whole word of ``query`` but stop words, in any case (None: no
    words)."""
    found = {w.lower() for w in re.findall(r"\w+", query)}
    words = sorted(found - _stop_words() or found, key=lambda w: (-len(w), w))
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words[:MAX_MARKED_WORDS])
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def highlight(text: str, query: str) -> str:
    """``text`` escaped as HTML, with each whole word of ``query`` (any case; stop words only
    when the query has nothing else) in ``<mark>``."""
    pattern = _word_pattern(query)
    if pattern is None:
        return esc(text)
    out, at = [], 0
    for m in pattern.finditer(text):
        out.append(esc(text[at : m.start()]))
        out.append(f"<mark>{esc(m.group())}</mark>")
        at = m.end()
    out.append(esc(text[at:]))
    return "".join(out)


def focused_snippet(passage: str, query: str, fallback: str, limit: int = SNIPPET_CHARS) -> str:
    """About ``limit`` characters of ``passage`` (whitespace collapsed) around the stretch that
    holds the most distinct words of ``query``, cut at spaces, with "…" where cut; ``fallback``
    (the hit's own snippet, the passage's start) when no word of the query occurs in it."""
    flat = " ".join(passage.split())
    pattern = _word_pattern(query)
    matches = [] if pattern is None else list(pattern.finditer(flat))[:MAX_MATCHES]
    if not matches:
        return fallback
    if len(flat) <= limit:
        return flat
    # The run of matches spanning at most 3/4 of the window with the most distinct words.
    width, counts, first = limit * 3 // 4, Counter[str](), 0
    best = (0, 0, 0)  # (distinct words, first match, last match)
    for last, m in enumerate(matches):
        counts[m.group().lower()] += 1
        while m.end() - matches[first].start() > width and first < last:
            word = matches[first].group().lower()
            counts[word] -= 1
            if not counts[word]:
                del counts[word]
            first += 1
        if len(counts) > best[0]:
            best = (len(counts), first, last)
    span_start, span_end = matches[best[1]].start(), matches[best[2]].end()
    start = max(0, span_start - (limit - (span_end - span_start)) // 2)
    end = min(len(flat), start + limit)
    start = max(0, end - limit)
    if start > 0:  # begin and end on word boundaries, when one is near
        space = flat.find(" ", start, span_start)
        start = space + 1 if space >= 0 and space - start < 20 else start
    if end < len(flat):
        space = flat.rfind(" ", span_end, end)
        end = space if space >= 0 and end - space < 20 else end
    return ("…" if start > 0 else "") + flat[start:end] + ("…" if end < len(flat) else "")


PAGE_CSS = """\
:root {
  color-scheme: light dark;
  --fg: #1b1b1b; --bg: #ffffff; --muted: #4f4f4f; --line: #d4d4d4;
  --accent: #0b57d0; --on-accent: #ffffff; --err-bg: #fdecea; --err: #8a1c12;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e8e8e8; --bg: #141414; --muted: #b4b4b4; --line: #3c3c3c;
    --accent: #8ab4f8; --on-accent: #0b1a33; --err-bg: #3b1512; --err: #ffb4a9;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--fg); background: var(--bg);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
}
header, main { max-width: 64rem; margin: 0 auto; padding: 0 1rem; }
.top { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between;
  gap: .5rem; }
h1 { font-size: 1.4rem; margin: 1rem 0 .25rem; }
.facts { display: flex; flex-wrap: wrap; gap: .1rem 1.25rem; margin: 0 0 .5rem;
  color: var(--muted); font-size: .9rem; }
.facts div { display: flex; gap: .4rem; min-width: 0; }
.facts dt { font-weight: 600; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.facts.warn { color: var(--err); }
form.search, form.key { display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-end;
  padding: .75rem 0 1rem; border-bottom: 1px solid var(--line); }
form.key p { flex-basis: 100%; margin: 0; }
.field { display: flex; flex-direction: column; gap: .2rem; min-width: 0; }
.field.query { flex: 1 1 20rem; }
label { font-weight: 600; font-size: .9rem; }
input, select, button { font: inherit; min-height: 2.6rem; padding: .4rem .6rem;
  border: 1px solid var(--muted); border-radius: 4px; background: var(--bg); color: var(--fg); }
input[type="number"] { width: 6.5rem; }
button { background: var(--accent); color: var(--on-accent); border-color: var(--accent);
  cursor: pointer; font-weight: 600; }
.forget button { background: transparent; color: var(--accent); min-height: 2.2rem; }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.summary, .note { color: var(--muted); margin: .75rem 0; }
.hits { list-style: none; margin: 0; padding: 0; }
.hit { padding: .8rem 0; border-bottom: 1px solid var(--line); }
.hit h2 { font-size: 1.05rem; margin: 0; overflow-wrap: anywhere; }
.rank { color: var(--muted); font-weight: 400; }
.meta { margin: .1rem 0; color: var(--muted); font-size: .85rem; overflow-wrap: anywhere; }
.snippet { margin: .25rem 0 0; overflow-wrap: anywhere; }
mark { background: #ffe27a; color: #000000; padding: 0 .1em; border-radius: 2px; }
.error { background: var(--err-bg); color: var(--err); padding: .6rem .8rem; border-radius: 4px;
  overflow-wrap: anywhere; }
@media (max-width: 30rem) {
  header, main { padding: 0 .75rem; }
  .field.query { flex-basis: 100%; }
}
"""

# Search as you type: after a pause, fetch the same page for the form's values (the cookie
# goes along, same origin) and swap in its results and facts. Enter still submits the form.
PAGE_JS = """\
"use strict";
(function () {
  var form = document.getElementById("search");
  if (!form || !window.fetch || !window.DOMParser || !window.URLSearchParams) return;
  var timer = 0, latest = 0;
  function swap(doc) {
    ["results", "facts"].forEach(function (id) {
      var fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(document.importNode(fresh, true));
    });
  }
  function run() {
    var params = new URLSearchParams(new FormData(form));
    if (!(params.get("q") || "").trim()) return;
    var url = "/?" + params.toString(), mine = ++latest;
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (text) {
        if (mine !== latest) return;  // a newer search was started
        swap(new DOMParser().parseFromString(text, "text/html"));
        history.replaceState(null, "", url);
      })
      .catch(function () {});
  }
  function later() { clearTimeout(timer); timer = setTimeout(run, 300); }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
})();
"""
