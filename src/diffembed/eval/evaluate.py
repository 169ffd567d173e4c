"""Evaluation of one model on task folders: per-task records, result files, a Markdown table.

``evaluate_model`` loads the tasks, picks the retriever (:func:`diffembed.eval.models.make_retriever`)
and runs ``evaluate_task`` on each: retrieval (:mod:`diffembed.eval.metrics`), instruct tasks
(p-MRR from the full-ranking ranks of :mod:`diffembed.eval.ranking`; instruct tasks search
``"{query} {instruction}"``), kNN classification and similarity pairs.

**Results**: one record per task (metrics, per-query scores for bootstrap CIs, model and task
hashes, counts, average document tokens, truncation counts, provenance), written as
``OUT.tasks/<suite>__<task>.json`` as each task finishes, then ``OUT`` (all records) and ``OUT``
with suffix ``.md`` (a Markdown table), all atomically. The command line is
:mod:`diffembed.cli.eval`.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diffembed.errors import ConfigError
from diffembed.eval.fusion import DEFAULT_ALPHA, describe_search
from diffembed.eval.metrics import (
    classification_metrics,
    correlation_metrics,
    knn_classify,
    p_mrr,
    retrieval_metrics,
)
from diffembed.eval.models import make_retriever
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR
from diffembed.eval.retrievers import DenseRetriever, EncodeReport, Retriever
from diffembed.formats.tasks import (
    Qrels,
    Task,
    TaskFormatError,
    find_tasks,
    hash_task,
    load_task,
)
from diffembed.io import atomic_write, write_json
from diffembed.model.chunking import Chunking

logger = logging.getLogger(__name__)

RESULT_FORMAT_VERSION = 1


def with_instruction(text: str, instruction: str) -> str:
    """An instruct task's query text: ``"{text} {instruction}"`` (MTEB's convention)."""
    return f"{text.strip()} {instruction.strip()}"


def _scored_queries(task: Task, *qrels: Qrels) -> list[int]:
    """Indices of the task's queries that some qrels judge relevant to a document."""
    wanted = {q for qr in qrels for q, judged in qr.items() if any(s > 0 for s in judged.values())}
    return [i for i, q in enumerate(task.queries) if q.id in wanted]


def evaluate_task(
    retriever: Retriever,
    task: Task,
    top_k: int = 100,
    use_faiss: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate one task; returns the result record without provenance (see ``run_eval``).

    Keys: task, suite, kind, metric, main_score, metrics, per_query (query/item id -> main
    metric; similarity: the predicted score of each pair), n_queries, n_docs,
    avg_doc_tokens, token_unit, truncated {docs, queries}.
    """
    record: dict[str, Any] = {"task": task.name, "suite": task.suite, "kind": task.kind}
    record["metric"] = task.metric
    if task.empty_docs:
        logger.warning(
            "%s: %d document(s) with empty text and title left out of the index (first: %r); "
            "relevant ones count as not retrieved",
            task.key,
            len(task.empty_docs),
            task.empty_docs[0],
        )
    if task.kind == "retrieval":
        metrics, per_query_main, counts = _evaluate_retrieval(
            retriever, task, top_k, use_faiss, show_progress
        )
    elif task.kind == "instruct":
        metrics, per_query_main, counts = _evaluate_instruct(
            retriever, task, top_k, use_faiss, show_progress
        )
    elif task.kind == "classification":
        metrics, per_query_main, counts = _evaluate_classification(retriever, task, show_progress)
    else:
        metrics, per_query_main, counts = _evaluate_similarity(retriever, task)
    record.update(counts)
    record["empty_docs_skipped"] = len(task.empty_docs)
    record["main_score"] = metrics[task.metric]
    record["metrics"] = metrics
    record["token_unit"] = retriever.token_unit
    record["per_query"] = per_query_main
    return record


_Evaluated = tuple[dict[str, float], dict[str, float], dict[str, Any]]


def _counts(
    n_queries: int, n_docs: int, docs: EncodeReport, truncated_queries: int
) -> dict[str, Any]:
    """The count fields of a task record."""
    return {
        "n_queries": n_queries,
        "n_docs": n_docs,
        "avg_doc_tokens": docs.mean_length,
        "truncated": {"docs": docs.truncated, "queries": truncated_queries},
    }


def _index_corpus(retriever: Retriever, task: Task) -> EncodeReport:
    return retriever.index([d.id for d in task.corpus], [d.full_text for d in task.corpus])


def _evaluate_retrieval(
    retriever: Retriever, task: Task, top_k: int, use_faiss: bool, show_progress: bool
) -> _Evaluated:
    """Retrieval metrics of the scored queries; returns metrics, per-query main metric, counts."""
    doc_report = _index_corpus(retriever, task)
    rows = _scored_queries(task, task.qrels)
    queries = [task.queries[i] for i in rows]
    result = retriever.search(
        [q.id for q in queries],
        [q.text for q in queries],
        task.instruction,
        top_k,
        use_faiss=use_faiss,
        show_progress=show_progress,
    )
    metrics, per_query = retrieval_metrics(task.qrels, result.run)
    per_query_main = {q: v[task.metric] for q, v in per_query.items()}
    counts = _counts(len(queries), len(task.corpus), doc_report, result.queries.truncated)
    return metrics, per_query_main, counts


def _evaluate_instruct(
    retriever: Retriever, task: Task, top_k: int, use_faiss: bool, show_progress: bool
) -> _Evaluated:
    """p-MRR and both sides' retrieval metrics; returns metrics, per-query main metric, counts."""
    doc_report = _index_corpus(retriever, task)
    rows = _scored_queries(task, task.qrels_og, task.qrels_changed)
    queries = [task.queries[i] for i in rows]
    empty = set(task.empty_docs)  # never indexed: no rank on either side, left out of p-MRR
    targets = {
        q: kept
        for q, docs in task.changed_docs().items()
        if (kept := [d for d in docs if d not in empty])
    }
    ids = [q.id for q in queries]
    runs = {}
    for side in ("og", "changed"):
        texts = [with_instruction(q.text, getattr(q, f"instruction_{side}")) for q in queries]
        runs[side] = retriever.search(
            ids,
            texts,
            task.instruction,
            top_k,
            rank_targets=targets,
            use_faiss=use_faiss,
            show_progress=show_progress,
        )
    score, per_query_pmrr = p_mrr(runs["og"].ranks, runs["changed"].ranks, targets)
    metrics = {"p-mrr": score}
    per_side = {}
    for side, qrels in (("og", task.qrels_og), ("changed", task.qrels_changed)):
        means, per_side[side] = retrieval_metrics(qrels, runs[side].run)
        metrics.update({f"{side}_{k}": v for k, v in means.items()})
    if task.metric == "p-mrr":
        per_query_main = per_query_pmrr
    else:
        side, name = task.metric.split("_", 1)
        per_query_main = {q: v[name] for q, v in per_side[side].items()}
    truncated_queries = runs["og"].queries.truncated + runs["changed"].queries.truncated
    counts = _counts(len(queries), len(task.corpus), doc_report, truncated_queries)
    return metrics, per_query_main, counts


def _evaluate_similarity(retriever: Retriever, task: Task) -> _Evaluated:
    """Correlation of pair scores with the gold scores; per-pair predicted scores, counts."""
    texts1 = [p.text1 for p in task.pairs]
    texts2 = [p.text2 for p in task.pairs]
    predicted, report = retriever.pair_scores(texts1, texts2, task.instruction)
    metrics = correlation_metrics(predicted, [p.score for p in task.pairs])
    per_query_main = {p.id: float(s) for p, s in zip(task.pairs, predicted, strict=True)}
    return metrics, per_query_main, _counts(len(task.pairs), report.texts, report, 0)


def _evaluate_classification(retriever: Retriever, task: Task, show_progress: bool) -> _Evaluated:
    """kNN classification (split or leave-one-out); returns metrics, per-item correctness, counts."""
    split = any(it.split for it in task.items)
    if split:
        train = [it for it in task.items if it.split == "train"]
        test = [it for it in task.items if it.split == "test"]
        report = retriever.index(
            [it.id for it in train], [it.text for it in train], task.instruction, symmetric=True
        )
        queries, q_report = retriever.prepare_queries([it.text for it in test], task.instruction)
        neighbours, sims, _ = retriever.top_k(
            queries, len(test), task.k, show_progress=show_progress
        )
        truncated_queries = q_report.truncated
    else:
        train = test = list(task.items)
        report = retriever.index(
            [it.id for it in train], [it.text for it in train], task.instruction, symmetric=True
        )
        neighbours, sims, _ = retriever.top_k(
            retriever.indexed_as_queries(),
            len(train),
            task.k,
            exclude_self=True,
            show_progress=show_progress,
        )
        truncated_queries = 0
    predicted = knn_classify([it.label for it in train], neighbours, sims)
    gold = [it.label for it in test]
    metrics = classification_metrics(gold, predicted)
    per_item = {it.id: float(p == it.label) for it, p in zip(test, predicted, strict=True)}
    return metrics, per_item, _counts(len(test), len(train), report, truncated_queries)


# ------------------------------------------------------------------------------ reports
def _cell(value: Any, scale: float = 100.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.2f}"


def markdown_table(records: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """A Markdown table of task records (scores x100), with a mean main score per suite."""
    lines = [f"## {title}", ""] if title else []
    lines += [
        "| Suite | Task | Kind | Metric | Score | nDCG@10 | Queries | Docs | Avg doc tokens "
        "| Truncated docs | Time (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        m = r["metrics"]
        ndcg = m.get("ndcg_at_10", m.get("og_ndcg_at_10"))
        lines.append(
            f"| {r['suite'] or '–'} | {r['task']} | {r['kind']} | {r['metric']} "
            f"| {_cell(r['main_score'])} | {_cell(ndcg)} | {r['n_queries']} | {r['n_docs']} "
            f"| {r['avg_doc_tokens']:.1f} | {r['truncated']['docs']} "
            f"| {r.get('provenance', {}).get('wall_time_s', float('nan')):.1f} |"
        )
    suites: dict[str, list[float]] = {}
    for r in records:
        suites.setdefault(r["suite"] or "–", []).append(r["main_score"])
    if suites:
        lines += ["", "| Suite | Tasks | Mean score |", "|---|---:|---:|"]
        for suite, scores in suites.items():
            lines.append(f"| {suite} | {len(scores)} | {_cell(float(np.mean(scores)))} |")
    return "\n".join(lines) + "\n"


def _task_file(out: Path, task: Task) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task.suite or 'none'}__{task.name}")
    return out.parent / f"{out.name}.tasks" / f"{safe}.json"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (evaluation draws nothing at random; recorded anyway)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


def collect_task_dirs(tasks_root: Path | None, suite: str, task_dirs: Sequence[Path]) -> list[Path]:
    """The task folders to evaluate: ``tasks_root/<suite>/*`` then ``task_dirs``, deduplicated."""
    found: list[Path] = []
    if tasks_root is not None:
        found += find_tasks(tasks_root, suite)
        if not found:
            raise TaskFormatError(f"{tasks_root}: no task folders for suite {suite!r}")
    found += list(task_dirs)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError("no tasks: give --tasks-root and/or --task-dir")
    return unique


def _load_tasks(task_dirs: Sequence[Path]) -> list[Task]:
    """Load every task folder; refuses none and two folders with the same suite/name."""
    tasks = [load_task(d) for d in task_dirs]
    if not tasks:
        raise ConfigError("no tasks to evaluate")
    keys = [t.key for t in tasks]
    duplicate = sorted({k for k in keys if keys.count(k) > 1})
    if duplicate:
        raise ConfigError(f"several task folders have the same suite/name: {duplicate}")
    return tasks


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _task_record(
    retriever: Retriever,
    task: Task,
    top_k: int,
    use_faiss: bool,
    show_progress: bool,
    header: dict[str, Any],
    command: list[str],
) -> dict[str, Any]:
    """Evaluate one task and complete its record (``header``: model, settings, seed)."""
    from diffembed.provenance import provenance

    t0 = time.time()
    record = evaluate_task(retriever, task, top_k, use_faiss, show_progress)
    record.update(
        format_version=RESULT_FORMAT_VERSION,
        model=header["model"],
        task_dir=str(task.path.resolve()),
        task_hash=hash_task(task.path),
        settings=header["settings"],
        seed=header["seed"],
        provenance=provenance(t0, command),
    )
    return record


@dataclass(frozen=True)
class EvalSettings:
    """How ``evaluate_model`` evaluates: the model's encoding (``max_length``: None for the
    model's; ``batch_tokens``: token budget of a batch; ``precision``: compute precision auto,
    bf16 or fp32; ``device``: None for cuda when available, else cpu), the search (``top_k``
    documents per query; ``use_faiss``: faiss IndexFlatIP top-k, the same results), the
    retriever (``retriever`` dense, bm25 or hybrid; ``alpha``: the hybrid fusion, the weight of
    dense in the convex combination, None: reciprocal-rank fusion, k = 60; ``chunking``:
    documents split as ``index build`` splits them, None: whole), the vectors searched
    (``dimensions``: the first N, renormalised; ``quantize``: none, int8 or binary, as ``index
    build --quantize`` stores them: ``diffembed.eval.small``) and the recorded ``seed``."""

    max_length: int | None = None
    batch_tokens: int | None = 16384
    precision: str = "auto"
    device: str | None = None
    top_k: int = 100
    use_faiss: bool = False
    seed: int = 0
    retriever: str = "dense"
    alpha: float | None = DEFAULT_ALPHA
    chunking: Chunking | None = None
    dimensions: int | None = None
    quantize: str = "none"
    rescore_factor: int = RESCORE_FACTOR

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k (--top-k) must be >= 1, got {self.top_k}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"--quantize must be one of {QUANTIZE}, got {self.quantize!r}")
        if self.small and self.chunking is not None:
            raise ConfigError("--dimensions and --quantize take whole documents: no --chunk-tokens")

    def record(self, device: str) -> dict[str, Any]:
        """The ``settings`` of a result file (``device``: the one used)."""
        used = describe_search(self.retriever, self.alpha)
        return {
            "top_k": self.top_k,
            "faiss": bool(self.use_faiss),
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
            "dtype": self.precision,
            "device": device,
            "seed": self.seed,
            "retriever": self.retriever,
            "fusion": used["fusion"],
            "alpha": used["alpha"],
            "chunking": None if self.chunking is None else self.chunking.describe(),
            # only when asked: the records of float, full-width runs stay as they were
            **({"vectors": self.vectors_record()} if self.small else {}),
        }

    @property
    def small(self) -> bool:
        """Whether vectors are cut or quantised."""
        return self.dimensions is not None or self.quantize != "none"

    def vectors_record(self) -> dict[str, Any]:
        return {
            "dimensions": self.dimensions,
            "quantize": self.quantize,
            "rescore_factor": self.rescore_factor if self.quantize == "binary" else None,
        }


def evaluate_model(
    model: str | Path,
    task_dirs: Sequence[Path],
    out: Path,
    settings: EvalSettings | None = None,
    *,
    show_progress: bool = True,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (a model directory, ``"bm25"`` or ``"minilm"``) on task folders.

    ``settings`` (``EvalSettings``; default: dense, whole documents, top 100) picks what is
    evaluated: :func:`diffembed.eval.composed.compose_retriever`. ``command`` is recorded as
    the command line (default: ``sys.argv``).

    Writes ``out`` (all records with provenance), ``OUT.tasks/<suite>__<task>.json`` as each
    task finishes, and a Markdown table ``OUT.md``; returns the summary written to ``out``.
    """
    from diffembed.eval.composed import compose_retriever
    from diffembed.eval.small import shrink_retriever
    from diffembed.provenance import provenance

    start = time.time()
    settings = settings or EvalSettings()
    out = Path(out)
    if out.suffix != ".json":
        raise ConfigError(f"{out}: the output must be a .json file")
    seed_everything(settings.seed)
    tasks = _load_tasks(task_dirs)
    device = _default_device() if settings.device is None else settings.device
    s = settings
    loaded = "bm25" if s.retriever == "bm25" else str(model)
    base = make_retriever(loaded, s.max_length, s.batch_tokens, s.precision, device, show_progress)
    if s.small:
        base = shrink_retriever(base, s.dimensions, s.quantize, s.rescore_factor)
    retriever = compose_retriever(base, s.retriever, s.alpha, s.chunking)
    if s.use_faiss and not isinstance(retriever, DenseRetriever):
        logger.warning("%s: faiss applies to dense models only; searching exactly", model)
    model_info = retriever.describe()
    command = list(sys.argv if command is None else command)
    header = {"model": model_info, "settings": s.record(device), "seed": s.seed}
    logger.info("evaluating %s on %d task(s)", retriever.name, len(tasks))
    records: list[dict[str, Any]] = []
    for task in tqdm(tasks, desc="tasks", unit="task", disable=not show_progress):
        record = _task_record(retriever, task, s.top_k, s.use_faiss, show_progress, header, command)
        write_json(_task_file(out, task), record)
        logger.info(
            "%s: %s = %.4f (%d queries, %d docs, %.1f s)",
            task.key,
            task.metric,
            record["main_score"],
            record["n_queries"],
            record["n_docs"],
            record["provenance"]["wall_time_s"],
        )
        records.append(record)
    summary = {"format_version": RESULT_FORMAT_VERSION, **header}
    summary.update(provenance=provenance(start, command), tasks=records)
    write_json(out, summary)
    table = markdown_table(records, title=f"{retriever.name} ({model_info['hash'][:19]})")
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(table)
    logger.info("wrote %s and %s", out, out.with_suffix(".md"))
    return summary
