"""``diffembed corpus``, ``diffembed tasks`` and ``diffembed pairs``: the data verbs.

* ``corpus build`` / ``corpus sources``: text corpora from installed Debian packages
  (:mod:`diffembed.data.corpus`);
* ``tasks build``: evaluation task folders from a corpus's eval split
  (:mod:`diffembed.data.tasks`);
* ``pairs build``: training pairs with hard negatives from a corpus's finetune split
  (:mod:`diffembed.data.pairs.build`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from diffembed.cli.options import add_no_progress
from diffembed.data.corpus.build import (
    DEFAULT_FRACTIONS,
    DEFAULT_MIN_DOCS,
    CorpusTooSmallError,
    build_corpus,
)
from diffembed.data.corpus.sources import SOURCES, package_files
from diffembed.data.pairs.build import (
    DEFAULT_HARD_NEGATIVES,
    DEFAULT_MAX_DOC_TOKENS,
    PAIR_SPLITS,
    build_pairs,
)
from diffembed.data.pairs.context import DEFAULT_PROBLEMS_PER_CONCEPT
from diffembed.data.pairs.mining import DEFAULT_MINER_MAX_RATIO, DEFAULT_MINER_SKIP
from diffembed.data.pairs.sources import INSTRUCTIONS, TASKS
from diffembed.data.tasks.build import SUITES, build_all
from diffembed.data.tasks.common import TaskSummary
from diffembed.io import check_output_file, check_writable

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ corpus
def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_corpus_build_options(build: argparse.ArgumentParser) -> None:
    build.add_argument("--out", required=True, help="output directory (created if missing)")
    build.add_argument(
        "--sources",
        type=_names,
        default=None,
        help="comma-separated source names or package names (default: all of "
        + ", ".join(sorted(SOURCES))
        + ")",
    )
    build.add_argument(
        "--min-docs",
        type=int,
        default=DEFAULT_MIN_DOCS,
        help=f"fail if fewer documents are extracted in total (default {DEFAULT_MIN_DOCS})",
    )
    build.add_argument(
        "--fractions",
        type=_floats,
        default=list(DEFAULT_FRACTIONS),
        help="pretrain,finetune,eval shares of documents, summing to 1 (default 0.8,0.1,0.1)",
    )
    build.add_argument(
        "--salt", default="", help="string mixed into the split hash to draw other splits"
    )
    build.add_argument(
        "--root", default="/", help="filesystem root holding the installed packages (default /)"
    )
    build.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel man-page renderers (default: number of CPUs)",
    )
    build.set_defaults(func=run_corpus_build)


def add_corpus_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``corpus`` verb (sub-verbs ``build`` and ``sources``) on ``subparsers``.

    Each sub-verb sets ``func`` (call it as ``args.func(args)``; it returns an exit code).
    """
    corpus = subparsers.add_parser(
        "corpus",
        help="build text corpora from installed Debian packages",
        description="Build text corpora (JSONL documents split by document) from Debian packages.",
    )
    verbs = corpus.add_subparsers(dest="corpus_command", metavar="{build,sources}")
    verbs.required = True
    build = verbs.add_parser(
        "build",
        help="extract documents and write pretrain/finetune/eval JSONL plus report.json",
        description="Extract clean documents from the installed packages and write "
        "pretrain.jsonl, finetune.jsonl, eval.jsonl and report.json into --out.",
    )
    _add_corpus_build_options(build)
    sources = verbs.add_parser(
        "sources",
        help="list the corpus sources, their Debian packages and whether they are installed",
        description="List the corpus sources, their Debian packages and install status.",
    )
    sources.add_argument(
        "--root", default="/", help="filesystem root holding the installed packages (default /)"
    )
    sources.set_defaults(func=run_corpus_sources)
    return corpus


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_corpus_build(args: argparse.Namespace) -> int:
    """Run ``corpus build``; exits with a message when the corpus is too small."""
    _ensure_logging()
    check_writable(args.out, into=True)
    try:
        build_corpus(
            args.out,
            sources=args.sources,
            min_docs=args.min_docs,
            fractions=args.fractions,
            root=args.root,
            workers=args.workers,
            salt=args.salt,
        )
    except (CorpusTooSmallError, ValueError) as exc:
        raise SystemExit(f"diffembed corpus build: error: {exc}") from exc
    return 0


def run_corpus_sources(args: argparse.Namespace) -> int:
    """Run ``corpus sources``: print one line per source."""
    for name in sorted(SOURCES):
        src = SOURCES[name]
        status = [
            f"{p}{'' if package_files(p, args.root) is not None else ' (missing)'}"
            for p in src.packages
        ]
        sys.stdout.write(f"{name:<17} {src.format:<8} {' '.join(status)}\n")
    return 0


# ------------------------------------------------------------------------------ tasks
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
    check_writable(args.out, into=True)
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


# ------------------------------------------------------------------------------ pairs
def _task_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in INSTRUCTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown)}; known: {', '.join(INSTRUCTIONS)}"
        )
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _add_miner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--miner-skip",
        type=int,
        default=DEFAULT_MINER_SKIP,
        help="with --miner: pass over this many top-ranked non-positives, likely false "
        f"negatives (default: {DEFAULT_MINER_SKIP})",
    )
    p.add_argument(
        "--miner-max-ratio",
        type=float,
        default=DEFAULT_MINER_MAX_RATIO,
        help="with --miner: drop candidates more similar than this times the positive's "
        f"similarity (default: {DEFAULT_MINER_MAX_RATIO})",
    )
    p.add_argument(
        "--miner-device", default="cpu", help="with --miner: torch device (default: cpu)"
    )


def _add_pairs_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, type=Path, help="corpus directory (finetune.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="pairs JSONL to write")
    p.add_argument(
        "--split",
        choices=PAIR_SPLITS,
        default="finetune",
        help="corpus split to build from: finetune, or pretrain for ~8x more documents "
        "(problem-concept comes from the finetune split only; default: finetune)",
    )
    p.add_argument(
        "--miner",
        type=Path,
        help="model directory to re-mine hard negatives with (default: BM25 negatives)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument(
        "--max-per-task", type=int, help="cap on pairs per task, a seeded sample (default: all)"
    )
    p.add_argument(
        "--hard-negatives",
        type=int,
        default=DEFAULT_HARD_NEGATIVES,
        help=f"hard negatives per pair (default: {DEFAULT_HARD_NEGATIVES})",
    )
    p.add_argument(
        "--max-doc-tokens",
        type=int,
        default=DEFAULT_MAX_DOC_TOKENS,
        help="cut positives and negatives after this many whitespace tokens, 0 = never "
        f"(default: {DEFAULT_MAX_DOC_TOKENS})",
    )
    p.add_argument(
        "--tasks",
        type=_task_list,
        help=f"comma-separated task types to build (default: {', '.join(TASKS)}; also "
        "sentence-document, the inverse cloze task over every document)",
    )
    _add_miner_options(p)
    p.add_argument(
        "--problems-per-concept",
        type=int,
        default=DEFAULT_PROBLEMS_PER_CONCEPT,
        help="generated problems per catalogue concept for problem-concept "
        f"(default: {DEFAULT_PROBLEMS_PER_CONCEPT})",
    )
    p.add_argument(
        "--eval-seeds",
        type=_ints,
        default=[0],
        help="comma-separated seeds of the evaluation task builds whose concept problems are "
        "never reproduced (default: 0)",
    )
    add_no_progress(p)
    p.set_defaults(func=run_pairs_build)


def add_pairs_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``pairs`` verb (sub-verb ``build``) on a ``diffembed`` sub-parser set."""
    p = subparsers.add_parser(
        "pairs",
        help="build training pairs for contrastive fine-tuning",
        description="Training pairs {query, positive, negatives, instruction, task}.",
    )
    verbs = p.add_subparsers(dest="pairs_command", metavar="{build}")
    verbs.required = True
    build = verbs.add_parser(
        "build",
        help="build pairs with BM25 hard negatives from a corpus's finetune split",
        description="Build training pairs of several task types from the finetune split of a "
        "corpus, with BM25 hard negatives (optionally re-mined with a model); writes OUT and "
        "OUT's <stem>.report.json.",
    )
    _add_pairs_build_options(build)
    return p


def run_pairs_build(args: argparse.Namespace) -> int:
    """The ``pairs build`` verb; returns the exit status."""
    check_output_file(args.out)  # and its report, written beside it
    build_pairs(
        args.corpus,
        args.out,
        seed=args.seed,
        hard_negatives=args.hard_negatives,
        max_per_task=args.max_per_task,
        max_doc_tokens=args.max_doc_tokens,
        tasks=args.tasks,
        miner=args.miner,
        miner_skip=args.miner_skip,
        miner_max_ratio=args.miner_max_ratio,
        miner_device=args.miner_device,
        problems_per_concept=args.problems_per_concept,
        eval_seeds=args.eval_seeds,
        show_progress=not args.no_progress,
        split=args.split,
    )
    return 0
