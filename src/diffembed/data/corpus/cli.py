"""``diffembed corpus ...`` command line: ``build`` (write the corpus) and ``sources`` (list the
sources, their Debian packages and whether they are installed)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_corpus_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``corpus`` verb (sub-verbs ``build`` and ``sources``) on ``subparsers``.

    Each sub-verb sets ``func`` (call it as ``args.func(args)``; it returns an exit code).
    """
    from .build import DEFAULT_FRACTIONS, DEFAULT_MIN_DOCS
    from .sources import SOURCES

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
    build.set_defaults(func=run_build)

    sources = verbs.add_parser(
        "sources",
        help="list the corpus sources, their Debian packages and whether they are installed",
        description="List the corpus sources, their Debian packages and install status.",
    )
    sources.add_argument(
        "--root", default="/", help="filesystem root holding the installed packages (default /)"
    )
    sources.set_defaults(func=run_sources)
    return corpus


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_build(args: argparse.Namespace) -> int:
    """Run ``corpus build``; exits with a message when the corpus is too small."""
    from .build import CorpusTooSmallError, build_corpus

    _ensure_logging()
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


def run_sources(args: argparse.Namespace) -> int:
    """Run ``corpus sources``: print one line per source."""
    from .sources import SOURCES, package_files

    for name in sorted(SOURCES):
        src = SOURCES[name]
        status = [
            f"{p}{'' if package_files(p, args.root) is not None else ' (missing)'}"
            for p in src.packages
        ]
        sys.stdout.write(f"{name:<17} {src.format:<8} {' '.join(status)}\n")
    return 0
