"""The instruction-following suite, FollowIR-style: every query carries an original instruction
and a changed one that adds a constraint on document metadata, so that some documents relevant
under the original are not relevant under the changed one (recorded with score 0 in
``qrels/changed.tsv``; p-MRR is computed over them).

- ``wordnet-pos``: a word -> its WordNet senses; changed: only the senses of one part of speech;
- ``wordnet-lexname``: a word -> its WordNet senses; changed: only the senses in one
  lexicographer category (people, artifacts, motion verbs, ...);
- ``man-section``: a topic word -> manual pages whose NAME description mentions it; changed:
  only pages of one manual section (system calls, library functions, Perl modules, ...).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffembed.data.tasks.common import (
    BuildContext,
    TaskSummary,
    doc_row,
    sample_ordered,
    truncate_words,
    write_suite_task,
)
from diffembed.formats.corpus import Document

logger = logging.getLogger(__name__)

SUITE = "instruct"
BUILDER = "diffembed.tasks.instruct"
MAX_QUERIES = 300
MAX_DOCS = 5000
MAN_DOC_WORDS = 2048
POS_GROUPS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
# WordNet's lexicographer files (lexnames(5WN)), described for instructions and labels.
LEXNAMES: dict[str, str] = {
    "adj.all": "adjectives of any kind",
    "adj.pert": "relational adjectives (pertaining to a noun)",
    "adj.ppl": "participial adjectives",
    "adv.all": "adverbs",
    "noun.Tops": "the most general kinds of thing",
    "noun.act": "acts or actions",
    "noun.animal": "animals",
    "noun.artifact": "man-made objects",
    "noun.attribute": "attributes of people and objects",
    "noun.body": "body parts",
    "noun.cognition": "cognitive processes and contents",
    "noun.communication": "communicative processes and contents",
    "noun.event": "natural events",
    "noun.feeling": "feelings and emotions",
    "noun.food": "foods and drinks",
    "noun.group": "groupings of people or objects",
    "noun.location": "spatial position and places",
    "noun.motive": "goals and motives",
    "noun.object": "natural objects (not man-made)",
    "noun.person": "people",
    "noun.phenomenon": "natural phenomena",
    "noun.plant": "plants",
    "noun.possession": "possession and transfer of possession",
    "noun.process": "natural processes",
    "noun.quantity": "quantities and units of measure",
    "noun.relation": "relations between people, things or ideas",
    "noun.shape": "two- and three-dimensional shapes",
    "noun.state": "stable states of affairs",
    "noun.substance": "substances",
    "noun.time": "time and temporal relations",
    "verb.body": "grooming, dressing and bodily care",
    "verb.change": "change of size, temperature, intensity and the like",
    "verb.cognition": "thinking, judging, analyzing and doubting",
    "verb.communication": "telling, asking, ordering and singing",
    "verb.competition": "fighting and athletic activities",
    "verb.consumption": "eating and drinking",
    "verb.contact": "touching, hitting, tying and digging",
    "verb.creation": "sewing, baking, painting and performing",
    "verb.emotion": "feeling",
    "verb.motion": "walking, flying, swimming and other motion",
    "verb.perception": "seeing, hearing and feeling",
    "verb.possession": "buying, selling and owning",
    "verb.social": "political and social activities and events",
    "verb.stative": "being, having and spatial relations",
    "verb.weather": "raining, snowing, thawing and thundering",
}
UNINFORMATIVE_LEXNAMES = frozenset({"adj.all", "adv.all", "noun.Tops", "adj.ppl"})
MAN_SECTIONS: dict[str, str] = {
    "1": "user commands (section 1)",
    "2": "system calls (section 2)",
    "3": "C library functions (section 3)",
    "3perl": "Perl modules (section 3perl)",
    "4": "special files and devices (section 4)",
    "5": "file formats and conventions (section 5)",
    "6": "games (section 6)",
    "7": "overviews, conventions and miscellanea (section 7)",
    "8": "system administration commands (section 8)",
}
STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "into",
        "over",
        "under",
        "about",
        "each",
        "other",
        "their",
        "which",
        "when",
        "where",
        "used",
        "using",
        "given",
        "file",
        "files",
        "function",
        "functions",
        "return",
        "value",
        "values",
    ]
)


def paired_instructions(subject: str, rest: str) -> tuple[str, str]:
    """The original and the changed instruction, worded with the same content words so that a
    bag-of-words retriever (stop words removed) cannot tell them apart: only "and" / "but ...
    not" differ, so any rank change must come from understanding the instruction.

    >>> paired_instructions("Entries where this term is a verb", "its other entries")[1]
    'Entries where this term is a verb are relevant, but its other entries are not relevant.'
    """
    return (
        f"{subject} are relevant, and {rest} are relevant.",
        f"{subject} are relevant, but {rest} are not relevant.",
    )


def lexname_phrase(lexname: str) -> str:
    """``"noun.animal"`` -> ``"a noun denoting animals"``."""
    kind, _, _ = lexname.partition(".")
    what = LEXNAMES.get(lexname, lexname)
    if kind == "verb":
        return f"a verb of {what}"
    if kind == "noun":
        return f"a noun denoting {what}"
    return what


def inflections(words: Sequence[str]) -> set[str]:
    """Lower-case words with their regular plural / third-person forms."""
    out: set[str] = set()
    for w in words:
        w = w.lower()
        out.update((w, w + "s", w + "es"))
        if w.endswith("y"):
            out.add(w[:-1] + "ies")
    return out


def _senses_by_lemma(docs: Sequence[Document]) -> dict[str, list[Document]]:
    by_lemma: dict[str, list[Document]] = {}
    for d in docs:
        for lemma in dict.fromkeys(str(x).lower() for x in d.meta.get("lemmas") or []):
            if re.fullmatch(r"[a-z][a-z-]{2,}", lemma):
                by_lemma.setdefault(lemma, []).append(d)
    return by_lemma


def _wordnet_task(
    ctx: BuildContext,
    suite_dir: Path,
    name: str,
    group_of: Any,
    subject: Any,
    description: str,
) -> TaskSummary | None:
    """A WordNet instruct task: ``group_of(doc)`` is the metadata value the changed
    instruction keeps (None: never kept); ``subject(value)`` names the kept entries."""
    wordnet = ctx.corpus.source("wordnet")
    by_lemma = _senses_by_lemma(wordnet)
    rng = ctx.rng(name)
    candidates: list[tuple[str, list[Document], str]] = []
    for lemma in sorted(by_lemma):
        senses = by_lemma[lemma]
        groups = sorted({g for g in (group_of(d) for d in senses) if g is not None})
        if len(senses) < 2 or not groups:
            continue
        keep = [g for g in groups if 0 < sum(group_of(d) == g for d in senses) < len(senses)]
        if keep:
            candidates.append((lemma, senses, keep[rng.randrange(len(keep))]))
    chosen = sample_ordered(rng, candidates, ctx.n_queries(MAX_QUERIES))
    if not chosen:
        logger.warning("%s: no polysemous word in the eval split", name)
        return None
    relevant = {d.id for _, senses, _ in chosen for d in senses}
    lemmas = [lemma for lemma, _, _ in chosen]
    forms = inflections(lemmas)
    hard = [
        d
        for d in wordnet
        if d.id not in relevant and forms.intersection(re.findall(r"[a-z][a-z-]*", d.text.lower()))
    ]
    hard = sample_ordered(ctx.rng(name, "hard"), hard, ctx.n_docs(MAX_DOCS) // 2)
    taken = relevant | {d.id for d in hard}
    rest = [d for d in wordnet if d.id not in taken]
    fill = sample_ordered(ctx.rng(name, "fill"), rest, max(ctx.n_docs(MAX_DOCS) - len(taken), 0))
    keep_ids = taken | {d.id for d in fill}
    corpus = [doc_row(d) for d in wordnet if d.id in keep_ids]
    queries, qrels_og, qrels_changed = [], {}, {}
    for lemma, senses, value in chosen:
        qid = f"{name}-{lemma}"
        og, changed = paired_instructions(subject(value), "its other entries")
        queries.append(
            {
                "_id": qid,
                "text": lemma,
                "instruction_og": og,
                "instruction_changed": changed,
                "constraint": value,
            }
        )
        qrels_og[qid] = {d.id: 1 for d in senses}
        qrels_changed[qid] = {d.id: int(group_of(d) == value) for d in senses}
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        kind="instruct",
        metric="p-mrr",
        instruction="Given a word and a statement of which of its senses are wanted, retrieve "
        "the dictionary entries that define those senses",
        description=description,
        builder=f"{BUILDER}.{name.replace('-', '_')}",
        params={"max_queries": ctx.n_queries(MAX_QUERIES), "max_docs": ctx.n_docs(MAX_DOCS)},
        source_ids=sorted(keep_ids),
        corpus=corpus,
        queries=queries,
        qrels_og=qrels_og,
        qrels_changed=qrels_changed,
    )


def build_wordnet_pos(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Changed instruction: only the senses of one part of speech."""

    def subject(pos: str) -> str:
        return f"Entries where this term is {'an' if pos[0] in 'aeiou' else 'a'} {pos}"

    return _wordnet_task(
        ctx,
        suite_dir,
        "wordnet-pos",
        lambda d: POS_GROUPS.get(str(d.meta.get("pos"))),
        subject,
        "WordNet: a word whose eval-split synsets span several parts of speech; original "
        "instruction: every sense is relevant; changed: only the senses of one part of speech "
        "(noun, verb, adjective or adverb). Documents are synsets (lemmas as title, gloss and "
        "examples as text), with synsets whose gloss mentions a queried word as hard negatives.",
    )


def build_wordnet_lexname(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Changed instruction: only the senses of one lexicographer category."""

    def group(d: Document) -> str | None:
        lex = str(d.meta.get("lexname", ""))
        return None if lex in UNINFORMATIVE_LEXNAMES or not lex else lex

    def subject(lex: str) -> str:
        return f"Entries where this term is {lexname_phrase(lex)}"

    return _wordnet_task(
        ctx,
        suite_dir,
        "wordnet-lexname",
        group,
        subject,
        "WordNet: a word whose eval-split synsets fall in several lexicographer categories; "
        "original instruction: every sense is relevant; changed: only the senses in one "
        "category (e.g. 'a noun denoting animals', 'a verb of motion'). Documents are synsets, "
        "with synsets whose gloss mentions a queried word as hard negatives.",
    )


def build_man_section(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """A topic word -> man pages whose description mentions it; changed: one section only."""
    name = "man-section"
    pages = [
        d
        for d in ctx.corpus.docs
        if d.id.startswith("man:") and d.meta.get("description") and d.meta.get("section")
    ]
    by_word: dict[str, list[Document]] = {}
    for d in pages:
        words = set(re.findall(r"[a-z]{4,}", str(d.meta["description"]).lower())) - STOPWORDS
        for w in words:
            by_word.setdefault(w, []).append(d)
    rng = ctx.rng(name)
    candidates = []
    for word in sorted(by_word):
        docs = by_word[word]
        sections = sorted({str(d.meta["section"]) for d in docs})
        if len(docs) < 2 or len(sections) < 2:
            continue
        candidates.append((word, docs, sections[rng.randrange(len(sections))]))
    chosen = sample_ordered(rng, candidates, ctx.n_queries(MAX_QUERIES))
    if len(chosen) < 3:
        logger.warning("%s: only %d usable topic words; skipped", name, len(chosen))
        return None
    corpus = [doc_row(d, text=truncate_words(d.text, MAN_DOC_WORDS)) for d in pages]
    queries, qrels_og, qrels_changed = [], {}, {}
    for word, docs, section in chosen:
        qid = f"{name}-{word}"
        what = MAN_SECTIONS.get(section, f"section {section}")
        og, changed = paired_instructions(
            f"Manual pages of {what} about this topic", "pages from other sections"
        )
        queries.append(
            {
                "_id": qid,
                "text": word,
                "instruction_og": og,
                "instruction_changed": changed,
                "constraint": section,
            }
        )
        qrels_og[qid] = {d.id: 1 for d in docs}
        qrels_changed[qid] = {d.id: int(str(d.meta["section"]) == section) for d in docs}
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        kind="instruct",
        metric="p-mrr",
        instruction="Given a topic and a statement of which manual pages are wanted, retrieve "
        "the matching manual pages",
        description=(
            "Manual pages: a topic word that occurs in the NAME descriptions of pages from at "
            "least two sections; original instruction: every such page is relevant; changed: "
            f"only those of one section. Pages are capped at {MAN_DOC_WORDS} whitespace tokens."
        ),
        builder=f"{BUILDER}.build_man_section",
        params={"max_queries": ctx.n_queries(MAX_QUERIES), "doc_words": MAN_DOC_WORDS},
        source_ids=[d.id for d in pages],
        corpus=corpus,
        queries=queries,
        qrels_og=qrels_og,
        qrels_changed=qrels_changed,
    )


def build(ctx: BuildContext, suite_dir: Path) -> list[TaskSummary]:
    """Build every instruction-following task into ``suite_dir``."""
    out = []
    for builder in (build_wordnet_pos, build_wordnet_lexname, build_man_section):
        summary = builder(ctx, suite_dir)
        if summary is not None:
            out.append(summary)
    return out
