"""The search page in a real browser: Debian's headless ``chromium`` (``make test`` installs it)
takes the API key, searches from the keyboard, searches as you type, shows a stored
``<script>`` as text, and lays the page out at 360 and 1400 px without sideways scrolling; it
fetches nothing from outside the server and its Content-Security-Policy blocks nothing of the
page's own. Chromium missing is a failure, not a skip."""

from __future__ import annotations

import struct

import pytest
from cdp import Browser, chromium_path, enable_page_domains
from test_page import KEY, XSS_TITLE, embedder, index_dir, serve  # noqa: F401 (fixtures)
from test_serve import request

HITS = "[...document.querySelectorAll('li.hit')].map(li => [li.dataset.id, +li.dataset.score])"
ACTIVE = "document.activeElement.id || document.activeElement.tagName"


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height (its IHDR chunk)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_search_page_in_chromium(embedder, index_dir, tmp_path):  # noqa: F811
    chromium_path()  # a clear failure when chromium is missing
    bearer = {"Authorization": f"Bearer {KEY}"}
    with serve(embedder, index_dir, api_key=KEY) as server, Browser() as browser:
        enable_page_domains(browser)
        base = f"http://127.0.0.1:{server.port}"
        # The key, typed once into the form the page opens with.
        browser.navigate(base + "/")
        assert browser.evaluate(ACTIVE) == "key"
        browser.type_text(KEY)
        browser.press_enter_and_wait()
        assert browser.evaluate("!!document.getElementById('search')")
        assert browser.evaluate("document.cookie") == ""  # HttpOnly: no script sees it
        # A search from the keyboard: type, Enter; the hits are /v1/search's.
        assert browser.evaluate(ACTIVE) == "q"
        browser.type_text("fox river")
        browser.press_enter_and_wait()
        assert browser.evaluate("location.search") == "?q=fox+river&mode=hybrid&k=10"
        want = request(server.port, "POST", "/v1/search", {"query": "fox river"}, bearer)[2]
        got = browser.evaluate(HITS)
        assert [h[0] for h in got] == [h["id"] for h in want["data"]]
        assert [h[1] for h in got] == pytest.approx([h["score"] for h in want["data"]], 1e-6)
        # Every control is reached with Tab, in order.
        order = []
        for _ in range(3):
            browser.press("Tab")
            order.append(browser.evaluate(ACTIVE))
        assert order == ["mode", "k", "BUTTON"]
        # Search as you type: the script swaps in the new results after a pause.
        browser.evaluate("const q = document.getElementById('q'); q.focus(); q.select()")
        browser.type_text("zebra stripes")
        browser.wait_until(
            "(document.querySelector('.summary') || {}).textContent?.includes('zebra stripes')"
        )
        assert browser.evaluate(HITS)[0][0] == "rare"
        assert "zebra" in browser.evaluate("location.search")
        # A stored <script> is text; the page's own script is the only one.
        browser.navigate(base + "/?q=alert+script&mode=bm25&k=3")
        assert browser.evaluate("document.scripts.length") == 1
        title = browser.evaluate(
            "document.querySelector('li.hit[data-id=\"xss\"] .title').textContent"
        )
        assert title == XSS_TITLE
        # Readable on a phone and on a wide screen: no sideways scrolling; screenshots.
        browser.navigate(base + "/?q=fox+river&k=5")
        for width in (360, 1400):
            browser.set_width(width)
            assert browser.evaluate("document.documentElement.scrollWidth") <= width
            assert browser.evaluate("document.querySelectorAll('li.hit').length") == 5
            shot = browser.screenshot(tmp_path / f"page-{width}.png")
            assert png_size(shot.read_bytes())[0] == width
        events = browser.events
    # Nothing fetched from outside the server; nothing refused by the CSP or failing in scripts.
    urls = [
        e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
    ]
    assert urls and all(u.startswith(base + "/") for u in urls), urls
    assert {u.split("?")[0] for u in urls} >= {base + "/page.css", base + "/page.js"}
    problems = [
        e["params"]["entry"]
        for e in events
        if e["method"] == "Log.entryAdded"
        and e["params"]["entry"]["level"] == "error"
        and e["params"]["entry"]["source"] != "network"
    ]
    problems += [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    assert not problems
