"""``diffembed tasks build``: build evaluation task folders from a corpus's eval split."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from diffembed.data.tasks.build import SUITES, build_all
from diffembed.data.tasks.common import TaskSummary

logger = logging.getLogger(__name__)


def add_tasks_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tasks build`` on the ``diffembed`` sub-command parser."""
    p = sub.add_parser("tasks", help="build evaluation tasks (BEIR folders)")
    verbs = p.add_subparsers(dest="tasks_verb", metavar="VERB", required=True)
    b = verbs.add_parser(
        "build",
        help="build task folders from the eval split of a corpus",
        description="Build long-document, reasoning, instruction-following and traditional "
        "evaluation tasks as BEIR folders under OUT/<suite>/<task>/, from the eval split only, "
        "reproducibly from --seed; each task.json records provenance and the BM25 score.",
    )
    b.add_argument("--corpus", required=True, type=Path, help="corpus directory (eval.jsonl)")
    b.add_argument("--out", required=True, type=Path, help="tasks root directory")
    b.add_argument(
        "--suite", default="all", choices=[*SUITES, "all"], help="suite to build (default: all)"
    )
    b.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    b.add_argument(
        "--max-length-tokens",
        type=int,
        default=32768,
        help="longest passkey/needle length (256 ... 32768) and cap on real long documents "
        "(default: 32768)",
    )
    b.add_argument(
        "--tokenizer",
        type=Path,
        help="measure passkey/needle lengths in this tokenizer's tokens (default: whitespace)",
    )
    b.add_argument("--no-bm25", action="store_true", help="do not measure BM25 scores")
    b.add_argument(
        "--max-queries", type=int, help="cap on the queries of every task (default: no cap)"
    )
    b.add_argument(
        "--max-docs",
        type=int,
        help="cap on the sampled documents and distractors of every task (default: no cap)",
    )
    b.set_defaults(func=run_tasks_build)


def format_summaries(summaries: list[TaskSummary]) -> str:
    """A plain-text table of built tasks."""
    lines = [
        f"{'suite/task':<34} {'kind':<14} {'queries':>7} {'docs':>6} {'avg tok':>8} "
        f"{'BM25':>7} {'metric':<11} {'s':>6}"
    ]
    for s in summaries:
        bm25 = "-" if s.bm25 is None else f"{s.bm25['main_score']:.3f}"
        lines.append(
            f"{s.suite + '/' + s.name:<34} {s.kind:<14} {s.n_queries:>7} {s.n_docs:>6} "
            f"{s.avg_doc_tokens:>8.0f} {bm25:>7} {s.metric:<11} {s.seconds:>6.1f}"
        )
    return "\n".join(lines)


def run_tasks_build(args: argparse.Namespace) -> int:
    """Run ``diffembed tasks build``; returns the exit status."""
    start = time.perf_counter()
    suites = SUITES if args.suite == "all" else (args.suite,)
    summaries = build_all(
        args.corpus,
        args.out,
        seed=args.seed,
        tokenizer=args.tokenizer,
        max_length_tokens=args.max_length_tokens,
        measure_bm25=not args.no_bm25,
        suites=suites,
        max_queries=args.max_queries,
        max_docs=args.max_docs,
    )
    logger.info(
        "built %d tasks in %.1f s:\n%s",
        len(summaries),
        time.perf_counter() - start,
        format_summaries(summaries),
    )
    return 0
