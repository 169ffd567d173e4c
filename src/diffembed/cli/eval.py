"""``diffembed eval``: evaluate a model directory, BM25 or MiniLM on task suites.

The evaluation itself is :mod:`diffembed.eval.evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffembed.cli.options import add_device, add_dtype, add_max_length, add_no_progress
from diffembed.eval.evaluate import collect_task_dirs, evaluate_model
from diffembed.formats.tasks import SUITES


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diffembed eval``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model, BM25 or MiniLM on task suites",
        description="Evaluate a model directory, bm25 or minilm on evaluation tasks (BEIR "
        "folders with task.json; see diffembed.formats.tasks). Writes OUT (all results with "
        "provenance), OUT.tasks/<suite>__<task>.json as each task finishes, and a Markdown table "
        "beside OUT.",
    )
    p.add_argument(
        "--model", required=True, help="model directory, or bm25, or minilm (./bm25 for a folder)"
    )
    p.add_argument(
        "--suite",
        default="all",
        choices=[*SUITES, "all"],
        help="suite under --tasks-root (default: all)",
    )
    p.add_argument("--tasks-root", type=Path, help="folder of suites: ROOT/<suite>/<task>/")
    p.add_argument(
        "--task-dir",
        type=Path,
        action="extend",
        nargs="+",
        default=[],
        help="task folder(s) to evaluate as well (any suite)",
    )
    p.add_argument("--out", required=True, type=Path, help="result JSON file")
    add_max_length(p)
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=16384,
        help="token budget per encoding batch, rows x longest row (default: 16384)",
    )
    p.add_argument("--top-k", type=int, default=100, help="run depth per query (default: 100)")
    add_dtype(p)
    p.add_argument("--faiss", action="store_true", help="faiss IndexFlatIP top-k (same results)")
    p.add_argument("--seed", type=int, default=0, help="seed recorded with results (default: 0)")
    add_device(p, default=None)
    add_no_progress(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``diffembed eval``; returns the exit status (0)."""
    evaluate_model(
        args.model,
        collect_task_dirs(args.tasks_root, args.suite, args.task_dir),
        args.out,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        dtype=args.dtype,
        device=args.device,
        top_k=args.top_k,
        use_faiss=args.faiss,
        seed=args.seed,
        show_progress=not args.no_progress,
    )
    return 0
