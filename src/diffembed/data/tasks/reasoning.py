"""The reasoning-intensive suite: queries that share few words with their relevant document and
need an inference step to connect to it.

- ``wordnet-hypernym``: a WordNet noun definition with the words naming its own synset and its
  category (the hypernym's lemmas) blanked out -> the dictionary entry of that category
  ("what kind of thing is this?");
- ``reverse-dictionary``: a WordNet definition with the defined word (every lemma, and the
  matching Webster headwords) blanked out -> the Webster 1913 (GCIDE) entry of that word;
- ``concept-problems``: word problems generated from the concept catalogue
  (:mod:`diffembed.data.concepts`) -> the document describing the theorem, algorithm, data
  structure or formula that solves them, among computing-dictionary distractors.

Each task records its BM25 nDCG@10 in task.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffembed.data.concepts import CONCEPTS, concepts_of
from diffembed.data.documents import is_wordnet_copy
from diffembed.data.tasks.common import (
    BuildContext,
    TaskSummary,
    doc_row,
    mask_terms,
    mentions,
    sample_ordered,
    word_count,
    write_suite_task,
)
from diffembed.formats.corpus import Document

logger = logging.getLogger(__name__)

SUITE = "reasoning"
BUILDER = "diffembed.tasks.reasoning"
MAX_QUERIES = 1000
MAX_DOCS = 10000
BLANK = "___"
PROBLEMS_PER_CONCEPT = 12
WORDNET_TO_GCIDE_POS = {
    "n": ("n",),
    "v": ("v",),
    "a": ("a", "adj", "p. a"),
    "s": ("a", "adj", "p. a"),
    "r": ("adv",),
}


def _lemmas(doc: Document) -> list[str]:
    return [str(x) for x in doc.meta.get("lemmas") or []]


def build_wordnet_hypernym(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Masked WordNet noun definition -> the entry of its hypernym."""
    name = "wordnet-hypernym"
    nouns = [d for d in ctx.corpus.source("wordnet") if d.meta.get("pos") == "n"]
    noun_ids = {d.id for d in nouns}
    candidates: list[tuple[Document, list[str], str]] = []
    for d in nouns:
        hypers = [h for h in d.meta.get("hypernyms") or [] if h in noun_ids]
        if not hypers:
            continue
        terms = _lemmas(d) + [t for h in hypers for t in _lemmas(ctx.corpus.get(h))]  # type: ignore[arg-type]
        query = mask_terms(d.meta.get("definition") or "", terms, BLANK)
        if word_count(query.replace(BLANK, "")) < 3:
            continue
        candidates.append((d, hypers, query))
    targets = {h for _, hypers, _ in candidates for h in hypers}
    leaves = [c for c in candidates if c[0].id not in targets]
    chosen = sample_ordered(ctx.rng(name, "queries"), leaves, ctx.n_queries(MAX_QUERIES))
    if not chosen:
        logger.warning("%s: no WordNet noun with its hypernym in the eval split", name)
        return None
    queried = {d.id for d, _, _ in chosen}
    relevant = sorted({h for _, hypers, _ in chosen for h in hypers})
    others = [d for d in nouns if d.id not in queried and d.id not in set(relevant)]
    fill = sample_ordered(
        ctx.rng(name, "fill"), others, max(ctx.n_docs(MAX_DOCS) - len(relevant), 0)
    )
    keep = set(relevant) | {d.id for d in fill}
    corpus = [doc_row(d) for d in nouns if d.id in keep]
    queries = [{"_id": f"{name}-{d.id}", "text": q} for d, _, q in chosen]
    qrels = {f"{name}-{d.id}": {h: 1 for h in hypers} for d, hypers, _ in chosen}
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a definition whose key words are blanked out, retrieve the dictionary "
        "entry of the broader category the defined thing belongs to",
        description=(
            "WordNet: the definition of a noun synset, with its own lemmas and its hypernym's "
            f"lemmas (and plurals) replaced by {BLANK!r}, -> the entry (lemmas and gloss) of its "
            "direct hypernym(s) among the eval-split noun synsets; queried synsets are not in "
            "the corpus and are never hypernyms of another query."
        ),
        builder=f"{BUILDER}.build_wordnet_hypernym",
        params={
            "max_queries": ctx.n_queries(MAX_QUERIES),
            "max_docs": ctx.n_docs(MAX_DOCS),
            "blank": BLANK,
        },
        source_ids=sorted(keep | queried),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def gcide_pos_matches(wordnet_pos: str, gcide_pos: str) -> bool:
    """Whether a GCIDE part-of-speech label (``"v. t."``) fits a WordNet one (``"v"``)."""
    label = gcide_pos.strip().lower()
    if not label:
        return True
    label = label.removeprefix("prop. ")
    return any(label.startswith(p) for p in WORDNET_TO_GCIDE_POS.get(wordnet_pos, ()))


def webster_entries(ctx: BuildContext) -> list[Document]:
    """Eval-split GCIDE entries that are not copies of WordNet glosses."""
    return [d for d in ctx.corpus.source("gcide") if not is_wordnet_copy(d)]


def gloss_webster_pairs(
    ctx: BuildContext,
) -> tuple[list[tuple[Document, list[str]]], list[Document]]:
    """(WordNet synset, ids of its Webster entries) for every synset that has one, and the
    Webster entries themselves. An entry matches when one of its headwords equals one of the
    synset's lemmas (case-insensitive) and its part of speech is compatible."""
    entries = webster_entries(ctx)
    by_head: dict[str, list[Document]] = {}
    for e in entries:
        for h in e.meta.get("headwords") or [e.title]:
            by_head.setdefault(str(h).lower(), []).append(e)
    pairs = []
    for d in ctx.corpus.source("wordnet"):
        pos = str(d.meta.get("pos", ""))
        ids: list[str] = []
        for lemma in _lemmas(d):
            for e in by_head.get(lemma.lower(), []):
                if gcide_pos_matches(pos, str(e.meta.get("pos", ""))) and e.id not in ids:
                    ids.append(e.id)
        if ids:
            pairs.append((d, ids))
    return pairs, entries


def webster_corpus(
    ctx: BuildContext, entries: Sequence[Document], relevant: set[str], name: str
) -> list[dict[str, Any]]:
    """The relevant Webster entries plus random others, at most ``ctx.n_docs(MAX_DOCS)``, in corpus order."""
    others = [e for e in entries if e.id not in relevant]
    fill = sample_ordered(
        ctx.rng(name, "fill"), others, max(ctx.n_docs(MAX_DOCS) - len(relevant), 0)
    )
    keep = relevant | {e.id for e in fill}
    return [doc_row(e) for e in entries if e.id in keep]


def build_reverse_dictionary(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """WordNet definition without the defined word -> the Webster entry of that word."""
    name = "reverse-dictionary"
    pairs, entries = gloss_webster_pairs(ctx)
    by_id = {e.id: e for e in entries}
    candidates = []
    for d, ids in pairs:
        heads = [str(h) for i in ids for h in by_id[i].meta.get("headwords") or []]
        query = mask_terms(d.meta.get("definition") or "", _lemmas(d) + heads, BLANK)
        if word_count(query.replace(BLANK, "")) >= 4:
            candidates.append((d, ids, query))
    chosen = sample_ordered(ctx.rng(name, "queries"), candidates, ctx.n_queries(MAX_QUERIES))
    if not chosen:
        logger.warning("%s: no WordNet synset with a Webster entry in the eval split", name)
        return None
    relevant = {i for _, ids, _ in chosen for i in ids}
    corpus = webster_corpus(ctx, entries, relevant, name)
    queries = [{"_id": f"{name}-{d.id}", "text": q} for d, _, q in chosen]
    qrels = {f"{name}-{d.id}": dict.fromkeys(ids, 1) for d, ids, _ in chosen}
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a definition with the defined word removed, retrieve the Webster "
        "dictionary entry of the word it defines",
        description=(
            "Reverse dictionary: a WordNet definition (no usage examples) with every lemma of "
            f"the synset and the matching Webster headwords replaced by {BLANK!r} -> the GCIDE "
            "(Webster 1913) entries of that word with a compatible part of speech; GCIDE "
            "entries copied from WordNet are excluded."
        ),
        builder=f"{BUILDER}.build_reverse_dictionary",
        params={
            "max_queries": ctx.n_queries(MAX_QUERIES),
            "max_docs": ctx.n_docs(MAX_DOCS),
            "blank": BLANK,
        },
        source_ids=[r["_id"] for r in corpus] + [d.id for d, _, _ in chosen],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def build_concept_problems(ctx: BuildContext, suite_dir: Path) -> TaskSummary:
    """Generated word problems -> the concept needed to solve them."""
    name = "concept-problems"
    rng = ctx.rng(name, "problems")
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    concepts = concepts_of("eval")  # finetune-side concepts are training positives
    for concept in concepts:
        made = 0
        for _ in range(PROBLEMS_PER_CONCEPT * 5):
            text = concept.problem(rng)
            if text in seen:
                continue
            seen.add(text)
            qid = f"{name}-{concept.id}-{made:02d}"
            queries.append({"_id": qid, "text": text, "concept": concept.id})
            qrels[qid] = {f"concept:{concept.id}": 1}
            made += 1
            if made == PROBLEMS_PER_CONCEPT:
                break
    corpus = [
        {
            "_id": f"concept:{c.id}",
            "title": c.name,
            "text": c.document,
            "category": c.category,
        }
        for c in concepts
    ]
    terms = [t for c in CONCEPTS for t in (c.name, *c.aliases)]
    pool = [
        d
        for d in ctx.corpus.sources(("foldoc", "jargon"))
        if not mentions(d.title, terms) and word_count(d.text) >= 8
    ]
    distractors = sample_ordered(ctx.rng(name, "distractors"), pool, ctx.n_docs(3000))
    corpus += [doc_row(d) for d in distractors]
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a problem, retrieve the document describing the theorem, algorithm, "
        "data structure or formula needed to solve it",
        description=(
            f"ReasonAug-style problem -> concept: the {len(concepts)} evaluation-side concepts "
            "(theorems, algorithms, data structures, finance and physics formulas) of the "
            "package's catalogue (the other side trains; diffembed.data.concepts.concept_split), "
            f"{PROBLEMS_PER_CONCEPT} generated problems each (several templates, random numbers "
            "and names; no problem names its concept), among eval-split FOLDOC and Jargon "
            "entries as distractors (entries whose title names a concept are left out)."
        ),
        builder=f"{BUILDER}.build_concept_problems",
        params={"problems_per_concept": PROBLEMS_PER_CONCEPT, "distractors": 3000},
        source_ids=[d.id for d in distractors],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        external={
            "concepts": "diffembed.tasks.concepts.concepts_of('eval')",
            "n_concepts": len(concepts),
        },
    )


def build(ctx: BuildContext, suite_dir: Path) -> list[TaskSummary]:
    """Build every reasoning task into ``suite_dir``."""
    out = []
    for builder in (build_wordnet_hypernym, build_reverse_dictionary, build_concept_problems):
        summary = builder(ctx, suite_dir)
        if summary is not None:
            out.append(summary)
    return out
