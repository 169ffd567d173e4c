"""Screenshots of the search page (``diffembed serve --index``) at 360 and 1400 px wide, taken by
headless Debian ``chromium`` through the tests' DevTools client (``tests/serve/cdp.py``).

Serves the index ``make demo`` writes (the Python standard library's pages, the shipped model),
searches one of the demo's fixed queries and writes ``search-360.png`` and ``search-1400.png``
into ``results/web/``::

    make demo
    .venv/bin/python scripts/search_page_screenshots.py

Options: ``--index DIR`` (default ``demo-output/index``), ``--model DIR`` (default
``models/diffembed-tiny``), ``--query``, ``--k``, ``--out DIR``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))

from cdp import Browser, enable_page_domains  # noqa: E402

from diffembed.index.store import VectorIndex, check_model  # noqa: E402
from diffembed.model.embedder import Embedder  # noqa: E402
from diffembed.serve.app import bind_socket, create_app, make_server  # noqa: E402
from diffembed.serve.config import ServeConfig  # noqa: E402

WIDTHS = (360, 1400)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=ROOT / "demo-output" / "index")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "diffembed-tiny")
    p.add_argument("--query", default="parse command line options and arguments")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "web")
    args = p.parse_args()
    if not (args.index / "CURRENT").exists():
        sys.exit(f"no index at {args.index}: run `make demo` first, or pass --index DIR")
    index = VectorIndex.open(args.index)
    check_model(index.meta, args.model)
    settings = index.meta["embedding"]  # as `diffembed serve` loads the model for an index
    embedder = Embedder.load(
        args.model, precision=settings["precision"], max_length=settings["max_length"]
    )
    app = create_app(embedder, ServeConfig(model_name=args.model.name), index)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    query = urllib.parse.urlencode({"q": args.query, "mode": "hybrid", "k": args.k})
    try:
        with Browser() as browser:
            enable_page_domains(browser)
            browser.send(
                "Emulation.setEmulatedMedia",
                features=[{"name": "prefers-color-scheme", "value": "light"}],
            )
            for width in WIDTHS:
                browser.set_width(width)
                browser.navigate(f"http://127.0.0.1:{port}/?{query}")
                hits = browser.evaluate("document.querySelectorAll('li.hit').length")
                if hits != args.k:
                    sys.exit(f"the page shows {hits} hits, expected {args.k}")
                path = browser.screenshot(args.out / f"search-{width}.png")
                print(f"{path} ({path.stat().st_size} bytes, {hits} hits)")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
