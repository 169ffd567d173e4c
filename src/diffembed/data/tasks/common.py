"""Shared pieces of the task builders: the build context, seeded randomness, length meters,
text helpers and the writer that measures BM25 and writes a task folder through
:func:`~diffembed.formats.task_writer.write_task`. The eval-split corpus they read is
:mod:`diffembed.data.tasks.eval_corpus`.

Everything here is deterministic: iteration follows the corpus file order, every random choice
comes from a ``random.Random`` derived from ``(seed, task name, purpose)``, and task.json holds
no wall times or absolute paths, so a rebuild from the same corpus and seed is byte-identical.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from diffembed.data.tasks.eval_corpus import EVAL_SPLIT, EvalCorpus
from diffembed.errors import DiffembedError
from diffembed.formats.corpus import Document
from diffembed.formats.task_writer import write_task
from diffembed.formats.tasks import Query, Task

logger = logging.getLogger(__name__)

_WS = re.compile(r"\S+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


# ------------------------------------------------------------------------------ randomness
def derive_rng(seed: int, *names: str) -> random.Random:
    """A ``random.Random`` seeded from ``seed`` and a purpose (``"passkey-256", "names"``).

    Each task (and each purpose within a task) draws from its own stream, so building one task
    never shifts the random choices of another.
    """
    key = "/".join([str(seed), *names]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


# ------------------------------------------------------------------------------ lengths
class LengthMeter(Protocol):
    """Counts the length of a text in some unit (``unit`` names it for task.json)."""

    unit: str

    def count(self, text: str) -> int: ...


class WhitespaceMeter:
    """Length in whitespace-separated tokens (``len(text.split())``)."""

    unit = "whitespace tokens"

    def count(self, text: str) -> int:
        return len(text.split())


class TokenizerMeter:
    """Length in a tokenizer's tokens, special tokens excluded."""

    def __init__(self, tokenizer: Any, name: str | None = None) -> None:
        self.tokenizer = tokenizer
        label = name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        self.unit = f"tokens of {Path(str(label)).name or label}"

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def make_meter(tokenizer: Any = None) -> LengthMeter:
    """Whitespace tokens for None; a tokenizer directory (path) or tokenizer object otherwise."""
    if tokenizer is None:
        return WhitespaceMeter()
    if isinstance(tokenizer, (str, Path)):
        from diffembed.model.tokenizer import load_tokenizer

        return TokenizerMeter(load_tokenizer(tokenizer), Path(tokenizer).name)
    return TokenizerMeter(tokenizer)


# ------------------------------------------------------------------------------ text helpers
def word_count(text: str) -> int:
    """Whitespace tokens in ``text``."""
    return len(text.split())


def truncate_words(text: str, n: int) -> str:
    """The first ``n`` whitespace tokens of ``text``, original spacing and newlines kept."""
    if n <= 0:
        return ""
    for i, m in enumerate(_WS.finditer(text)):
        if i == n - 1:
            return text[: m.end()]
    return text


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph-structured text (lines joined inside paragraphs)."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if para:
            out.extend(s.strip() for s in _SENTENCE_SPLIT.split(para) if s.strip())
    return out


def is_prose(sentence: str, min_words: int = 6, max_words: int = 60) -> bool:
    """A sentence that reads as English prose: mostly alphabetic words, ends with . ! or ?."""
    words = sentence.split()
    if not min_words <= len(words) <= max_words or sentence[-1] not in ".!?":
        return False
    if not sentence[0].isupper():
        return False
    alpha = sum(1 for w in words if w.strip(".,;:!?\"'()").isalpha())
    return alpha >= 0.8 * len(words) and not any(c in sentence for c in "{}[]<>|=_\\$@#*/")


def term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """A case-insensitive whole-word regex for ``terms`` and their regular plural forms."""
    forms: set[str] = set()
    for term in terms:
        term = " ".join(term.replace("_", " ").split())
        if not term:
            continue
        forms.update((term, term + "s", term + "es", term + "'s"))
        if term.endswith("y") and len(term) > 2:
            forms.add(term[:-1] + "ies")
    if not forms:
        return None
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def mask_terms(text: str, terms: Iterable[str], replacement: str = "___") -> str:
    """Replace whole-word occurrences of ``terms`` (and plurals) with ``replacement``."""
    pattern = term_pattern(terms)
    return text if pattern is None else pattern.sub(replacement, text)


def mentions(text: str, terms: Iterable[str]) -> bool:
    """Whether ``text`` contains any of ``terms`` (whole words, plurals, any case)."""
    pattern = term_pattern(terms)
    return pattern is not None and pattern.search(text) is not None


def article(word: str) -> str:
    """``"an"`` before a vowel letter, else ``"a"``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


# ------------------------------------------------------------------------------ writing
@dataclass
class TaskSummary:
    """What a builder reports about one written task (wall time is not written to disk)."""

    suite: str
    name: str
    kind: str
    metric: str
    n_queries: int
    n_docs: int
    avg_doc_tokens: float
    bm25: dict[str, Any] | None
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        """A JSON-friendly row (without the wall time)."""
        return {
            "suite": self.suite,
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "n_queries": self.n_queries,
            "n_docs": self.n_docs,
            "avg_doc_tokens": self.avg_doc_tokens,
            "bm25": self.bm25,
        }


@dataclass
class BuildContext:
    """Settings shared by every builder of one build."""

    corpus: EvalCorpus
    seed: int = 0
    meter: LengthMeter = field(default_factory=WhitespaceMeter)
    max_length_tokens: int = 32768
    measure_bm25: bool = True
    # Caps on every task's size (None: the builders' own defaults); for quick, smaller suites.
    max_queries: int | None = None
    max_docs: int | None = None

    def rng(self, *names: str) -> random.Random:
        """A random stream for ``names`` under this build's seed."""
        return derive_rng(self.seed, *names)

    def n_queries(self, default: int) -> int:
        """How many queries a task with ``default`` queries gets under this build's cap."""
        return default if self.max_queries is None else min(default, self.max_queries)

    def n_docs(self, default: int) -> int:
        """How many documents a task with ``default`` documents gets under this build's cap."""
        return default if self.max_docs is None else min(default, self.max_docs)


def _in_memory_task(
    name: str,
    suite: str,
    kind: str,
    metric: str,
    instruction: str | None,
    corpus: Sequence[Mapping[str, Any]] | None,
    queries: Sequence[Mapping[str, Any]] | None,
    qrels: Mapping[str, Mapping[str, int]] | None,
    qrels_og: Mapping[str, Mapping[str, int]] | None,
    qrels_changed: Mapping[str, Mapping[str, int]] | None,
    items: Sequence[Mapping[str, Any]] | None,
    pairs: Sequence[Mapping[str, Any]] | None,
    k: int | None,
) -> Task:
    """A :class:`diffembed.formats.tasks.Task` built from rows, for measuring BM25 before writing."""
    from diffembed.formats.tasks import Item, ScoredPair

    task = Task(
        path=Path("."),
        name=name,
        suite=suite,
        kind=kind,
        metric=metric,
        instruction=instruction,
    )
    if k is not None:
        task.k = k
    task.corpus = [
        Document(id=r["_id"], text=r["text"], title=r.get("title", "")) for r in corpus or []
    ]
    task.queries = [
        Query(
            id=r["_id"],
            text=r["text"],
            instruction_og=r.get("instruction_og"),
            instruction_changed=r.get("instruction_changed"),
        )
        for r in queries or []
    ]
    task.qrels = {q: dict(d) for q, d in (qrels or {}).items()}
    task.qrels_og = {q: dict(d) for q, d in (qrels_og or {}).items()}
    task.qrels_changed = {q: dict(d) for q, d in (qrels_changed or {}).items()}
    task.items = [
        Item(id=r["_id"], text=r["text"], label=str(r["label"]), split=r.get("split"))
        for r in items or []
    ]
    task.pairs = [
        ScoredPair(
            id=str(r.get("_id", i)), text1=r["text1"], text2=r["text2"], score=float(r["score"])
        )
        for i, r in enumerate(pairs or [], start=1)
    ]
    return task


def measure_bm25(task: Task) -> dict[str, Any]:
    """BM25 scores of a task, exactly as ``diffembed eval --model bm25`` computes them."""
    from diffembed.eval.evaluate import evaluate_task
    from diffembed.eval.retrievers import BM25Retriever

    retriever = BM25Retriever()
    record = evaluate_task(retriever, task)
    metrics = {k: round(float(v), 6) for k, v in sorted(record["metrics"].items())}
    return {
        "metric": task.metric,
        "main_score": round(float(record["main_score"]), 6),
        "metrics": metrics,
        "settings": retriever.describe()["settings"],
    }


def write_suite_task(
    ctx: BuildContext,
    suite_dir: Path,
    *,
    name: str,
    suite: str,
    metric: str,
    instruction: str | None,
    description: str,
    builder: str,
    params: Mapping[str, Any],
    source_ids: Iterable[str],
    kind: str = "retrieval",
    corpus: Sequence[Mapping[str, Any]] | None = None,
    queries: Sequence[Mapping[str, Any]] | None = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    qrels_og: Mapping[str, Mapping[str, int]] | None = None,
    qrels_changed: Mapping[str, Mapping[str, int]] | None = None,
    items: Sequence[Mapping[str, Any]] | None = None,
    pairs: Sequence[Mapping[str, Any]] | None = None,
    k: int | None = None,
    external: Mapping[str, Any] | None = None,
) -> TaskSummary:
    """Measure BM25 on the rows, then write ``suite_dir/name`` with provenance in task.json.

    task.json gets, besides the beir fields: ``builder``, ``seed``, ``params``, ``length_unit``,
    ``corpus`` (sha256 of eval.jsonl, documents dropped as leaked), ``sources`` (how many corpus
    documents of each source the task draws on), ``counts`` and ``bm25`` (the BM25 result of
    :func:`measure_bm25`, or null when disabled). ``external`` records non-corpus inputs.
    """
    start = time.perf_counter()
    rows: dict[str, Any] = {
        "corpus": corpus,
        "queries": queries,
        "qrels": qrels,
        "qrels_og": qrels_og,
        "qrels_changed": qrels_changed,
        "items": items,
        "pairs": pairs,
        "k": k,
    }
    task = _in_memory_task(name, suite, kind, metric, instruction, **rows)
    bm25 = measure_bm25(task) if ctx.measure_bm25 else None
    ids, by_source = _source_documents(ctx, name, source_ids)
    counts, lengths = _counts_and_lengths(task, kind, qrels or qrels_og, qrels_changed)
    avg = round(sum(lengths) / max(len(lengths), 1), 1)
    extra = {
        "builder": builder,
        "seed": ctx.seed,
        "params": dict(params),
        **_provenance(ctx, ids, by_source),
        "counts": counts,
        "avg_doc_whitespace_tokens": avg,
        "bm25": bm25,
    }
    if external:
        extra["external"] = dict(external)
    write_task(
        suite_dir / name,
        name=name,
        suite=suite,
        kind=kind,
        metric=metric,
        instruction=instruction,
        description=description,
        **rows,
        extra=extra,
    )
    summary = _summary(task, counts, lengths, avg, bm25, time.perf_counter() - start)
    _log_summary(summary)
    return summary


def _log_summary(s: TaskSummary) -> None:
    logger.info(
        "%s/%s: %d queries, %d docs, %.0f words/doc, BM25 %s = %s (%.1f s)",
        s.suite,
        s.name,
        s.n_queries,
        s.n_docs,
        s.avg_doc_tokens,
        s.metric,
        "-" if s.bm25 is None else f"{s.bm25['main_score']:.3f}",
        s.seconds,
    )


def _source_documents(
    ctx: BuildContext, name: str, source_ids: Iterable[str]
) -> tuple[list[str], Counter[str]]:
    """The task's distinct source ids (all eval-split documents) and how many per source."""
    ids = sorted(set(source_ids))
    for doc_id in ids:
        if doc_id not in ctx.corpus:
            raise DiffembedError(f"task {name}: source id {doc_id!r} is not an eval-split document")
    return ids, Counter(ctx.corpus.get(i).source for i in ids)  # type: ignore[union-attr]


def _counts_and_lengths(
    task: Task,
    kind: str,
    qrels: Mapping[str, Mapping[str, int]] | None,
    qrels_changed: Mapping[str, Mapping[str, int]] | None,
) -> tuple[dict[str, int], list[int]]:
    """task.json's ``counts`` for a task of this kind, and the whitespace lengths of its texts
    (documents, items, or the distinct texts of its pairs)."""
    if kind in ("retrieval", "instruct"):
        counts = {
            "queries": len(task.queries),
            "docs": len(task.corpus),
            "judgements": sum(len(v) for v in (qrels or {}).values()),
        }
        if kind == "instruct":
            counts["judgements_changed"] = sum(len(v) for v in (qrels_changed or {}).values())
            counts["changed_docs"] = sum(len(v) for v in task.changed_docs().values())
        return counts, [word_count(d.full_text) for d in task.corpus]
    if kind == "classification":
        counts = {
            "items": len(task.items),
            "labels": len({it.label for it in task.items}),
            "train": sum(1 for it in task.items if it.split == "train"),
            "test": sum(1 for it in task.items if it.split == "test"),
        }
        return counts, [word_count(it.text) for it in task.items]
    texts = {p.text1 for p in task.pairs} | {p.text2 for p in task.pairs}
    return {"pairs": len(task.pairs)}, [word_count(t) for t in sorted(texts)]


def _provenance(ctx: BuildContext, ids: list[str], by_source: Counter[str]) -> dict[str, Any]:
    """task.json's ``length_unit``, ``corpus``, ``sources`` and ``source_documents``."""
    return {
        "length_unit": ctx.meter.unit,
        "corpus": {
            "split": EVAL_SPLIT,
            "eval_sha256": ctx.corpus.eval_sha256,
            "dropped_as_leaked": len(ctx.corpus.leaked),
        },
        "sources": dict(sorted(by_source.items())),
        "source_documents": len(ids),
    }


def _summary(
    task: Task,
    counts: Mapping[str, int],
    lengths: Sequence[int],
    avg: float,
    bm25: Mapping[str, Any] | None,
    seconds: float,
) -> TaskSummary:
    """The :class:`TaskSummary` of a written task (queries and documents by its kind)."""
    if task.kind in ("retrieval", "instruct"):
        n_queries, n_docs = len(task.queries), len(task.corpus)
    elif task.kind == "classification":
        n_queries, n_docs = counts["test"] or len(task.items), counts["train"] or len(task.items)
    else:
        n_queries, n_docs = len(task.pairs), len(lengths)
    return TaskSummary(
        suite=task.suite or "",
        name=task.name,
        kind=task.kind,
        metric=task.metric,
        n_queries=n_queries,
        n_docs=n_docs,
        avg_doc_tokens=avg,
        bm25=None if bm25 is None else {"main_score": bm25["main_score"], "metric": task.metric},
        seconds=seconds,
    )


def sample_ordered(rng: random.Random, candidates: Sequence[Any], limit: int) -> list[Any]:
    """At most ``limit`` of ``candidates``, drawn without replacement, in candidate order."""
    if len(candidates) <= limit:
        return list(candidates)
    chosen = sorted(rng.sample(range(len(candidates)), limit))
    return [candidates[i] for i in chosen]


def doc_row(doc: Document, text: str | None = None, title: str | None = None) -> dict[str, Any]:
    """A corpus.jsonl row for a corpus document (its id is kept as ``_id``)."""
    return {
        "_id": doc.id,
        "title": doc.title if title is None else title,
        "text": doc.text if text is None else text,
        "source": doc.source,
    }
