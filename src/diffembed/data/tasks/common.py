"""Shared pieces of the task builders: the eval-split corpus, seeded randomness, length meters,
text helpers and the writer that measures BM25 and writes a task folder through
:func:`diffembed.formats.tasks.write_task`.

Everything here is deterministic: iteration follows the corpus file order, every random choice
comes from a ``random.Random`` derived from ``(seed, task name, purpose)``, and task.json holds
no wall times or absolute paths, so a rebuild from the same corpus and seed is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from diffembed.formats.tasks import Document, Query, Task, write_task

logger = logging.getLogger(__name__)

EVAL_SPLIT = "eval"
OTHER_SPLITS = ("pretrain", "finetune")
# A document text shorter than this (after normalization) is never fingerprinted: short
# dictionary entries collide by chance, long ones only when they are the same text.
FINGERPRINT_MIN_CHARS = 300
FINGERPRINT_CHARS = 400

_WS = re.compile(r"\S+")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


# ------------------------------------------------------------------------------ corpus
def _fingerprint(text: str) -> str | None:
    """Alphanumeric prefix of ``text`` (lower-cased): equal for two renderings of one page."""
    norm = _NON_ALNUM.sub("", text.lower())
    if len(norm) < FINGERPRINT_MIN_CHARS:
        return None
    return norm[:FINGERPRINT_CHARS]


def _name_key(meta: Mapping[str, Any]) -> str | None:
    """A manual page's NAME line (``"perlfaq6 - Regular Expressions"``), normalized."""
    line = meta.get("name_line")
    if not isinstance(line, str) or not line.strip():
        return None
    return " ".join(line.lower().split())


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class EvalCorpus:
    """The ``eval`` split of a corpus directory, minus documents that leak from other splits.

    Only ``eval.jsonl`` is read for documents, and every record must say ``"split": "eval"``.
    The corpus builder splits by document id, but some texts exist under two ids (a Perl page as
    POD and as a rendered man page: ``perl:perlfaq6`` in eval, ``man:perlfaq6.1`` in pretrain).
    When ``pretrain.jsonl`` / ``finetune.jsonl`` are present, an eval document is dropped as
    leaked if its NAME line or its text fingerprint (first 400 alphanumerics, for texts of at
    least 300) also occurs there.
    """

    def __init__(self, docs: Sequence[Document], leaked: Sequence[str], eval_sha256: str):
        self.docs: list[Document] = list(docs)
        self.leaked: list[str] = list(leaked)
        self.eval_sha256 = eval_sha256
        self._by_id = {d.id: d for d in self.docs}
        self._by_source: dict[str, list[Document]] = {}
        for d in self.docs:
            self._by_source.setdefault(d.source, []).append(d)

    @classmethod
    def load(cls, corpus_dir: str | Path, check_leaks: bool = True) -> EvalCorpus:
        """Read ``corpus_dir/eval.jsonl`` (and, for the leak check, the other splits)."""
        corpus_dir = Path(corpus_dir)
        path = corpus_dir / f"{EVAL_SPLIT}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (build the corpus first)")
        start = time.perf_counter()
        docs: list[Document] = []
        seen: set[str] = set()
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                rec = json.loads(line)
                if rec.get("split") != EVAL_SPLIT:
                    raise ValueError(f"{path}:{lineno}: split is {rec.get('split')!r}, not eval")
                if rec["id"] in seen:
                    raise ValueError(f"{path}:{lineno}: duplicate id {rec['id']!r}")
                seen.add(rec["id"])
                docs.append(
                    Document(
                        id=rec["id"],
                        source=rec["source"],
                        title=rec.get("title") or "",
                        text=rec["text"],
                        meta=rec.get("meta") or {},
                    )
                )
        leaked: list[str] = []
        if check_leaks:
            names, prints = _other_split_keys(corpus_dir)
            if names or prints:
                keep = []
                for d in docs:
                    name = _name_key(d.meta)
                    fp = _fingerprint(d.text)
                    if (name is not None and name in names) or (fp is not None and fp in prints):
                        leaked.append(d.id)
                    else:
                        keep.append(d)
                docs = keep
        logger.info(
            "eval corpus %s: %d documents (%d dropped as copies of pretrain/finetune texts) "
            "in %.1f s",
            corpus_dir,
            len(docs),
            len(leaked),
            time.perf_counter() - start,
        )
        return cls(docs, leaked, file_sha256(path))

    def source(self, name: str) -> list[Document]:
        """Documents of one source, in corpus order."""
        return list(self._by_source.get(name, []))

    def sources(self, names: Iterable[str]) -> list[Document]:
        """Documents of several sources, in corpus order."""
        wanted = set(names)
        return [d for d in self.docs if d.source in wanted]

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None (absent from eval, or dropped as leaked)."""
        return self._by_id.get(doc_id)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._by_id

    def __len__(self) -> int:
        return len(self.docs)


def _other_split_keys(corpus_dir: Path) -> tuple[set[str], set[str]]:
    """NAME lines and text fingerprints of the pretrain and finetune splits."""
    names: set[str] = set()
    prints: set[str] = set()
    for split in OTHER_SPLITS:
        path = corpus_dir / f"{split}.jsonl"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                name = _name_key(rec.get("meta") or {})
                if name is not None:
                    names.add(name)
                fp = _fingerprint(rec["text"])
                if fp is not None:
                    prints.add(fp)
    return names, prints


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


def word_offsets(text: str) -> list[int]:
    """Character offset of the start of each whitespace token."""
    return [m.start() for m in _WS.finditer(text)]


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


def is_wordnet_copy(doc: Document) -> bool:
    """A GCIDE entry taken from WordNet (its sources name a WordNet version)."""
    return any(str(s).lower().startswith("wordnet") for s in doc.meta.get("sources", []))


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
    from diffembed.formats.tasks import Item, Pair

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
        Pair(id=str(r.get("_id", i)), text1=r["text1"], text2=r["text2"], score=float(r["score"]))
        for i, r in enumerate(pairs or [], start=1)
    ]
    return task


def measure_bm25(task: Task) -> dict[str, Any]:
    """BM25 scores of a task, exactly as ``diffembed eval --model bm25`` computes them."""
    from diffembed.eval.evaluate import BM25Retriever, evaluate_task

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
    task = _in_memory_task(
        name,
        suite,
        kind,
        metric,
        instruction,
        corpus,
        queries,
        qrels,
        qrels_og,
        qrels_changed,
        items,
        pairs,
        k,
    )
    bm25 = measure_bm25(task) if ctx.measure_bm25 else None
    ids = sorted(set(source_ids))
    for doc_id in ids:
        if doc_id not in ctx.corpus:
            raise ValueError(f"task {name}: source id {doc_id!r} is not an eval-split document")
    by_source = Counter(ctx.corpus.get(i).source for i in ids)  # type: ignore[union-attr]
    if kind in ("retrieval", "instruct"):
        counts = {
            "queries": len(task.queries),
            "docs": len(task.corpus),
            "judgements": sum(len(v) for v in (qrels or qrels_og or {}).values()),
        }
        if kind == "instruct":
            counts["judgements_changed"] = sum(len(v) for v in (qrels_changed or {}).values())
            counts["changed_docs"] = sum(len(v) for v in task.changed_docs().values())
        lengths = [word_count(d.full_text) for d in task.corpus]
    elif kind == "classification":
        counts = {
            "items": len(task.items),
            "labels": len({it.label for it in task.items}),
            "train": sum(1 for it in task.items if it.split == "train"),
            "test": sum(1 for it in task.items if it.split == "test"),
        }
        lengths = [word_count(it.text) for it in task.items]
    else:
        counts = {"pairs": len(task.pairs)}
        texts = {p.text1 for p in task.pairs} | {p.text2 for p in task.pairs}
        lengths = [word_count(t) for t in sorted(texts)]
    avg = round(sum(lengths) / max(len(lengths), 1), 1)
    extra: dict[str, Any] = {
        "builder": builder,
        "seed": ctx.seed,
        "params": dict(params),
        "length_unit": ctx.meter.unit,
        "corpus": {
            "split": EVAL_SPLIT,
            "eval_sha256": ctx.corpus.eval_sha256,
            "dropped_as_leaked": len(ctx.corpus.leaked),
        },
        "sources": dict(sorted(by_source.items())),
        "source_documents": len(ids),
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
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        qrels_og=qrels_og,
        qrels_changed=qrels_changed,
        items=items,
        pairs=pairs,
        k=k,
        extra=extra,
    )
    if kind in ("retrieval", "instruct"):
        n_queries, n_docs = len(task.queries), len(task.corpus)
    elif kind == "classification":
        n_queries, n_docs = counts["test"] or len(task.items), counts["train"] or len(task.items)
    else:
        n_queries, n_docs = len(task.pairs), len(lengths)
    summary = TaskSummary(
        suite=suite,
        name=name,
        kind=kind,
        metric=metric,
        n_queries=n_queries,
        n_docs=n_docs,
        avg_doc_tokens=avg,
        bm25=None if bm25 is None else {"main_score": bm25["main_score"], "metric": metric},
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "%s/%s: %d queries, %d docs, %.0f words/doc, BM25 %s = %s (%.1f s)",
        suite,
        name,
        summary.n_queries,
        summary.n_docs,
        avg,
        metric,
        "-" if bm25 is None else f"{bm25['main_score']:.3f}",
        summary.seconds,
    )
    return summary


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
