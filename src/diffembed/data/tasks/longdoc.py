"""The long-document suite: LongEmbed-style synthetic passkey and needle tasks per length, and
real long-document tasks (module synopsis, man page description, section heading, and the
evidence-position triple).

**Length unit.** Passkey and needle documents are exactly ``L`` whitespace tokens long
(``len(text.split()) == L``) unless a tokenizer is given, in which case they are the longest
documents of at most ``L`` tokenizer tokens (special tokens excluded) -- always within 1% of
``L`` in practice. Real documents are capped at ``max_length_tokens`` whitespace tokens.

**Filler.** Haystack text is a window of consecutive prose sentences from eval-split documents
(Bible chapters, Debian, kernel, Python, PostgreSQL, SQLite, Vim, Perl and man page prose);
each document starts at its own random sentence, so no two documents share one repeated text.
Every document holds exactly one key fact at a random sentence boundary; 50 of the 100
documents of a length are queried (nDCG@1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffembed.data.documents import strip_name_section
from diffembed.data.tasks.common import (
    BuildContext,
    TaskSummary,
    article,
    doc_row,
    sample_ordered,
    truncate_words,
    word_count,
    write_suite_task,
)
from diffembed.data.tasks.haystack import (
    Filler,
    compose,
    needle_candidates,
    pick_names,
    pick_needles,
)
from diffembed.formats.corpus import Document

logger = logging.getLogger(__name__)

SUITE = "longdoc"
BUILDER = "diffembed.tasks.longdoc"
LENGTHS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
N_DOCS = 100
N_QUERIES = 50
FILLER_SOURCES = (
    "bible-kjv",
    "debian-handbook",
    "debian-reference",
    "linux-doc",
    "python-doc",
    "postgresql-doc",
    "sqlite-doc",
    "vim-doc",
    "perl-doc",
    "manpages",
    "manpages-dev",
)
LONG_SOURCES = (
    "linux-doc",
    "perl-doc",
    "postgresql-doc",
    "sqlite-doc",
    "vim-doc",
    "debian-handbook",
    "debian-reference",
    "python-doc",
    "manpages",
    "manpages-dev",
)
HEADING_SOURCES = (
    "linux-doc",
    "postgresql-doc",
    "python-doc",
    "debian-handbook",
    "debian-reference",
    "sqlite-doc",
)
POSITION_LENGTH = 2048
POSITION_BUCKETS: dict[str, tuple[float, float]] = {
    "start": (0.0, 0.1),
    "middle": (0.45, 0.55),
    "end": (0.9, 1.0),
}
NEEDLE_QUESTIONS = (
    "What is {a} {lemma}?",
    "What does the word {lemma} mean?",
    "How would you define {a} {lemma}?",
    "What is meant by {a} {lemma}?",
)


# ------------------------------------------------------------------------------ synthetic
def _passkey_facts(rng: Any, haystack: str) -> list[tuple[str, str, str, list[str]]]:
    """``(fact, question, answer, extra source ids)`` per document: a name's pass key."""
    names = pick_names(rng, N_DOCS, haystack)
    keys: list[str] = []
    while len(keys) < N_DOCS:
        key = str(rng.randrange(1_000_000, 10_000_000))
        if key not in keys and key not in haystack:
            keys.append(key)
    return [
        (
            f"{person}'s pass key is {key}. Remember it.",
            f"What is the pass key for {person}?",
            key,
            [],
        )
        for person, key in zip(names, keys, strict=True)
    ]


def _needle_facts(
    ctx: BuildContext, rng: Any, haystack: str, name: str
) -> list[tuple[str, str, str, list[str]]]:
    """``(fact, question, answer, extra source ids)`` per document: a rare noun's definition."""
    vocab = set(re.findall(r"[a-z]+", haystack))
    out = []
    for doc, fact in pick_needles(needle_candidates(ctx, vocab), N_DOCS, rng, name):
        lemma = doc.meta["lemmas"][0]
        template = NEEDLE_QUESTIONS[rng.randrange(len(NEEDLE_QUESTIONS))]
        question = template.format(a=article(lemma), lemma=lemma)
        out.append((fact, question, doc.meta["definition"], [doc.id]))
    return out


def _synthetic_texts(kind: str, length: int, unit: str) -> tuple[str, str]:
    """The instruction and description of a passkey or needle task."""
    if kind == "passkey":
        instruction = (
            "Given a question about a person's pass key, retrieve the passage that states it"
        )
        description = (
            f"LongEmbed-style passkey retrieval at {length} {unit}: {N_DOCS} documents "
            f"of real eval-split prose, each hiding one \"{{Name}}'s pass key is {{number}}. "
            f'Remember it." sentence at a random position; {N_QUERIES} of them are asked for.'
        )
    else:
        instruction = (
            "Given a question about the meaning of a word, retrieve the passage that answers it"
        )
        description = (
            f"LongEmbed-style needle retrieval at {length} {unit}: {N_DOCS} documents "
            f"of real eval-split prose, each hiding one WordNet definition of a rare noun "
            f'("A {{lemma}} is {{gloss}}.") at a random position; {N_QUERIES} are asked for.'
        )
    return instruction, description


def build_synthetic(
    ctx: BuildContext, suite_dir: Path, kind: str, length: int, filler: Filler
) -> TaskSummary:
    """One passkey or needle task of one length (``kind``: "passkey" | "needle")."""
    name = f"{kind}-{length}"
    rng = ctx.rng(name)
    windows = []
    for _ in range(N_DOCS):
        start = rng.randrange(len(filler.sentences))
        windows.append(filler.window(start, length + 64))
    haystack = "\n".join(w for w, _ in windows).lower()
    if kind == "passkey":
        facts = _passkey_facts(rng, haystack)
    else:
        facts = _needle_facts(ctx, rng, haystack, name)
    corpus: list[dict[str, Any]] = []
    source_ids: set[str] = set()
    for i, ((text, ids), (fact, _, _, extra_ids)) in enumerate(zip(windows, facts, strict=True)):
        position = rng.random()
        corpus.append(
            {
                "_id": f"{name}-d{i:03d}",
                "title": "",
                "text": compose(text, fact, length, position, ctx),
                "fact_position": round(position, 4),
                "source_ids": sorted(set(ids) | set(extra_ids)),
            }
        )
        source_ids.update(ids, extra_ids)
    queried = sorted(rng.sample(range(N_DOCS), N_QUERIES))
    queries = [
        {"_id": f"{name}-q{i:03d}", "text": facts[i][1], "answer": facts[i][2]} for i in queried
    ]
    qrels = {f"{name}-q{i:03d}": {f"{name}-d{i:03d}": 1} for i in queried}
    instruction, description = _synthetic_texts(kind, length, ctx.meter.unit)
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_1",
        instruction=instruction,
        description=description,
        builder=f"{BUILDER}.build_synthetic",
        params={"kind": kind, "length": length, "docs": N_DOCS, "queries": N_QUERIES},
        source_ids=source_ids,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


# ------------------------------------------------------------------------------ real documents
def _cap(text: str, ctx: BuildContext) -> str:
    return truncate_words(text, ctx.max_length_tokens)


def _long_distractors(
    ctx: BuildContext, exclude_sources: set[str], n: int, name: str, min_words: int = 1024
) -> list[Document]:
    pool = [
        d
        for d in ctx.corpus.sources(LONG_SOURCES)
        if d.source not in exclude_sources and word_count(d.text) >= min_words
    ]
    return sample_ordered(ctx.rng(name, "distractors"), pool, n)


def build_python_synopsis(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Python module synopsis -> the module's documentation page (synopsis removed)."""
    name = "python-synopsis"
    pages = ctx.corpus.source("python-doc")
    corpus: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}
    for doc in pages:
        synopsis = " ".join((doc.meta.get("synopsis") or "").split())
        text = "\n".join(
            line for line in doc.text.split("\n") if not synopsis or synopsis not in line
        )
        corpus.append(doc_row(doc, text=_cap(text, ctx)))
        if doc.meta.get("module") and word_count(synopsis) >= 3:
            qid = f"{name}-{doc.meta['module']}"
            if qid not in qrels:
                queries.append({"_id": qid, "text": synopsis})
                qrels[qid] = {}
            qrels[qid][doc.id] = 1
    if not queries:
        logger.warning("%s: no Python module page with a synopsis in the eval split", name)
        return None
    for doc in _long_distractors(ctx, {"python-doc"}, 150, name):
        corpus.append(doc_row(doc, text=_cap(doc.text, ctx)))
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a one-line summary of a Python module, retrieve its documentation page",
        description=(
            "Python standard library: a module's one-line synopsis (from its module directive, "
            "which the rendered page does not contain; any line containing it is removed) -> "
            "the full module page, among the eval-split Python pages and long technical "
            "documents from other sources."
        ),
        builder=f"{BUILDER}.build_python_synopsis",
        params={"distractors": 150, "cap_words": ctx.max_length_tokens},
        source_ids=[r["_id"] for r in corpus],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def man_pages(ctx: BuildContext) -> list[Document]:
    """Eval-split man pages (ids ``man:``) that have a NAME description."""
    return [
        d
        for d in ctx.corpus.docs
        if d.id.startswith("man:") and word_count(d.meta.get("description") or "") >= 2
    ]


def description_qrels(
    pages: Sequence[Document], prefix: str
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """One query per distinct description; every page with that description is relevant."""
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}
    by_desc: dict[str, str] = {}
    for doc in pages:
        desc = " ".join(doc.meta["description"].split())
        key = desc.lower()
        if key not in by_desc:
            qid = f"{prefix}-{doc.id.removeprefix('man:')}"
            by_desc[key] = qid
            queries.append({"_id": qid, "text": desc})
            qrels[qid] = {}
        qrels[by_desc[key]][doc.id] = 1
    return queries, qrels


def build_man_page(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Man page NAME description -> the full page with its NAME section removed."""
    name = "man-page"
    pages = man_pages(ctx)
    if not pages:
        logger.warning("%s: no man pages in the eval split", name)
        return None
    queries, qrels = description_qrels(pages, name)
    corpus = [doc_row(d, text=_cap(strip_name_section(d), ctx)) for d in pages]
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a one-line description of a command, function or module, "
        "retrieve its manual page",
        description=(
            "Manual pages (Linux man-pages, Perl): the NAME line's description -> the whole "
            "page with the NAME section removed; pages sharing a description are all relevant."
        ),
        builder=f"{BUILDER}.build_man_page",
        params={"cap_words": ctx.max_length_tokens},
        source_ids=[d.id for d in pages],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def clean_heading(heading: str) -> str:
    """A section heading without its numbering (``"10.1.2. Idioms"`` -> ``"Idioms"``)."""
    heading = re.sub(
        r"^\s*(?:[0-9]+(?:\.[0-9]+)*\.?|[A-Z]\.|Part [IVX]+\.?|Chapter \d+\.)\s+", "", heading
    )
    return " ".join(heading.split())


def build_section_heading(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """A section heading -> the whole document it heads (the heading line removed)."""
    name = "section-heading"
    docs = [
        d
        for d in ctx.corpus.sources(HEADING_SOURCES)
        if len(d.meta.get("headings") or []) >= 2 and word_count(d.text) >= 300
    ]
    counts: dict[str, int] = {}
    for d in docs:
        for h in set(clean_heading(h).lower() for h in d.meta["headings"]):
            counts[h] = counts.get(h, 0) + 1
    rng = ctx.rng(name)
    candidates: list[tuple[Document, str, str]] = []
    for d in docs:
        usable = []
        for raw in d.meta["headings"][1:]:
            head = clean_heading(raw)
            n_words = word_count(head)
            if not 3 <= n_words <= 15 or counts.get(head.lower(), 0) != 1:
                continue
            if head.lower() == clean_heading(d.title).lower() or not re.search("[A-Za-z]{3}", head):
                continue
            usable.append((raw, head))
        for raw, head in sample_ordered(rng, usable, 2):
            candidates.append((d, raw, head))
    chosen = sample_ordered(rng, candidates, ctx.n_queries(500))
    if not chosen:
        logger.warning("%s: no usable section headings in the eval split", name)
        return None
    removed: dict[str, set[str]] = {}
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}
    for i, (d, raw, head) in enumerate(chosen):
        removed.setdefault(d.id, set()).add(" ".join(raw.split()))
        qid = f"{name}-q{i:03d}"
        queries.append({"_id": qid, "text": head})
        qrels[qid] = {d.id: 1}
    corpus = []
    for d in docs:
        drop = removed.get(d.id, set())
        text = "\n".join(line for line in d.text.split("\n") if " ".join(line.split()) not in drop)
        corpus.append(doc_row(d, text=_cap(text, ctx)))
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given the heading of a section, retrieve the document that contains the section",
        description=(
            "Technical documentation (kernel, PostgreSQL, Python, Debian, SQLite): a section "
            "heading unique in the collection (numbering removed) -> the whole document, with "
            "the heading's own line removed from it; at most 2 headings per document."
        ),
        builder=f"{BUILDER}.build_section_heading",
        params={
            "max_queries": ctx.n_queries(500),
            "per_doc": 2,
            "cap_words": ctx.max_length_tokens,
        },
        source_ids=[d.id for d in docs],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def _insert_at_paragraph(text: str, fact: str, lo: float, hi: float, u: float) -> str:
    """Insert ``fact`` as its own paragraph between ``lo`` and ``hi`` (fractions of ``text``).

    The target is ``lo + u * (hi - lo)``; the nearest line break inside the bucket is used, or
    the nearest word boundary when the bucket holds no line break.
    """
    n = len(text)
    target = int((lo + u * (hi - lo)) * n)
    a, b = int(lo * n), int(hi * n)
    breaks = [m.start() for m in re.finditer(r"\n", text) if a <= m.start() <= b]
    if lo == 0.0:
        breaks.append(0)
    if hi == 1.0:
        breaks.append(n)
    if not breaks:
        breaks = [m.start() for m in re.finditer(r"\s", text) if a <= m.start() <= b] or [target]
    at = min(breaks, key=lambda c: (abs(c - target), c))
    before, after = text[:at].rstrip(), text[at:].lstrip()
    return "\n\n".join(p for p in (before, fact, after) if p)


def build_position(ctx: BuildContext, suite_dir: Path) -> list[TaskSummary]:
    """Three tasks (``position-start|middle|end``): one evidence sentence per long real document,
    at the start, middle or end; the documents, facts and queries are otherwise identical."""
    length = min(POSITION_LENGTH, ctx.max_length_tokens)
    base = "position"
    rng = ctx.rng(base)
    pool = [
        d
        for d in ctx.corpus.sources(LONG_SOURCES)
        if word_count(d.text) >= length and d.source not in ("bible-kjv",)
    ]
    hay = sample_ordered(rng, pool, N_DOCS)
    if len(hay) < 10:
        logger.warning("%s: only %d eval documents of >= %d words; skipped", base, len(hay), length)
        return []
    texts = [truncate_words(d.text, length) for d in hay]
    vocab = set(re.findall(r"[a-z]+", "\n".join(texts).lower()))
    needles = pick_needles(needle_candidates(ctx, vocab), len(hay), rng, base)
    draws = [rng.random() for _ in hay]
    templates = [NEEDLE_QUESTIONS[rng.randrange(len(NEEDLE_QUESTIONS))] for _ in hay]
    out = []
    for bucket, (lo, hi) in POSITION_BUCKETS.items():
        name = f"{base}-{bucket}"
        corpus, queries, qrels = [], [], {}
        for i, (d, text) in enumerate(zip(hay, texts, strict=True)):
            wn, fact = needles[i]
            body = truncate_words(text, length - word_count(fact))
            row = doc_row(d, text=_insert_at_paragraph(body, fact, lo, hi, draws[i]))
            row["evidence_id"] = wn.id
            corpus.append(row)
            lemma = wn.meta["lemmas"][0]
            qid = f"{base}-q{i:03d}"
            queries.append({"_id": qid, "text": templates[i].format(a=article(lemma), lemma=lemma)})
            qrels[qid] = {d.id: 1}
        out.append(
            write_suite_task(
                ctx,
                suite_dir,
                name=name,
                suite=SUITE,
                metric="ndcg_at_10",
                instruction="Given a question about the meaning of a word, retrieve the document "
                "that answers it",
                description=(
                    f"Evidence position ({bucket}): {len(hay)} real eval-split documents cut "
                    f"to {length} whitespace tokens, each with one inserted WordNet definition "
                    f"sentence of a rare noun placed in the {bucket} ({lo:.0%}-{hi:.0%} of the "
                    "text); the query asks what the noun means. The three position tasks "
                    "share documents, sentences and queries and differ only in the position."
                ),
                builder=f"{BUILDER}.build_position",
                params={"length": length, "bucket": [lo, hi], "docs": len(hay)},
                source_ids=[d.id for d in hay] + [n.id for n, _ in needles],
                corpus=corpus,
                queries=queries,
                qrels=qrels,
            )
        )
    return out


def build(
    ctx: BuildContext, suite_dir: Path, lengths: Sequence[int] | None = None
) -> list[TaskSummary]:
    """Build every long-document task into ``suite_dir``."""
    lengths = [n for n in (lengths or LENGTHS) if n <= ctx.max_length_tokens]
    filler = Filler.from_corpus(ctx.corpus.sources(FILLER_SOURCES))
    logger.info("longdoc: %d filler sentences; lengths %s", len(filler.sentences), lengths)
    out: list[TaskSummary] = []
    for kind in ("passkey", "needle"):
        for length in lengths:
            out.append(build_synthetic(ctx, suite_dir, kind, length, filler))
    for builder in (build_python_synopsis, build_man_page, build_section_heading):
        summary = builder(ctx, suite_dir)
        if summary is not None:
            out.append(summary)
    out.extend(build_position(ctx, suite_dir))
    return out
