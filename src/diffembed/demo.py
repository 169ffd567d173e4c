"""``diffembed demo``: search and evaluate with a shipped embedding model on any machine.

The collection is the documentation of the Python standard library as ``pydoc`` renders it, so it
exists wherever Python does. The demo

1. renders one document per standard-library module (``pydoc`` plain text);
2. builds a vector index with the model (:mod:`diffembed.index`) and runs example queries;
3. builds a small long-document retrieval task from the same pages (each module's one-line
   synopsis -> its page with that line removed; a BEIR folder) and evaluates the model and BM25
   on it, printing the table.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pydoc
import sys
import time
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("models/diffembed-tiny")
QUERIES = (
    "parse command line options and arguments",
    "compress and decompress data in gzip format",
    "run a child process and read its output",
    "regular expression matching",
    "send an email message over SMTP",
)
# Private, platform-specific or noisy modules are skipped; the rest of sys.stdlib_module_names
# that import cleanly and have a docstring make the collection.
_SKIP_PREFIXES = (
    "_",
    "idlelib",
    "test",
    "tkinter",
    "turtle",
    "lib2to3",
    "ensurepip",
    "antigravity",
    "this",
)


def stdlib_documents(limit: int = 250, max_chars: int = 20000) -> list[dict[str, Any]]:
    """One ``{_id, title, text, synopsis}`` per importable standard-library module, sorted by
    name: the pydoc plain-text page (cut at ``max_chars`` characters) and the first docstring
    line as the synopsis."""
    names = sorted(
        n for n in getattr(sys, "stdlib_module_names", ()) if not n.startswith(_SKIP_PREFIXES)
    )
    docs: list[dict[str, Any]] = []
    for name in names:
        if len(docs) >= limit:
            break
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                module = __import__(name)
                text = pydoc.render_doc(module, renderer=pydoc.plaintext)
        except Exception:  # noqa: BLE001 - any module that does not import or render is skipped
            continue
        synopsis = ((module.__doc__ or "").strip().splitlines() or [""])[0].strip()
        docs.append({"_id": name, "title": name, "text": text[:max_chars], "synopsis": synopsis})
    if not docs:
        raise RuntimeError("no standard-library module could be rendered with pydoc")
    return docs


def write_synopsis_task(docs: list[dict[str, Any]], out: Path) -> Path:
    """A BEIR task folder: module synopsis -> module page (synopsis line removed), nDCG@10."""
    from diffembed.formats.task_writer import write_task

    usable = [d for d in docs if len(d["synopsis"].split()) >= 3]
    corpus = []
    for d in docs:
        text = d["text"]
        if d["synopsis"]:
            text = "\n".join(line for line in text.split("\n") if d["synopsis"] not in line)
        corpus.append({"_id": d["_id"], "title": "", "text": text})
    write_task(
        out,
        name="stdlib-synopsis",
        suite="longdoc",
        kind="retrieval",
        metric="ndcg_at_10",
        instruction="Given the one-line summary of a Python module, retrieve the module's "
        "documentation",
        description="Python standard-library module docstring summary -> its pydoc page with "
        "the summary line removed (the demo's task; built on this machine).",
        corpus=corpus,
        queries=[{"_id": f"q-{d['_id']}", "text": d["synopsis"]} for d in usable],
        qrels={f"q-{d['_id']}": {d["_id"]: 1} for d in usable},
    )
    return out


def run_demo(model: Path, out: Path, limit: int = 250, show_progress: bool = True) -> int:
    """Index the stdlib docs with ``model``, search, evaluate; prints everything; returns 0."""
    from diffembed.eval.evaluate import evaluate_model, markdown_table
    from diffembed.formats.corpus import Document
    from diffembed.index.build import build_index
    from diffembed.index.search import Searcher
    from diffembed.model.embedder import Embedder

    start = time.time()
    if not (model / "modules.json").exists():
        raise FileNotFoundError(f"{model}: not an embedding model directory (no modules.json)")
    docs = stdlib_documents(limit)
    print(f"collection: {len(docs)} Python standard-library modules rendered by pydoc")
    embedder = Embedder.load(model)
    index = build_index(
        [Document(id=d["_id"], text=d["text"], title=d["title"]) for d in docs],
        out / "index",
        model,
        embedder=embedder,
        overwrite=True,
        show_progress=show_progress,
    )
    truncated = index.mode["truncated"]  # counted when the index embedded the documents
    print(
        f"index: {index.ntotal} vectors ({index.describe_mode()}), {truncated} documents "
        f"longer than max_length {embedder.max_length} tokens were truncated"
    )
    searcher = Searcher(index, embedder)
    for query in QUERIES:
        print(f"\nquery: {query}")
        for rank, hit in enumerate(searcher.search(query, k=3), start=1):
            print(f"  {rank}. {hit.id:<18} {hit.score:.3f}")
    task = write_synopsis_task(docs, out / "tasks" / "longdoc" / "stdlib-synopsis")
    records = []
    for name in (str(model), "bm25"):
        label = "bm25" if name == "bm25" else model.name
        summary = evaluate_model(
            name,
            [task],
            out / f"eval-{label}.json",
            show_progress=False,
            command=["diffembed", "demo", "--model", str(model)],
        )
        for rec in summary["tasks"]:
            records.append({**rec, "task": f"{rec['task']} [{label}]"})
    print()
    table = markdown_table(records, title="stdlib-synopsis (nDCG@10 x100)")
    # Only the per-row table: its "mean per suite" part would average the model with BM25.
    print(table.split("\n| Suite | Tasks |", 1)[0].rstrip())
    print(f"demo finished in {time.time() - start:.0f} s; outputs in {out}")
    return 0
