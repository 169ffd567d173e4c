"""``diffembed demo``: search and evaluate with a shipped embedding model on any machine.

The collection is the documentation of the Python standard library as ``pydoc`` renders it, so it
exists wherever Python does. The demo

1. renders one document per standard-library module (``pydoc`` plain text) and builds a small
   long-document retrieval task from them: each module's one-line synopsis -> its page with
   that line removed (a BEIR folder);
2. indexes those pages with the model (:mod:`diffembed.index`, which keeps BM25 beside the
   vectors) and shows the top hits of dense, BM25 and hybrid search side by side
   (:func:`diffembed.index.search.retrieve`) for a fixed list of queries written before the
   model existed and for synopsis queries picked by position in the task (every k-th module),
   never by how well the model answers them;
3. evaluates dense, BM25 and hybrid on the task with ``diffembed eval --retriever``'s code and
   prints one table (nDCG@10, recall@10, MRR@10).

Everything printed is also written to ``OUT/demo.txt``; the table and the hits to
``OUT/demo.json``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pydoc
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffembed.eval.fusion import DEFAULT_ALPHA, fusion_label

if TYPE_CHECKING:
    from diffembed.formats.tasks import Task
    from diffembed.index.search import Hit
    from diffembed.index.store import VectorIndex
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("models/diffembed-tiny")
QUERIES = (
    "parse command line options and arguments",
    "compress and decompress data in gzip format",
    "run a child process and read its output",
    "regular expression matching",
    "send an email message over SMTP",
)
MODES = ("dense", "bm25", "hybrid")
SYNOPSIS_QUERIES = 5  # synopsis queries shown: every k-th of the task, k = n_queries // 5
HITS = 5  # hits shown per mode
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


def synopsis_queries(task: Task, n: int = SYNOPSIS_QUERIES) -> list[tuple[str, str]]:
    """``(synopsis, module)`` of the task's queries 0, k, 2k, ... (``k = len // n``, at most
    ``n``): a rule on positions in the task (modules sorted by name), blind to any result."""
    step = max(1, len(task.queries) // max(1, n))
    picked = task.queries[::step][:n]
    return [(q.text, next(iter(task.qrels[q.id]))) for q in picked]


def side_by_side(
    index: VectorIndex,
    embedder: Embedder,
    queries: Sequence[str],
    instruction: str | None,
    k: int = HITS,
    alpha: float | None = DEFAULT_ALPHA,
) -> dict[str, list[list[Hit]]]:
    """Mode -> the top ``k`` hits of each query, by index search's one path (``retrieve``);
    hybrid ``alpha``: the weight of dense, None: reciprocal-rank fusion (k = 60)."""
    from diffembed.index.search import retrieve

    vectors = embedder.encode_queries(list(queries), instruction)
    return {
        mode: retrieve(index, None if mode == "bm25" else vectors, queries, k, mode, alpha)
        for mode in MODES
    }


def format_block(
    title: str, hits: dict[str, list[Hit]], hybrid: str, target: str | None = None
) -> list[str]:
    """One query's hits as three columns (rank, module, score per mode); ``*`` marks
    ``target``, the page the query was taken from."""
    heads = {"dense": "dense", "bm25": "bm25", "hybrid": f"hybrid ({hybrid})"}
    lines = [title, "  rank  " + "".join(f"{heads[m]:<30}" for m in MODES).rstrip()]
    for rank in range(max(len(h) for h in hits.values())):
        cells = []
        for mode in MODES:
            if rank >= len(hits[mode]):
                cells.append(" " * 30)
                continue
            hit = hits[mode][rank]
            mark = "*" if hit.id == target else " "
            cells.append(f"{mark}{hit.id:<19.19} {hit.score:8.4f} ")
        lines.append(f"  {rank + 1:>4}  " + "".join(cells).rstrip())
    return lines


def evaluate_modes(
    model: Path, task: Path, out: Path, alpha: float | None = DEFAULT_ALPHA
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Dense, BM25 and hybrid on ``task`` by ``evaluate_model`` (``diffembed eval
    --retriever``; hybrid ``alpha``: the weight of dense, None: reciprocal-rank fusion (k = 60));
    returns one table row per mode and the hybrid retriever's description."""
    from diffembed.eval.evaluate import EvalSettings, evaluate_model

    command = ["diffembed", "demo", "--model", str(model)]
    command += (
        ["--fusion", "rrf"] if alpha is None else ["--fusion", "convex", "--alpha", f"{alpha:g}"]
    )
    rows, hybrid = [], {}
    for mode in MODES:
        summary = evaluate_model(
            model,
            [task],
            out / f"eval-{mode}.json",
            EvalSettings(retriever=mode, alpha=alpha if mode == "hybrid" else None),
            show_progress=False,
            command=command,
        )
        (record,) = summary["tasks"]
        metrics = record["metrics"]
        rows.append(
            {
                "retriever": mode,
                "name": summary["model"]["name"],
                "hash": summary["model"]["hash"],
                "ndcg_at_10": 100 * metrics["ndcg_at_10"],
                "recall_at_10": 100 * metrics["recall_at_10"],
                "mrr_at_10": 100 * metrics["mrr_at_10"],
                "n_queries": record["n_queries"],
                "n_docs": record["n_docs"],
                "wall_time_s": record["provenance"]["wall_time_s"],
            }
        )
        if mode == "hybrid":
            hybrid = summary["model"]
    return rows, hybrid


def format_table(rows: list[dict[str, Any]], model: Path, fusion: str) -> list[str]:
    """The three retrievers' scores (x100) as a Markdown table with its model and fusion."""
    first = rows[0]
    lines = [
        f"## stdlib-synopsis: {first['n_queries']} synopsis queries, {first['n_docs']} pages "
        "(scores x100)",
        f"model: {model} ({first['hash'][:19]}); hybrid: {fusion} of dense and BM25",
        "",
        "| Retriever | nDCG@10 | Recall@10 | MRR@10 | Time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = {"dense": f"dense ({model.name})", "bm25": "bm25", "hybrid": f"hybrid ({fusion})"}
        lines.append(
            f"| {name[r['retriever']]} | {r['ndcg_at_10']:.2f} | {r['recall_at_10']:.2f} "
            f"| {r['mrr_at_10']:.2f} | {r['wall_time_s']:.1f} |"
        )
    lines.append(
        "Recall@10: share of queries whose page is in the top 10 (each has one relevant page)."
    )
    return lines


def run_demo(
    model: Path,
    out: Path,
    limit: int = 250,
    show_progress: bool = True,
    alpha: float | None = DEFAULT_ALPHA,
) -> int:
    """Index the stdlib docs with ``model``, search three ways, evaluate three ways (hybrid
    ``alpha``: the weight of dense, None: reciprocal-rank fusion (k = 60)); prints everything
    and writes ``out/demo.txt`` and ``out/demo.json``; returns 0."""
    from diffembed.eval.fusion import check_alpha
    from diffembed.formats.tasks import load_task
    from diffembed.index.build import build_index
    from diffembed.io import atomic_write, write_json
    from diffembed.model.embedder import Embedder
    from diffembed.model.model_dir import ModelDir

    start = time.time()
    alpha = check_alpha(alpha)
    ModelDir.open(model, what="embedding model directory").require_embedding_model()
    printed: list[str] = []

    def say(*lines: str) -> None:
        for line in lines:
            print(line)
            printed.append(line)

    docs = stdlib_documents(limit)
    task = load_task(write_synopsis_task(docs, out / "tasks" / "longdoc" / "stdlib-synopsis"))
    say(
        f"collection: {len(docs)} Python standard-library modules rendered by pydoc; each "
        "page without its module's one-line synopsis (the evaluation task's documents)"
    )
    embedder = Embedder.load(model)
    index = build_index(
        task.corpus,
        out / "index",
        model,
        embedder=embedder,
        overwrite=True,
        show_progress=show_progress,
    )
    say(f"index: {index.ntotal} vectors ({index.describe_mode()}); BM25 over the same pages")
    rows, hybrid = evaluate_modes(model, task.path, out, alpha)
    fusion = fusion_label(hybrid["settings"]["fusion"])
    shown = _show_queries(say, index, embedder, task, fusion, alpha)
    index.close()
    say("", *format_table(rows, model, fusion))
    wall = time.time() - start
    say(f"demo finished in {wall:.0f} s (wall time); outputs in {out}")
    result = {
        "model": str(model),
        "model_hash": rows[0]["hash"],
        "fusion": hybrid["settings"]["fusion"],
        "task": {"name": task.name, "queries": rows[0]["n_queries"], "docs": rows[0]["n_docs"]},
        "table": rows,
        "queries": shown,
        "wall_time_s": wall,
    }
    write_json(out / "demo.json", result)
    with atomic_write(out / "demo.txt") as f:
        f.write("\n".join(printed) + "\n")
    return 0


def _show_queries(
    say: Callable[..., None],
    index: VectorIndex,
    embedder: Embedder,
    task: Task,
    fusion: str,
    alpha: float | None,
) -> list[dict[str, Any]]:
    """Print the side-by-side hits of the fixed and the synopsis queries; returns them as
    JSON-ready records."""
    picked = synopsis_queries(task)
    step = max(1, len(task.queries) // SYNOPSIS_QUERIES)
    asked = [(q, "fixed", None) for q in QUERIES] + [(q, "synopsis", t) for q, t in picked]
    hits = side_by_side(index, embedder, [q for q, _, _ in asked], task.instruction, HITS, alpha)
    say(
        "",
        f"queries: the {len(QUERIES)} fixed example queries (written before the model existed), "
        f"then {len(picked)} synopsis queries of the task: every k-th (k = {step}) in "
        "module-name order from the first, whatever the results; * marks the page a synopsis was taken from",
    )
    shown = []
    for i, (query, source, target) in enumerate(asked):
        by_mode = {m: hits[m][i] for m in MODES}
        title = f"query ({source}): {query}" + (f"  [page: {target}]" if target else "")
        say("", *format_block(title, by_mode, fusion, target))
        shown.append(
            {
                "query": query,
                "source": source,
                "target": target,
                "hits": {
                    m: [{"rank": h.rank, "id": h.id, "score": h.score} for h in by_mode[m]]
                    for m in MODES
                },
            }
        )
    return shown
