"""Training pairs from the ``finetune`` split of a corpus: ``diffembed pairs build``.

Only ``finetune.jsonl`` of the corpus directory is read (every record must say
``"split": "finetune"``), so no text of a pretraining or evaluation document can reach a pair.
``split="pretrain"`` builds the same task types from ``pretrain.jsonl`` instead (about 8x the
documents, for a model that wants more pairs than the finetune split holds; its documents are
the pretraining text, never evaluation text). ``problem-concept`` is not built from it: its
problems come from the concept catalogue, not the corpus, so both splits would give the same
pairs. The ``eval`` split is never read.
The output is the pairs format of :mod:`diffembed.formats.pairs`, one JSON object per line::

    {"query": ..., "positive": ..., "negatives": [...], "instruction": ..., "task": ...}

The task types and their queries, positives and pools are :mod:`diffembed.data.pairs.sources`;
the hard negatives (BM25, or re-mined with a model) are :mod:`diffembed.data.pairs.mining`.

**Length cap.** Positive and candidate documents are cut after ``--max-doc-tokens`` whitespace
tokens (default 2000; 0 = no cap) before mining, keeping their layout; the report counts how
many pool documents, positives and negative slots were cut.

**Determinism.** All choices take the seed (``random.Random`` seeded with strings, stable across
runs and platforms); ordering is by document id. The same corpus, options and library versions
give a byte-identical output. The output is written atomically, and a report (per task: pairs,
mean query/positive/negative tokens, BM25 statistics of the positive and negatives) is logged
and written to ``<out stem>.report.json`` beside it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diffembed.data.documents import document_from_record
from diffembed.data.pairs.context import DEFAULT_PROBLEMS_PER_CONCEPT, PairsContext
from diffembed.data.pairs.mining import (
    DEFAULT_MINER_MAX_RATIO,
    DEFAULT_MINER_SKIP,
    Mined,
    ModelMiner,
    bm25_indexes,
    mine,
    rank_stats,
    round_mean,
)
from diffembed.data.pairs.pools import Candidate, Pool, merge_duplicate_queries, seeded
from diffembed.data.pairs.sources import BUILDERS, INSTRUCTIONS, TASKS
from diffembed.data.tasks.common import word_count
from diffembed.errors import ConfigError, DiffembedError
from diffembed.eval.bm25 import Bm25Index
from diffembed.formats.corpus import Document
from diffembed.formats.pairs import Pair, parse_pair, write_pairs
from diffembed.io import iter_jsonl, write_json

logger = logging.getLogger(__name__)

DEFAULT_HARD_NEGATIVES = 7
DEFAULT_MAX_DOC_TOKENS = 2000


class PairsBuildError(DiffembedError):
    """The corpus cannot be turned into pairs (missing file, wrong split, nothing built)."""


# The corpus splits pairs may come from (never "eval").
PAIR_SPLITS = ("finetune", "pretrain")
# Task types that do not read the corpus documents (built from the finetune split only).
NOT_FROM_CORPUS = ("problem-concept",)


def read_finetune_docs(corpus_dir: str | Path, split: str = "finetune") -> list[Document]:
    """Read ``corpus_dir/<split>.jsonl`` (``finetune`` or ``pretrain``), sorted by id; any record
    of another split raises."""
    if split not in PAIR_SPLITS:
        raise PairsBuildError(f"split {split!r}: pairs come from one of {', '.join(PAIR_SPLITS)}")
    path = Path(corpus_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise PairsBuildError(f"{path}: no such file (build the corpus first)")
    docs: list[Document] = []
    for lineno, rec in iter_jsonl(path, PairsBuildError):
        if rec.get("split") != split:
            raise PairsBuildError(
                f"{path}:{lineno}: record {rec.get('id')!r} has split {rec.get('split')!r}, "
                f"not {split!r}"
            )
        docs.append(document_from_record(rec))
    if not docs:
        raise PairsBuildError(f"{path}: no documents")
    docs.sort(key=lambda d: d.id)
    return docs


# ------------------------------------------------------------------------------ report
def format_report(report: dict[str, Any]) -> str:
    """A few lines per task for the log."""
    lines = [
        f"{'task':<17} {'pairs':>6} {'q tok':>6} {'pos tok':>7} {'negs':>5} "
        f"{'bm25 R@1':>8} {'R@10':>5} {'MRR':>5} {'fill':>5}"
    ]
    for task, t in report["tasks"].items():
        b = t["bm25"]
        lines.append(
            f"{task:<17} {t['pairs']:>6} {t['mean_query_tokens']:>6.1f} "
            f"{t['mean_positive_tokens']:>7.1f} {t['mean_negatives']:>5.2f} "
            f"{b['recall@1']:>8.3f} {b['recall@10']:>5.3f} {b['mrr']:>5.3f} {b['random_fill']:>5}"
        )
    for task, note in report["notes"].items():
        lines.append(f"{task}: {note}")
    c = report["cut"]
    lines.append(
        f"cut at {report['options']['max_doc_tokens']} tokens: {c['pool_documents']} pool "
        f"documents, {c['positives']} positives, {c['negatives']} negative slots"
    )
    return "\n".join(lines)


def report_path(out: str | Path) -> Path:
    """``pairs.jsonl`` -> ``pairs.report.json`` (beside the output)."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix else out.name}.report.json")


def _task_entry(
    task: str,
    records: list[Pair],
    candidates: list[Candidate],
    available: int,
    dropped: int,
    ctx: PairsContext,
    mined: tuple[list[Mined], list[Mined] | None],
) -> dict[str, Any]:
    """The report of one task: counts, mean lengths, and the rank statistics of its mining."""
    bm25_mined, model_mined = mined
    pools = sorted({c.pool.name for c in candidates})
    entry: dict[str, Any] = {
        "instruction": INSTRUCTIONS[task],
        "pairs": len(records),
        "candidates": available,
        "dropped_without_negatives": dropped,
        "pools": {p: len(ctx.pools[p]) for p in pools},
        "mean_query_tokens": round_mean([word_count(p.query) for p in records]),
        "mean_positive_tokens": round_mean([word_count(p.positive) for p in records]),
        "mean_negative_tokens": round_mean([word_count(x) for p in records for x in p.negatives]),
        "mean_negatives": round_mean([len(p.negatives) for p in records]),
        "bm25": rank_stats(bm25_mined),
    }
    if model_mined is not None:
        overlap = [
            len(set(a.negatives) & set(b.negatives)) / max(1, len(b.negatives))
            for a, b in zip(bm25_mined, model_mined, strict=True)
        ]
        entry["model"] = {**rank_stats(model_mined), "overlap_with_bm25": round_mean(overlap)}
    return entry


def _report(
    corpus_dir: str | Path,
    out: Path,
    records: list[Pair],
    docs: list[Document],
    options: dict[str, Any],
    stemmer: str | None,
    model: ModelMiner | None,
    task_reports: dict[str, Any],
    ctx: PairsContext,
    cut: tuple[int, int],
) -> dict[str, Any]:
    """The whole build's report (``wall_s`` is added by the caller)."""
    return {
        "corpus": str(corpus_dir),
        "out": str(out),
        "pairs": len(records),
        "split": options["split"],
        "split_documents": len(docs),
        "documents_per_source": dict(sorted(Counter(d.source for d in docs).items())),
        "options": options,
        "bm25": {
            "library": "bm25s",
            "method": "lucene",
            "k1": 1.5,
            "b": 0.75,
            "stopwords": "en",
            "stemmer": stemmer,
        },
        "miner": model.describe() if model is not None else None,
        "tasks": task_reports,
        "notes": dict(sorted(ctx.notes.items())),
        "cut": {
            "pool_documents": int(sum(sum(p.cut) for p in ctx.pools.values())),
            "positives": cut[0],
            "negatives": cut[1],
        },
    }


# ------------------------------------------------------------------------------ build
def _wanted_tasks(
    hard_negatives: int,
    problems_per_concept: int,
    max_per_task: int | None,
    tasks: Sequence[str] | None,
    split: str = "finetune",
) -> list[str]:
    """Check the options; the task types to build (default :data:`TASKS`, less
    :data:`NOT_FROM_CORPUS` for the pretrain split), in :data:`INSTRUCTIONS` order."""
    if hard_negatives < 1:
        raise ConfigError(f"hard_negatives must be >= 1, got {hard_negatives}")
    if problems_per_concept < 1:
        raise ConfigError(f"problems_per_concept must be >= 1, got {problems_per_concept}")
    if max_per_task is not None and max_per_task < 1:
        raise ConfigError(f"max_per_task must be >= 1, got {max_per_task}")
    wanted = list(TASKS if tasks is None else tasks)
    unknown = [t for t in wanted if t not in INSTRUCTIONS]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; known: {', '.join(INSTRUCTIONS)}")
    if split != "finetune":
        if tasks is not None and any(t in NOT_FROM_CORPUS for t in wanted):
            raise ConfigError(
                f"{', '.join(NOT_FROM_CORPUS)} pairs do not come from corpus documents; "
                "build them from the finetune split"
            )
        wanted = [t for t in wanted if t not in NOT_FROM_CORPUS]
    return [t for t in INSTRUCTIONS if t in wanted]


def _candidates(
    task: str, ctx: PairsContext, max_per_task: int | None
) -> tuple[list[Candidate], int]:
    """The task's candidates (a seeded sample of at most ``max_per_task``) and how many there
    were before sampling."""
    candidates = merge_duplicate_queries(BUILDERS[task](ctx))
    available = len(candidates)
    if max_per_task is not None and available > max_per_task:
        keep = sorted(seeded(ctx.seed, task, "sample").sample(range(available), max_per_task))
        candidates = [candidates[j] for j in keep]
    return candidates, available


def _task_records(
    task: str, candidates: list[Candidate], final: list[Mined]
) -> tuple[list[Pair], int, int, int]:
    """The pairs of one task (validated), the candidates dropped without negatives, and how
    many positives and negative slots were length-capped."""
    records: list[Pair] = []
    dropped = cut_pos = cut_neg = 0
    for c, m in zip(candidates, final, strict=True):
        if not m.negatives:
            dropped += 1
            continue
        rec = {
            "query": c.query,
            "positive": c.pool.texts[c.positive],
            "negatives": [c.pool.texts[i] for i in m.negatives],
            "instruction": INSTRUCTIONS[task],
            "task": task,
        }
        pair = parse_pair(rec, f"{task} pair from {c.origin}")
        cut_pos += int(c.pool.cut[c.positive])
        cut_neg += sum(int(c.pool.cut[i]) for i in m.negatives)
        records.append(pair)
    return records, dropped, cut_pos, cut_neg


def _build_tasks(
    wanted: list[str],
    ctx: PairsContext,
    max_per_task: int | None,
    hard_negatives: int,
    bm25: Callable[[Pool], Bm25Index],
    model: ModelMiner | None,
    show_progress: bool,
) -> tuple[list[Pair], dict[str, Any], tuple[int, int]]:
    """Candidates, mining and pairs of every wanted task: the pairs, the per-task reports, and
    how many positives and negative slots were length-capped."""
    records: list[Pair] = []
    task_reports: dict[str, Any] = {}
    cut_pos = cut_neg = 0
    for task in wanted:
        candidates, available = _candidates(task, ctx, max_per_task)
        if not candidates:
            ctx.notes.setdefault(task, "no pairs: the corpus has no documents of this kind")
            continue
        mined = mine(task, candidates, hard_negatives, ctx.seed, bm25, model, show_progress)
        final = mined[1] if mined[1] is not None else mined[0]
        task_records, dropped, pos, neg = _task_records(task, candidates, final)
        cut_pos, cut_neg = cut_pos + pos, cut_neg + neg
        records.extend(task_records)
        task_reports[task] = _task_entry(
            task, task_records, candidates, available, dropped, ctx, mined
        )
    return records, task_reports, (cut_pos, cut_neg)


def build_pairs(
    corpus_dir: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    hard_negatives: int = DEFAULT_HARD_NEGATIVES,
    max_per_task: int | None = None,
    max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS,
    tasks: Sequence[str] | None = None,
    miner: str | Path | None = None,
    miner_skip: int = DEFAULT_MINER_SKIP,
    miner_max_ratio: float = DEFAULT_MINER_MAX_RATIO,
    miner_device: str = "cpu",
    problems_per_concept: int = DEFAULT_PROBLEMS_PER_CONCEPT,
    eval_seeds: Sequence[int] = (0,),
    show_progress: bool = False,
    split: str = "finetune",
) -> dict[str, Any]:
    """Build training pairs from ``corpus_dir/<split>.jsonl`` and write them to ``out``.

    Args:
        corpus_dir: a corpus directory (``diffembed corpus build``); only ``split`` is read.
        out: the pairs JSONL to write (atomically); the report goes to ``<stem>.report.json``.
        seed: seed of every random choice.
        hard_negatives: negatives per pair (K).
        max_per_task: cap on pairs per task (a seeded sample, kept in id order).
        max_doc_tokens: whitespace-token cap of documents (0 = none).
        tasks: task types to build (default: all of :data:`TASKS`).
        miner: a model directory to re-mine negatives with (see :mod:`.mining`).
        miner_skip, miner_max_ratio: the false-negative guards of model mining.
        miner_device: torch device of the miner.
        problems_per_concept: generated problems per concept (``problem-concept``).
        eval_seeds: seeds of the task builds whose concept-problem queries must not recur.
        show_progress: progress bars.
        split: ``finetune`` (default) or ``pretrain`` (:data:`PAIR_SPLITS`).

    Returns:
        The report (also written as JSON and logged).
    """
    start = time.perf_counter()
    wanted = _wanted_tasks(hard_negatives, problems_per_concept, max_per_task, tasks, split)
    docs = read_finetune_docs(corpus_dir, split)
    logger.info("read %d %s documents from %s", len(docs), split, corpus_dir)
    ctx = PairsContext(
        docs=docs,
        seed=seed,
        max_tokens=max_doc_tokens,
        problems_per_concept=problems_per_concept,
        eval_seeds=tuple(eval_seeds),
    )
    bm25, stemmer = bm25_indexes()
    model = (
        ModelMiner(miner, miner_skip, miner_max_ratio, miner_device, show_progress)
        if miner is not None
        else None
    )
    records, task_reports, cut = _build_tasks(
        wanted, ctx, max_per_task, hard_negatives, bm25, model, show_progress
    )
    if not records:
        raise PairsBuildError(f"{corpus_dir}: no pairs could be built from the {split} split")
    out = write_pairs(out, records)
    options = {
        "split": split,
        "seed": seed,
        "hard_negatives": hard_negatives,
        "max_per_task": max_per_task,
        "max_doc_tokens": max_doc_tokens,
        "tasks": wanted,
        "problems_per_concept": problems_per_concept,
        "eval_seeds": list(eval_seeds),
    }
    report = _report(
        corpus_dir, out, records, docs, options, stemmer, model, task_reports, ctx, cut
    )
    report["wall_s"] = round(time.perf_counter() - start, 2)
    write_json(report_path(out), report)
    logger.info("wrote %d pairs to %s\n%s", len(records), out, format_report(report))
    return report
