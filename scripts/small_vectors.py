"""What small vectors cost (issue 31): each model evaluated on the task suites at its full width
and at fractions of it (default 1/2 and 1/4), each stored as float32, int8 and binary
(``diffembed eval --dimensions N --quantize ...``: the code ``index build`` searches with),
with the vector bytes per document and the top-10 overlap of every search with the model's own
full-width float32 search.

    python scripts/small_vectors.py --model shipped=models/diffembed-tiny \
        --model plain=OUT/plain --model matryoshka=OUT/matryoshka \
        --tasks-root results/cpu/tasks --out WORK --results results/small-vectors

Each model's texts are encoded once (the grid re-cuts and re-quantises the same vectors).
Writes ``--out``/``LABEL__DIMS__QUANTIZE.json`` (``diffembed eval``'s result file per cell),
and ``--results``/small_vectors.json (every row: model, dims, quantize, bytes per document in
memory and on disk and their ratio to float32 at full width, suite scores x100, top-10
overlap) and small_vectors.md (the table).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.eval.evaluate import collect_task_dirs, evaluate_task
from diffembed.eval.models import EmbedderRetriever
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR, bytes_per_vector
from diffembed.eval.retrievers import DenseRetriever, SearchResult
from diffembed.eval.small import SmallVectorRetriever
from diffembed.formats.tasks import load_task
from diffembed.io import atomic_write, write_json
from diffembed.model.model_dir import trained_dims
from diffembed.provenance import provenance
from diffembed.study.analysis import load_scores, suite_score
from diffembed.study.design import SUITE_LABELS, SUITE_ORDER

OVERLAP_K = 10


class CachedEncoder(DenseRetriever):
    """``base``'s encodings, each computed once (the grid's cells cut the same vectors)."""

    def __init__(self, base: DenseRetriever) -> None:
        super().__init__(base.show_progress)
        self.base, self.name, self.token_unit = base, base.name, base.token_unit
        self.embedder = getattr(base, "embedder", None)
        self.path = getattr(base, "path", None)
        self.cache: dict[tuple, tuple[np.ndarray, int]] = {}

    def describe(self) -> dict[str, Any]:
        return self.base.describe()

    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        key = (tuple(texts), instruction, role)
        if key not in self.cache:
            self.cache[key] = self.base._encode(texts, instruction, role)
        return self.cache[key]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.base.token_lengths(texts)


class RecordingRetriever(SmallVectorRetriever):
    """A cell of the grid that keeps the top ``OVERLAP_K`` of every search, in order."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tops: list[dict[str, list[str]]] = []

    def search(self, *args: Any, **kw: Any) -> SearchResult:
        result = super().search(*args, **kw)
        self.tops.append({q: list(run)[:OVERLAP_K] for q, run in result.run.items()})
        return result


def overlap(tops: list[dict[str, list[str]]], reference: list[dict[str, list[str]]]) -> float:
    """Mean over every search's queries of |top-k ∩ reference top-k| / k (nan: no search)."""
    values = [
        len(set(top[q]) & set(ref[q])) / max(len(ref[q]), 1)
        for top, ref in zip(tops, reference, strict=True)
        for q in ref
    ]
    return float(np.mean(values)) if values else float("nan")


def grid(full: int, fractions: Sequence[Fraction]) -> list[tuple[int, str]]:
    """``(dims, quantize)`` cells: the full width then each fraction, each as every quantize."""
    widths = [full] + [int(full * f) for f in fractions]
    for f, w in zip(fractions, widths[1:], strict=True):
        if w < 1 or full * f != w:
            raise SystemExit(f"--fractions {f}: {full} x {f} is not a whole number of dimensions")
    return [(w, q) for w in dict.fromkeys(widths) for q in QUANTIZE]


def evaluate_cell(
    base: CachedEncoder, tasks: list[Any], dims: int, quantize: str, out: Path, args: Any
) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    """Evaluate one cell on every task (``evaluate_task``); write its result file."""
    full = base.embedder.dim if base.embedder is not None else dims
    cell = RecordingRetriever(base, None if dims == full else dims, quantize, args.rescore_factor)
    start = time.time()
    records = [
        # where the task is, as ``diffembed eval`` records it (study.analysis reads it)
        {**evaluate_task(cell, task, args.top_k), "task_dir": str(task.path.resolve())}
        for task in tasks
    ]
    summary = {"model": cell.describe(), "tasks": records, "provenance": provenance(start)}
    write_json(out, summary)
    return summary, cell.tops


def model_rows(label: str, path: Path, tasks: list[Any], args: Any) -> list[dict[str, Any]]:
    """Every cell of one model: bytes per document, suite scores, top-10 overlap."""
    base = CachedEncoder(
        EmbedderRetriever.load(
            path, args.max_length, args.batch_tokens, args.precision, args.device
        )
    )
    full = base.embedder.dim
    rows, reference = [], None
    for dims, quantize in grid(full, args.fractions):
        out = args.out / f"{label}__{dims}__{quantize}.json"
        _, tops = evaluate_cell(base, tasks, dims, quantize, out, args)
        reference = tops if reference is None else reference  # the first cell: full float32
        scores = load_scores([out])
        size = bytes_per_vector(dims, quantize)
        rows.append(
            {
                "model": label,
                "path": str(path),
                "trained_dims": trained_dims(path),
                "dims": dims,
                "quantize": quantize,
                "bytes_per_doc": size,
                "bytes_ratio": size["in_memory"] / (4 * full),
                "suites": {
                    s: 100 * suite_score(scores, s, None)
                    for s in SUITE_ORDER
                    if any(k.startswith(f"{s}/") for k in scores)
                },
                f"top{OVERLAP_K}_overlap": overlap(tops, reference),
                "result": out.name,
            }
        )
        print(f"{label} {dims} {quantize}: {rows[-1]['suites']}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` (suite scores x100; p-MRR for instruction following)."""
    suites = [s for s in SUITE_ORDER if any(s in r["suites"] for r in rows)]
    head = ["model", "dims", "vectors", "bytes/doc (memory)", "x float32"]
    head += [SUITE_LABELS[s] for s in suites] + [f"top-{OVERLAP_K} overlap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        trained = " (trained)" if r["dims"] in r["trained_dims"] else ""
        cells = [r["model"], f"{r['dims']}{trained}", r["quantize"].replace("none", "float32")]
        disk = r["bytes_per_doc"]["on_disk"] - r["bytes_per_doc"]["in_memory"]
        cells.append(f"{r['bytes_per_doc']['in_memory']}" + (f" (+{disk} on disk)" if disk else ""))
        cells.append(f"{r['bytes_ratio']:.3f}")
        cells += [f"{r['suites'][s]:.1f}" if s in r["suites"] else "–" for s in suites]
        cells.append(f"{r[f'top{OVERLAP_K}_overlap']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="LABEL=DIR",
        help="a model directory and its label in the table (repeat)",
    )
    p.add_argument("--tasks-root", type=Path, required=True, help="ROOT/<suite>/<task>/")
    p.add_argument("--suite", default="all", help="one suite, or all (default)")
    p.add_argument("--fractions", default="1/2,1/4", help="widths besides the full one")
    p.add_argument("--rescore-factor", type=int, default=RESCORE_FACTOR)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="folder of the per-cell results")
    p.add_argument("--results", type=Path, required=True, help="folder of the table")
    args = p.parse_args(argv)
    args.fractions = [Fraction(f) for f in args.fractions.split(",") if f.strip()]
    models = []
    for spec in args.model:
        label, sep, path = spec.partition("=")
        if not sep or not label or not Path(path).is_dir():
            p.error(f"--model {spec!r}: give LABEL=DIR with an existing model directory")
        models.append((label, Path(path)))
    args.model = models
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    tasks = [load_task(d) for d in collect_task_dirs(args.tasks_root, args.suite, [])]
    if not tasks:
        raise SystemExit(f"--tasks-root {args.tasks_root}: no tasks")
    rows = [row for label, path in args.model for row in model_rows(label, path, tasks, args)]
    record = {
        "rows": rows,
        "tasks": [t.key for t in tasks],
        "settings": {
            "fractions": [str(f) for f in args.fractions],
            "rescore_factor": args.rescore_factor,
            "top_k": args.top_k,
            "max_length": args.max_length,
            "precision": args.precision,
        },
        "provenance": provenance(start, [sys.executable, *sys.argv]),
    }
    write_json(args.results / "small_vectors.json", record)
    with atomic_write(args.results / "small_vectors.md") as f:
        f.write(table(rows))
    return record


if __name__ == "__main__":
    main()
