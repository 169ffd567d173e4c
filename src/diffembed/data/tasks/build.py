"""``build_suite`` / ``build_all``: run the suite builders into ``out_root/<suite>/``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diffembed.data.tasks import instruct, longdoc, reasoning, traditional
from diffembed.data.tasks.common import BuildContext, TaskSummary, make_meter
from diffembed.data.tasks.eval_corpus import EvalCorpus
from diffembed.errors import ConfigError
from diffembed.io import atomic_dir, write_json

logger = logging.getLogger(__name__)

SUITES: tuple[str, ...] = ("longdoc", "reasoning", "instruct", "traditional")
_BUILDERS: dict[str, Callable[[BuildContext, Path], list[TaskSummary]]] = {
    "longdoc": longdoc.build,
    "reasoning": reasoning.build,
    "instruct": instruct.build,
    "traditional": traditional.build,
}


def _context(
    corpus: str | Path | EvalCorpus,
    seed: int,
    tokenizer: Any,
    max_length_tokens: int,
    measure_bm25: bool,
    max_queries: int | None = None,
    max_docs: int | None = None,
) -> BuildContext:
    if max_length_tokens < 64:
        raise ConfigError(f"max_length_tokens must be at least 64, got {max_length_tokens}")
    for label, cap in (("max_queries", max_queries), ("max_docs", max_docs)):
        if cap is not None and cap < 10:
            raise ConfigError(f"{label} must be at least 10 (or None), got {cap}")
    eval_corpus = corpus if isinstance(corpus, EvalCorpus) else EvalCorpus.load(corpus)
    return BuildContext(
        corpus=eval_corpus,
        seed=seed,
        meter=make_meter(tokenizer),
        max_length_tokens=max_length_tokens,
        measure_bm25=measure_bm25,
        max_queries=max_queries,
        max_docs=max_docs,
    )


def _build_into(ctx: BuildContext, suite: str, out_root: Path) -> list[TaskSummary]:
    start = time.perf_counter()
    with atomic_dir(out_root / suite) as tmp:
        summaries = _BUILDERS[suite](ctx, tmp)
        write_json(
            tmp / "summary.json",
            {
                "suite": suite,
                "seed": ctx.seed,
                "length_unit": ctx.meter.unit,
                "max_length_tokens": ctx.max_length_tokens,
                "max_queries": ctx.max_queries,
                "max_docs": ctx.max_docs,
                "eval_sha256": ctx.corpus.eval_sha256,
                "tasks": [s.row() for s in summaries],
            },
        )
    logger.info(
        "%s: %d tasks -> %s in %.1f s",
        suite,
        len(summaries),
        out_root / suite,
        time.perf_counter() - start,
    )
    return summaries


def build_suite(
    suite: str,
    corpus_dir: str | Path | EvalCorpus,
    out_root: str | Path,
    seed: int = 0,
    tokenizer: Any = None,
    max_length_tokens: int = 32768,
    measure_bm25: bool = True,
    max_queries: int | None = None,
    max_docs: int | None = None,
) -> list[TaskSummary]:
    """Build one suite's tasks into ``out_root/<suite>/`` (replacing that folder atomically).

    Args:
        suite: ``longdoc``, ``reasoning``, ``instruct`` or ``traditional``.
        corpus_dir: a corpus directory (``eval.jsonl``; the other splits, when present, are
            read only to drop eval documents whose text they also contain), or a loaded
            :class:`~diffembed.data.tasks.eval_corpus.EvalCorpus`.
        out_root: the tasks root.
        seed: the seed of every random choice.
        tokenizer: None (lengths in whitespace tokens), a tokenizer directory or a tokenizer
            object (passkey/needle lengths in its tokens).
        max_length_tokens: the longest passkey/needle length built, and the cap on real long
            documents (whitespace tokens).
        measure_bm25: record each task's BM25 score in task.json.
        max_queries: cap on the queries of every task (None: each builder's default).
        max_docs: cap on the sampled documents and distractors of every task (None: defaults).

    Returns:
        One :class:`~diffembed.data.tasks.common.TaskSummary` per task written.
    """
    if suite not in SUITES:
        raise ConfigError(f"suite must be one of {SUITES}, got {suite!r}")
    ctx = _context(
        corpus_dir, seed, tokenizer, max_length_tokens, measure_bm25, max_queries, max_docs
    )
    return _build_into(ctx, suite, Path(out_root))


def build_all(
    corpus_dir: str | Path | EvalCorpus,
    out_root: str | Path,
    seed: int = 0,
    tokenizer: Any = None,
    max_length_tokens: int = 32768,
    measure_bm25: bool = True,
    suites: Sequence[str] = SUITES,
    max_queries: int | None = None,
    max_docs: int | None = None,
) -> list[TaskSummary]:
    """Build every suite (or ``suites``) into ``out_root``; see :func:`build_suite`."""
    for suite in suites:
        if suite not in SUITES:
            raise ConfigError(f"suite must be one of {SUITES}, got {suite!r}")
    ctx = _context(
        corpus_dir, seed, tokenizer, max_length_tokens, measure_bm25, max_queries, max_docs
    )
    out: list[TaskSummary] = []
    for suite in suites:
        out.extend(_build_into(ctx, suite, Path(out_root)))
    return out
