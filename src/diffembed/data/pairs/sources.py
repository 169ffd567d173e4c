"""The task types of the training pairs and their builders (queries, positives and pools).

Each task type has one fixed instruction (:data:`INSTRUCTIONS`) and uses relevance the sources
themselves give:

* ``definition-entry``: a WordNet gloss -> the GCIDE, FOLDOC or Jargon entry of one of the
  synset's lemmas (one entry per synset, a seeded choice among the entries whose part of speech
  fits the synset's (:func:`pos_fits`: a GCIDE ``n.`` entry never defines a WordNet
  adjective); glosses that contain one of their lemmas as a word are left out; at most
  :data:`MAX_QUERIES_PER_POSITIVE` glosses per entry; GCIDE entries copied from WordNet are in
  no pool, and an entry that contains the gloss verbatim is never its positive).
* ``synopsis-page``: a one-line description -> its page with that line removed: man pages (the
  ``NAME`` header and line removed by :func:`diffembed.data.documents.strip_name_section`, as
  the evaluation's ``man-page`` task removes them; query = its description), Perl POD pages
  (likewise), Python module pages (query = the module's synopsis; every line holding it
  removed, and a title holding it replaced by the module name) and PostgreSQL reference pages
  (query = the ``name — purpose`` line's purpose; that line removed). Every page of such a pool
  gets the same cut, so a positive cannot be told apart from its negatives by it; pages sharing
  a description are never each other's negatives.
* ``question-answer``: a section heading that is a question (ends with ``?``; the Python FAQ
  and many kernel documents) -> the section under it. The corpus has no FAQ source of
  question/answer records, so these headed sections are its natural Q/A pairs.
* ``heading-section``: a section heading of a long document -> the section text under it (up to
  the next heading). Numbering (``3.1.``, ``Chapter 2.``) is stripped from the query; headings
  that occur more than once in the split (``Description``, ``Return values``...) and sections
  shorter than :data:`MIN_SECTION_TOKENS` are left out.
* ``gloss-hypernym``: a WordNet noun/verb gloss -> the entry (lemmas and gloss) of its direct
  hypernym (instance hypernyms included). Every hypernym and every ancestor of the query
  synset found in the split, and the query synset itself, are never negatives.
* ``problem-concept``: generated word problems -> the concept's document, with the concept
  catalogue and problem generator of :mod:`diffembed.data.concepts` (ReasonAug-style). Problems
  come from a seed stream of their own (not the evaluation's), wrapped in framings of
  :data:`PROBLEM_FRAMES`; any problem equal to a ``concept-problems`` query of the reasoning
  suite (rebuilt by :func:`diffembed.data.tasks.reasoning.build_concept_problems` for each of
  ``--eval-seeds``) is dropped. The concept documents are not corpus documents: they are the
  catalogue's, which the evaluation also uses as its relevant documents.

* ``sentence-document``: a sentence of a document -> the document without it (the inverse
  cloze task, :mod:`diffembed.data.pairs.cloze`): no labels needed, so every document of the
  split can give a pair.

A pool holds the documents of one source (id namespace: ``gcide``, ``man``, ``python``...; for
the section tasks, the sections of that source). Documents are rendered as the evaluation's
BEIR documents are (``"{title} {text}"``, :func:`~diffembed.data.pairs.pools.doc_string`);
sections are their text alone.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from diffembed.data.corpus.common import normalize_inline
from diffembed.data.documents import is_wordnet_copy, strip_name_section
from diffembed.data.pairs.cloze import INSTRUCTION as CLOZE_INSTRUCTION
from diffembed.data.pairs.cloze import build_sentence_document
from diffembed.data.pairs.context import PairsContext, Section
from diffembed.data.pairs.pools import (
    Candidate,
    Pool,
    contains_word,
    doc_string,
    norm_key,
    seeded,
    strip_numbering,
)
from diffembed.data.tasks.common import word_count
from diffembed.formats.corpus import Document
from diffembed.io import iter_jsonl

#: One instruction per task type, in output order.
INSTRUCTIONS: dict[str, str] = {
    "definition-entry": "Given a definition, retrieve the dictionary entry of the word it defines",
    "synopsis-page": "Given a one-line description of a command, function or module, retrieve "
    "its documentation page",
    "question-answer": "Given a question, retrieve the documentation section that answers it",
    "heading-section": "Given a section heading, retrieve the documentation section it introduces",
    "gloss-hypernym": "Given the definition of a word, retrieve the dictionary entry of its "
    "hypernym, the next more general concept",
    "problem-concept": "Given a problem, retrieve the document describing the theorem, algorithm, "
    "data structure or formula needed to solve it",
    "sentence-document": CLOZE_INSTRUCTION,
}
#: The task types built by default: every labelled one. ``sentence-document`` is built on request
#: only: at equal steps it diluted the labelled pairs (300 steps of a random-init 4 x 128 model:
#: held-out accuracy 0.335 with it vs 0.418 without; results/finetune-curve, session 12).
TASKS: tuple[str, ...] = tuple(t for t in INSTRUCTIONS if t != "sentence-document")

#: At most this many queries share one positive (definition-entry, gloss-hypernym).
MAX_QUERIES_PER_POSITIVE = 3
#: Sections (heading-section, question-answer) need at least this many whitespace tokens.
MIN_SECTION_TOKENS = 20
#: Id namespaces whose documents are split into sections.
SECTION_NAMESPACES: tuple[str, ...] = (
    "debian-handbook",
    "debian-reference",
    "linux",
    "perl",
    "postgresql",
    "python",
    "sqlite",
    "vim",
)
DICTIONARY_NAMESPACES: tuple[str, ...] = ("gcide", "foldoc", "jargon")
# WordNet part of speech -> the GCIDE part-of-speech labels (as printed) that fit it.
_WN_POS: dict[str, tuple[str, ...]] = {
    "n": ("n.",),
    "v": ("v.",),
    "a": ("a.", "adj.", "p. a."),
    "s": ("a.", "adj.", "p. a."),
    "r": ("adv.",),
}


# ------------------------------------------------------------------------------ dictionaries
def _dictionary_keys(doc: Document) -> list[str]:
    m = doc.meta
    keys = [doc.title, *m.get("headwords", []), *m.get("index_keys", []), *m.get("aliases", [])]
    return [str(k) for k in keys]


def dictionary_pool(ctx: PairsContext, namespace: str) -> Pool:
    """GCIDE / FOLDOC / Jargon entries: ``doc_string(title, text)``, keyed by headwords.

    GCIDE entries copied from WordNet (a ``WordNet ...`` source) are left out: they hold the
    very glosses the definition queries are made of.
    """
    name = f"dict:{namespace}"
    if name not in ctx.pools:
        pool = Pool(name, ctx.max_tokens)
        for d in ctx.by_namespace(namespace):
            if d.text.strip() and not is_wordnet_copy(d):
                pool.add(d.id, doc_string(d.title, d.text), _dictionary_keys(d))
        ctx.pools[name] = pool
    return ctx.pools[name]


def wordnet_pool(ctx: PairsContext) -> Pool:
    """WordNet synsets: ``"{lemmas} {gloss}"``, keyed by lemmas."""
    if "wordnet" not in ctx.pools:
        pool = Pool("wordnet", ctx.max_tokens)
        for d in ctx.by_namespace("wordnet"):
            if d.text.strip():
                pool.add(d.id, doc_string(d.title, d.text), d.meta.get("lemmas", []))
        ctx.pools["wordnet"] = pool
    return ctx.pools["wordnet"]


def _gloss(doc: Document) -> str:
    return normalize_inline(str(doc.meta.get("definition") or doc.text))


def _cap_per_positive(chosen: list[tuple[str, Candidate]], rng: random.Random) -> list[Candidate]:
    """Keep at most ``MAX_QUERIES_PER_POSITIVE`` candidates per positive (seeded), by origin."""
    order = list(range(len(chosen)))
    rng.shuffle(order)
    per_positive: Counter[int] = Counter()
    keep: list[tuple[str, Candidate]] = []
    for j in order:
        c = chosen[j][1]
        if per_positive[c.positive] < MAX_QUERIES_PER_POSITIVE:
            per_positive[c.positive] += 1
            keep.append(chosen[j])
    keep.sort(key=lambda x: x[0])
    return [c for _, c in keep]


def pos_fits(wordnet_pos: str, label: str) -> bool:
    """Whether a GCIDE part-of-speech label (``"v. t."``, ``"n. pl."``; empty = unknown) fits a
    WordNet part of speech (``"v"``): the label, or its leading words, is one of the forms."""
    label = " ".join(label.lower().split()).removeprefix("prop. ")
    if not label:
        return True
    return any(label == f or label.startswith(f + " ") for f in _WN_POS.get(wordnet_pos, ()))


def build_definition_entry(ctx: PairsContext) -> list[Candidate]:
    """WordNet gloss -> dictionary entry of one of the synset's lemmas (see module doc)."""
    rng = seeded(ctx.seed, "definition-entry")
    pools = [dictionary_pool(ctx, ns) for ns in DICTIONARY_NAMESPACES]
    # GCIDE parts of speech; FOLDOC and Jargon entries have none (any synset fits them).
    gcide_pos = {d.id: str(d.meta.get("pos") or "") for d in ctx.by_namespace("gcide")}
    chosen: list[tuple[str, Candidate]] = []
    for syn in ctx.by_namespace("wordnet"):
        gloss = _gloss(syn)
        lemmas = [str(x) for x in syn.meta.get("lemmas", [])]
        if not gloss or not lemmas or any(contains_word(gloss, lemma) for lemma in lemmas):
            continue
        lemma_keys = frozenset(norm_key(x) for x in lemmas)
        options: list[tuple[Pool, int]] = []
        for pool in pools:
            for i in sorted(pool.sharing(lemma_keys)):
                options.append((pool, i))
        if not options:
            continue
        wn_pos = str(syn.meta.get("pos", ""))
        low = gloss.lower()
        matching = [
            (p, i)
            for p, i in options
            if pos_fits(wn_pos, gcide_pos.get(p.ids[i], "")) and low not in p.texts[i].lower()
        ]
        if not matching:
            continue
        pool, i = rng.choice(matching)
        chosen.append((syn.id, Candidate(gloss, pool, i, origin=syn.id, exclude_keys=lemma_keys)))
    return _cap_per_positive(chosen, rng)


def build_gloss_hypernym(ctx: PairsContext) -> list[Candidate]:
    """WordNet gloss -> the entry of its direct hypernym (see module doc)."""
    rng = seeded(ctx.seed, "gloss-hypernym")
    pool = wordnet_pool(ctx)
    parents: dict[str, list[str]] = {
        d.id: sorted(
            {
                str(h)
                for h in [*d.meta.get("hypernyms", []), *d.meta.get("instance_hypernyms", [])]
                if str(h) in pool.by_id
            }
        )
        for d in ctx.by_namespace("wordnet")
    }

    def ancestors(doc_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(parents.get(doc_id, []))
        while stack:
            h = stack.pop()
            if h not in seen:
                seen.add(h)
                stack.extend(parents.get(h, []))
        return seen

    chosen: list[tuple[str, Candidate]] = []
    for syn in ctx.by_namespace("wordnet"):
        hyps = parents.get(syn.id, [])
        gloss = _gloss(syn)
        if not hyps or not gloss or syn.id not in pool.by_id:
            continue
        target = rng.choice(hyps)
        exclude = frozenset(pool.by_id[h] for h in ancestors(syn.id) | {syn.id})
        chosen.append(
            (syn.id, Candidate(gloss, pool, pool.by_id[target], origin=syn.id, exclude=exclude))
        )
    return _cap_per_positive(chosen, rng)


def _synopsis_entries(ctx: PairsContext, namespace: str) -> list[tuple[Document, str, str]]:
    """``(doc, page string, query)`` for every page of a synopsis source (query may be ``""``).

    The page string is ``full_text(title, body)`` with the query's line removed from the body:
    the ``NAME`` header and line (man, POD: :func:`strip_name_section`), every line containing the synopsis (Python; a title that
    contains it becomes the module name), the ``name — purpose`` line (PostgreSQL).
    """
    out: list[tuple[Document, str, str]] = []
    for d in ctx.by_namespace(namespace):
        m = d.meta
        title = d.title
        if namespace in ("man", "perl"):
            query = normalize_inline(str(m.get("description") or ""))
            body = strip_name_section(d)
        elif namespace == "python":
            query = normalize_inline(str(m.get("synopsis") or ""))
            body = d.text
            probe = query.rstrip(".").strip()
            if probe:
                body = "\n".join(ln for ln in body.split("\n") if not contains_word(ln, probe))
                if contains_word(title, probe):
                    title = str(m.get("module") or "")
        else:  # postgresql: a "name — purpose" line near the top
            query, body = "", d.text
            purpose = re.compile(rf"^{re.escape(d.title.strip())} — (.+)$")
            lines = body.split("\n")
            for j, ln in enumerate(lines[:6]):
                hit = purpose.match(ln.strip())
                if hit:
                    query = normalize_inline(hit.group(1))
                    body = "\n".join(lines[:j] + lines[j + 1 :])
                    break
        body = body.strip("\n")
        if body.strip():
            out.append((d, doc_string(title, body), query))
    return out


def _synopsis_keys(doc: Document) -> list[str]:
    keys = [re.sub(r"\([^)]*\)$", "", doc.title), doc.title]
    keys.extend(str(x) for x in doc.meta.get("names", []))
    if doc.meta.get("module"):
        keys.append(str(doc.meta["module"]))
    return keys


def build_synopsis_page(ctx: PairsContext) -> list[Candidate]:
    """One-line description -> its page with the line removed (see module doc)."""
    out: list[Candidate] = []
    for namespace in ("man", "perl", "postgresql", "python"):
        entries = _synopsis_entries(ctx, namespace)
        if not entries:
            continue
        pool = Pool(f"synopsis:{namespace}", ctx.max_tokens)
        for d, page, _ in entries:
            pool.add(d.id, page, _synopsis_keys(d))
        ctx.pools[pool.name] = pool
        same_query: dict[str, list[int]] = defaultdict(list)
        for d, _, query in entries:
            if query:
                same_query[query.lower()].append(pool.by_id[d.id])
        for d, _, query in entries:
            if word_count(query) < 2:
                continue
            i = pool.by_id[d.id]
            twins = [j for j in same_query[query.lower()] if j != i]
            if twins and min(twins) < i:
                continue  # the same description for several pages: keep the first only
            out.append(Candidate(query, pool, i, origin=d.id, exclude=frozenset(twins)))
    return out


def split_sections(doc: Document) -> list[Section]:
    """Sections located by the document's own heading list (``meta.headings`` or
    ``meta.sections``): each heading is the next line equal to it; the first heading is
    skipped when it is the document title."""
    headings = [str(h) for h in (doc.meta.get("headings") or doc.meta.get("sections") or [])]
    lines = doc.text.split("\n")
    found: list[tuple[int, str]] = []
    pos = 0
    for h in headings:
        target = h.strip()
        for i in range(pos, len(lines)):
            if lines[i].strip() == target:
                found.append((i, h))
                pos = i + 1
                break
    sections: list[Section] = []
    for j, (i, h) in enumerate(found):
        end = found[j + 1][0] if j + 1 < len(found) else len(lines)
        if j == 0 and i == 0 and norm_key(h) == norm_key(doc.title):
            continue
        body = "\n".join(lines[i + 1 : end]).strip("\n")
        sections.append(Section(doc.id, j, h, body))
    return sections


def section_pools(ctx: PairsContext) -> dict[str, tuple[Pool, list[Section]]]:
    """Per section namespace: a pool of section bodies (keyed by heading) and the sections."""
    if ctx.sections is None:
        result: dict[str, tuple[Pool, list[Section]]] = {}
        for namespace in SECTION_NAMESPACES:
            sections = [
                s
                for d in ctx.by_namespace(namespace)
                for s in split_sections(d)
                if word_count(s.body) >= MIN_SECTION_TOKENS
            ]
            if not sections:
                continue
            pool = Pool(f"sections:{namespace}", ctx.max_tokens)
            for s in sections:
                pool.add(s.id, s.body, [strip_numbering(s.heading)])
            ctx.pools[pool.name] = pool
            result[namespace] = (pool, sections)
        ctx.sections = result
    return ctx.sections


def _heading_frequency(ctx: PairsContext) -> Counter[str]:
    """How often each normalised heading occurs over all sections of all section sources."""
    freq: Counter[str] = Counter()
    for namespace in SECTION_NAMESPACES:
        for d in ctx.by_namespace(namespace):
            freq.update(norm_key(strip_numbering(s.heading)) for s in split_sections(d))
    return freq


def build_heading_section(ctx: PairsContext) -> list[Candidate]:
    """Section heading -> section text (headings that occur once only; not questions)."""
    freq = _heading_frequency(ctx)
    out: list[Candidate] = []
    for pool, sections in section_pools(ctx).values():
        for s in sections:
            query = strip_numbering(s.heading)
            if query.endswith("?") or freq[norm_key(query)] > 1:
                continue
            if not re.search(r"[^\W\d_]", query):
                continue
            out.append(Candidate(query, pool, pool.by_id[s.id], origin=s.id))
    return out


def build_question_answer(ctx: PairsContext) -> list[Candidate]:
    """Question heading (ends with ``?``) -> the section under it."""
    out: list[Candidate] = []
    for pool, sections in section_pools(ctx).values():
        for s in sections:
            query = strip_numbering(s.heading)
            if query.endswith("?") and word_count(query) >= 2:
                query = re.sub(r"\s+\?$", "?", query)
                out.append(Candidate(query, pool, pool.by_id[s.id], origin=s.id))
    return out


#: Framings of a generated problem (``{p}``), so training queries differ in surface form from
#: the evaluation's bare problems.
PROBLEM_FRAMES: tuple[str, ...] = (
    "{p}",
    "Problem: {p}",
    "Exercise. {p}",
    "A student asks: {p}",
    "{p} Which result or method gives the answer?",
    "{p} Explain how to work it out.",
    "Homework question: {p}",
    "Puzzle: {p}",
)


def eval_problem_texts(seeds: Sequence[int]) -> set[str]:
    """The (normalised) query texts of the reasoning suite's ``concept-problems`` task for each
    task-build seed, made by its own builder into a temporary folder."""
    from diffembed.data.tasks.common import BuildContext as TaskContext
    from diffembed.data.tasks.eval_corpus import EvalCorpus
    from diffembed.data.tasks.reasoning import build_concept_problems

    texts: set[str] = set()
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = TaskContext(corpus=EvalCorpus([], [], ""), seed=seed, measure_bm25=False)
            summary = build_concept_problems(ctx, Path(tmp))
            queries = iter_jsonl(Path(tmp) / summary.name / "queries.jsonl")
            texts.update(norm_key(rec["text"]) for _, rec in queries)
    return texts


def build_problem_concept(ctx: PairsContext) -> list[Candidate]:
    """Generated problems -> concept documents of the finetune side of the catalogue of
    :mod:`diffembed.data.concepts` (``concepts_of("finetune")``; the eval side is never used).

    Per concept, ``ctx.problems_per_concept`` distinct problems from the catalogue's generator
    (``Concept.problem``) with a seed stream of this builder (``"{seed}:problem-concept:..."``,
    unlike the evaluation's sha256-derived one), each in a seeded framing of
    :data:`PROBLEM_FRAMES` (BM25 mines with the bare problem); problems equal (before framing) to an evaluation query of the task
    builds with ``ctx.eval_seeds`` are dropped. Pool: the concept documents (``full_text(name,
    document)``, as the evaluation shows them) plus finetune-split FOLDOC and Jargon entries whose
    title names no concept (the evaluation's distractor kind).
    """
    try:
        from diffembed.data.concepts import CONCEPTS, concepts_of
        from diffembed.data.tasks.reasoning import build_concept_problems  # noqa: F401
    except ImportError as e:
        ctx.notes["problem-concept"] = f"left out: the concept catalogue is not available ({e})"
        return []
    reserved = eval_problem_texts(ctx.eval_seeds)
    pool = Pool("concepts", ctx.max_tokens)
    terms = [t for c in CONCEPTS for t in (c.name, *c.aliases)]
    # Only the finetune side of the catalogue: the eval side's documents are the reasoning
    # suite's relevant documents and are never shown in training, not even as negatives.
    train_concepts = concepts_of("finetune")
    for c in train_concepts:
        pool.add(f"concept:{c.id}", doc_string(c.name, c.document), [c.id, c.name, *c.aliases])
    for namespace in ("foldoc", "jargon"):
        for d in ctx.by_namespace(namespace):
            if word_count(d.text) >= 8 and not any(contains_word(d.title, t) for t in terms):
                pool.add(d.id, doc_string(d.title, d.text), _dictionary_keys(d))
    ctx.pools[pool.name] = pool
    out: list[Candidate] = []
    dropped: set[str] = set()
    for c in train_concepts:
        rng = seeded(ctx.seed, "problem-concept", "problems", c.id)
        frames = seeded(ctx.seed, "problem-concept", "frames", c.id)
        seen: set[str] = set()
        for _ in range(20 * ctx.problems_per_concept):
            if len(seen) == ctx.problems_per_concept:
                break
            core = normalize_inline(c.problem(rng))
            key = norm_key(core)
            if key in seen:
                continue
            if key in reserved:
                dropped.add(key)
                continue
            seen.add(key)
            query = frames.choice(PROBLEM_FRAMES).format(p=core)
            positive = pool.by_id[f"concept:{c.id}"]
            out.append(Candidate(query, pool, positive, origin=c.id, bm25_query=core))
    ctx.notes["problem-concept"] = (
        f"{len(train_concepts)} finetune-side concepts of {len(CONCEPTS)}; {len(dropped)} distinct "
        "generated problems dropped as equal "
        f"to an evaluation query (task seeds {list(ctx.eval_seeds)})"
    )
    return out


BUILDERS: dict[str, Callable[[PairsContext], list[Candidate]]] = {
    "definition-entry": build_definition_entry,
    "synopsis-page": build_synopsis_page,
    "question-answer": build_question_answer,
    "heading-section": build_heading_section,
    "gloss-hypernym": build_gloss_hypernym,
    "problem-concept": build_problem_concept,
    "sentence-document": build_sentence_document,
}
