"""Training pairs from the ``finetune`` split of a corpus: ``diffembed pairs build``.

Only ``finetune.jsonl`` of the corpus directory is read (every record must say
``"split": "finetune"``), so no text of a pretraining or evaluation document can reach a pair.
The output is the pairs format of :mod:`diffembed.formats.pairs`, one JSON object per line::

    {"query": ..., "positive": ..., "negatives": [...], "instruction": ..., "task": ...}

Task types, each with one fixed instruction (:data:`INSTRUCTIONS`), from relevance the sources
themselves give:

* ``definition-entry``: a WordNet gloss -> the GCIDE, FOLDOC or Jargon entry of one of the
  synset's lemmas (one entry per synset, a seeded choice among the entries whose part of speech
  fits the synset's (:func:`pos_fits`: a GCIDE ``n.`` entry never defines a WordNet
  adjective); glosses that contain one of their lemmas as a word are left out; at most
  :data:`MAX_QUERIES_PER_POSITIVE` glosses per entry; GCIDE entries copied from WordNet are in
  no pool, and an entry that contains the gloss verbatim is never its positive).
* ``synopsis-page``: a one-line description -> its page with that line removed: man pages (the
  ``NAME`` paragraph removed, query = its description), Perl POD pages (likewise), Python
  module pages (query = the module's synopsis; every line holding it removed, and a title
  holding it replaced by the module name) and PostgreSQL reference pages (query = the
  ``name — purpose`` line's purpose; that line removed). Every page of such a pool gets the
  same cut, so a positive cannot be told apart from its negatives by it; pages sharing a
  description are never each other's negatives.
* ``question-answer``: a section heading that is a question (ends with ``?``; the Python FAQ
  and many kernel documents) -> the section under it. The corpus has no FAQ source of
  question/answer records, so these headed sections are its natural Q/A pairs.
* ``heading-section``: a section heading of a long document -> the section text under it (up to
  the next heading). Numbering (``3.1.``, ``Chapter 2.``) is stripped from the query; headings
  that occur more than once in the split (``Description``, ``Return values``...) and sections shorter
  than :data:`MIN_SECTION_TOKENS` are left out.
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

**Hard negatives.** BM25 (bm25s, Lucene variant, k1 1.5, b 0.75, English stopwords, snowball
stemming when PyStemmer is installed) over the candidate documents of the positive's pool: the
documents of the same source (id namespace: ``gcide``, ``man``, ``python``...; for the section
tasks, the sections of that source). Never negatives: the positive, any document with the same
text, any document that shares a title/headword/lemma key with the positive (and for
``definition-entry`` with any lemma of the query synset), and the task-specific exclusions
above. The ``K`` best-scoring remaining documents with a BM25 score above zero are the
negatives (ties broken by pool order); when fewer exist the rest are drawn at random (seeded)
from the pool and counted as ``random_fill`` in the report. Pairs left with no negative at all
(a pool of one) are dropped.

**Re-mining with a model** (``--miner MODEL_DIR``): ``Embedder.load(MODEL_DIR)`` encodes the
queries with the task instruction and the pool documents without one; candidates are ranked by
cosine similarity with the same exclusions, and the negatives are the top-ranked remaining
documents after (1) skipping the ``--miner-skip`` highest-ranked ones (default 2) and (2)
dropping any whose similarity exceeds ``--miner-max-ratio`` (default 0.95) times the positive's
similarity (when that is positive): the highest-ranked non-positives are the likeliest false
negatives (unlabelled relevant documents). BM25 statistics are still reported.

Documents are rendered as the evaluation's BEIR documents are (``"{title} {text}"``,
:attr:`diffembed.formats.tasks.Document.full_text`); sections are their text alone.

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

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.data.corpus.common import normalize_inline
from diffembed.formats.pairs import parse_pair
from diffembed.formats.tasks import Document
from diffembed.io import atomic_write, write_json

logger = logging.getLogger(__name__)

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
}
TASKS: tuple[str, ...] = tuple(INSTRUCTIONS)

DEFAULT_HARD_NEGATIVES = 7
DEFAULT_MAX_DOC_TOKENS = 2000
DEFAULT_MINER_SKIP = 2
DEFAULT_MINER_MAX_RATIO = 0.95
DEFAULT_PROBLEMS_PER_CONCEPT = 24
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
_NUMBERING = re.compile(
    r"^(?:(?:chapter|appendix|section|part)\s+)?(?:\d+|[A-Z](?=[.\-]\d))(?:[.\-]\d+)*[.:)]?\s+",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\S+")


class PairsBuildError(ValueError):
    """The corpus cannot be turned into pairs (missing file, wrong split, nothing built)."""


# ------------------------------------------------------------------------------ corpus
def read_finetune_docs(corpus_dir: str | Path) -> list[Document]:
    """Read ``corpus_dir/finetune.jsonl``, sorted by id; any record of another split raises."""
    path = Path(corpus_dir) / "finetune.jsonl"
    if not path.is_file():
        raise PairsBuildError(f"{path}: no such file (build the corpus first)")
    docs: list[Document] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PairsBuildError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            if rec.get("split") != "finetune":
                raise PairsBuildError(
                    f"{path}:{lineno}: record {rec.get('id')!r} has split {rec.get('split')!r}, "
                    "not 'finetune'"
                )
            docs.append(
                Document(
                    id=str(rec["id"]),
                    source=str(rec.get("source", "")),
                    title=str(rec.get("title") or ""),
                    text=str(rec.get("text") or ""),
                    meta=dict(rec.get("meta") or {}),
                )
            )
    if not docs:
        raise PairsBuildError(f"{path}: no documents")
    docs.sort(key=lambda d: d.id)
    return docs


# ------------------------------------------------------------------------------ text helpers
def cap_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after its ``max_tokens``-th whitespace token (layout kept), and whether it
    was cut. ``max_tokens <= 0`` keeps the text whole."""
    if max_tokens <= 0:
        return text, False
    end = None
    for i, m in enumerate(_TOKEN.finditer(text)):
        if i == max_tokens - 1:
            end = m.end()
            break
    if end is None or _TOKEN.search(text, end) is None:
        return text, False
    return text[:end], True


def n_tokens(text: str) -> int:
    """Whitespace tokens of ``text``."""
    return len(text.split())


def norm_key(text: str) -> str:
    """A title/headword/lemma key: whitespace-collapsed, lower case."""
    return " ".join(text.replace("_", " ").split()).lower()


def doc_string(title: str, body: str) -> str:
    """What retrievers see of a BEIR document with this title and text (``"{title} {text}"``,
    :attr:`diffembed.formats.tasks.Document.full_text`), so pairs look like evaluation documents."""
    return Document(id="", text=body.strip(), title=title.strip()).full_text


def strip_numbering(heading: str) -> str:
    """A heading without its numbering (``"3.1. Foo"``, ``"Chapter 2. Foo"`` -> ``"Foo"``)."""
    out = normalize_inline(_NUMBERING.sub("", heading.strip(), count=1)).rstrip(":").strip()
    return out if len(out) >= 2 else normalize_inline(heading)


def contains_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` as a whole word or phrase, ignoring case."""
    word = word.strip()
    if not word:
        return False
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def _seeded(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


# ------------------------------------------------------------------------------ pools
class Pool:
    """The candidate documents of one source for one kind of positive.

    ``texts`` are the strings written to the pairs (already length-capped); ``keys`` the
    normalised titles/headwords/lemmas of each document: documents that share a key with a
    positive are never its negatives.
    """

    def __init__(self, name: str, max_tokens: int) -> None:
        self.name = name
        self.max_tokens = max_tokens
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.cut: list[bool] = []
        self.keys: list[frozenset[str]] = []
        self.by_id: dict[str, int] = {}
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.by_text: dict[str, list[int]] = defaultdict(list)

    def add(self, doc_id: str, text: str, keys: Iterable[str]) -> int:
        """Add a document (its text is capped here); returns its index."""
        if doc_id in self.by_id:
            raise ValueError(f"pool {self.name}: duplicate id {doc_id!r}")
        capped, cut = cap_tokens(text.strip(), self.max_tokens)
        i = len(self.ids)
        keyset = frozenset(k for k in (norm_key(x) for x in keys) if k)
        self.ids.append(doc_id)
        self.texts.append(capped)
        self.cut.append(cut)
        self.keys.append(keyset)
        self.by_id[doc_id] = i
        for k in keyset:
            self.by_key[k].append(i)
        self.by_text[capped].append(i)
        return i

    def __len__(self) -> int:
        return len(self.ids)

    def sharing(self, keys: Iterable[str]) -> set[int]:
        """Indices of the documents with any of ``keys``."""
        out: set[int] = set()
        for k in keys:
            out.update(self.by_key.get(k, ()))
        return out


@dataclass
class Candidate:
    """A query and its positive in a pool, before negatives are mined.

    ``exclude`` (indices) and ``exclude_keys`` (keys) add to the exclusions every pair has: the
    positive, its duplicates by text and the documents sharing one of its keys.
    """

    query: str
    pool: Pool
    positive: int
    origin: str
    exclude: frozenset[int] = frozenset()
    exclude_keys: frozenset[str] = frozenset()
    #: The text BM25 mines with when it is not the query (a framed problem's bare problem).
    bm25_query: str | None = None

    def excluded(self) -> set[int]:
        """Every pool index that must not be a negative of this candidate."""
        pool = self.pool
        out = {self.positive, *self.exclude}
        out.update(pool.by_text.get(pool.texts[self.positive], ()))
        out.update(pool.sharing(pool.keys[self.positive] | self.exclude_keys))
        return out


def _bm25_tokenizer() -> tuple[Callable[[list[str]], list[list[str]]], str | None]:
    try:
        import bm25s
    except ImportError as e:  # pragma: no cover - bm25s is a dependency of the eval extra
        raise ImportError("pairs build needs bm25s: pip install bm25s") from e
    # bm25s sets its own logger to DEBUG; keep its per-index messages out of our log.
    bm25s_logger = logging.getLogger("bm25s")
    bm25s_logger.setLevel(max(bm25s_logger.level, logging.INFO))
    stemmer: Any = None
    name: str | None = None
    try:
        import Stemmer

        stemmer, name = Stemmer.Stemmer("english"), "snowball-english (PyStemmer)"
    except ImportError:
        pass

    def tokenize(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
        )

    return tokenize, name


class Bm25Index:
    """BM25 (bm25s) over a pool's texts; ``scores(query)`` is a float64 vector over the pool."""

    def __init__(self, pool: Pool, tokenize: Callable[[list[str]], list[list[str]]]) -> None:
        import bm25s

        self.tokenize = tokenize
        self.size = len(pool)
        self.model = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        self.model.index(tokenize(list(pool.texts)), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        tokens = [t for t in self.tokenize([query])[0] if t]
        if not tokens:
            return np.zeros(self.size, dtype=np.float64)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float64)


def ranked(scores: np.ndarray) -> np.ndarray:
    """Pool indices by descending score, ties by index."""
    return np.lexsort((np.arange(len(scores)), -scores))


@dataclass
class Mined:
    """Negatives of one candidate and the statistics of how they were found."""

    negatives: list[int]
    positive_rank: int
    positive_score: float
    negative_scores: list[float]
    random_fill: int


def pick_negatives(
    scores: np.ndarray,
    excluded: set[int],
    k: int,
    rng: random.Random,
    pool: Pool,
    skip: int = 0,
    max_score: float | None = None,
    min_score: float | None = None,
) -> tuple[list[int], int]:
    """The ``k`` best-scoring documents not in ``excluded``, distinct by text.

    ``skip`` top eligible documents are passed over, as is any scoring above ``max_score``;
    only documents scoring above ``min_score`` count as ranked; the rest is filled at random
    (seeded by ``rng``). Returns the negatives and how many were random fills.
    """
    chosen: list[int] = []
    texts: set[str] = set()
    skipped = 0
    for i in ranked(scores):
        if len(chosen) == k:
            break
        i = int(i)
        if i in excluded or pool.texts[i] in texts:
            continue
        if min_score is not None and scores[i] <= min_score:
            break
        if skipped < skip:
            skipped += 1
            continue
        if max_score is not None and scores[i] > max_score:
            continue
        chosen.append(i)
        texts.add(pool.texts[i])
    filled = 0
    if len(chosen) < k:
        order = list(range(len(pool)))
        rng.shuffle(order)
        taken = set(chosen)
        for i in order:
            if len(chosen) == k:
                break
            if i in excluded or i in taken or pool.texts[i] in texts:
                continue
            chosen.append(i)
            texts.add(pool.texts[i])
            filled += 1
    return chosen, filled


def positive_rank(scores: np.ndarray, positive: int, excluded: set[int]) -> int:
    """1 + the number of eligible documents scoring strictly above the positive."""
    mask = np.ones(len(scores), dtype=bool)
    mask[list(excluded)] = False
    return 1 + int(np.count_nonzero(scores[mask] > scores[positive]))


# ------------------------------------------------------------------------------ builders
@dataclass
class BuildContext:
    """What the task builders share: documents, options and pools built once."""

    docs: list[Document]
    seed: int
    max_tokens: int
    problems_per_concept: int = 24
    eval_seeds: tuple[int, ...] = (0,)
    pools: dict[str, Pool] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    sections: dict[str, tuple[Pool, list[Section]]] | None = None
    _namespaces: dict[str, list[Document]] | None = None

    def by_namespace(self, namespace: str) -> list[Document]:
        """The documents of an id namespace, in id order."""
        if self._namespaces is None:
            groups: dict[str, list[Document]] = defaultdict(list)
            for d in self.docs:
                groups[d.namespace].append(d)
            self._namespaces = dict(groups)
        return self._namespaces.get(namespace, [])


def _dictionary_keys(doc: Document) -> list[str]:
    m = doc.meta
    keys = [doc.title, *m.get("headwords", []), *m.get("index_keys", []), *m.get("aliases", [])]
    return [str(k) for k in keys]


def dictionary_pool(ctx: BuildContext, namespace: str) -> Pool:
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


def wordnet_pool(ctx: BuildContext) -> Pool:
    """WordNet synsets: ``"{lemmas} {gloss}"``, keyed by lemmas."""
    if "wordnet" not in ctx.pools:
        pool = Pool("wordnet", ctx.max_tokens)
        for d in ctx.by_namespace("wordnet"):
            if d.text.strip():
                pool.add(d.id, doc_string(d.title, d.text), d.meta.get("lemmas", []))
        ctx.pools["wordnet"] = pool
    return ctx.pools["wordnet"]


def is_wordnet_copy(doc: Document) -> bool:
    """A GCIDE entry taken from WordNet (one of its sources names WordNet)."""
    return any(str(x).lower().startswith("wordnet") for x in doc.meta.get("sources", []))


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


def build_definition_entry(ctx: BuildContext) -> list[Candidate]:
    """WordNet gloss -> dictionary entry of one of the synset's lemmas (see module doc)."""
    rng = _seeded(ctx.seed, "definition-entry")
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


def build_gloss_hypernym(ctx: BuildContext) -> list[Candidate]:
    """WordNet gloss -> the entry of its direct hypernym (see module doc)."""
    rng = _seeded(ctx.seed, "gloss-hypernym")
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


def _strip_name_paragraph(text: str) -> str:
    """Remove a leading ``NAME`` heading and the paragraph after it (man, POD)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "NAME":
        return text
    i = 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and lines[i].strip():
        i += 1
    return "\n".join(lines[i:]).strip("\n")


def _synopsis_entries(ctx: BuildContext, namespace: str) -> list[tuple[Document, str, str]]:
    """``(doc, page string, query)`` for every page of a synopsis source (query may be ``""``).

    The page string is ``full_text(title, body)`` with the query's line removed from the body:
    the ``NAME`` paragraph (man, POD), every line containing the synopsis (Python; a title that
    contains it becomes the module name), the ``name — purpose`` line (PostgreSQL).
    """
    out: list[tuple[Document, str, str]] = []
    for d in ctx.by_namespace(namespace):
        m = d.meta
        title = d.title
        if namespace in ("man", "perl"):
            query = normalize_inline(str(m.get("description") or ""))
            body = _strip_name_paragraph(d.text)
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


def build_synopsis_page(ctx: BuildContext) -> list[Candidate]:
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
            if n_tokens(query) < 2:
                continue
            i = pool.by_id[d.id]
            twins = [j for j in same_query[query.lower()] if j != i]
            if twins and min(twins) < i:
                continue  # the same description for several pages: keep the first only
            out.append(Candidate(query, pool, i, origin=d.id, exclude=frozenset(twins)))
    return out


@dataclass(frozen=True)
class Section:
    """A section of a document: its heading and the text up to the next heading."""

    doc_id: str
    index: int
    heading: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.index}"


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


def section_pools(ctx: BuildContext) -> dict[str, tuple[Pool, list[Section]]]:
    """Per section namespace: a pool of section bodies (keyed by heading) and the sections."""
    if ctx.sections is None:
        result: dict[str, tuple[Pool, list[Section]]] = {}
        for namespace in SECTION_NAMESPACES:
            sections = [
                s
                for d in ctx.by_namespace(namespace)
                for s in split_sections(d)
                if n_tokens(s.body) >= MIN_SECTION_TOKENS
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


def _heading_frequency(ctx: BuildContext) -> Counter[str]:
    """How often each normalised heading occurs over all sections of all section sources."""
    freq: Counter[str] = Counter()
    for namespace in SECTION_NAMESPACES:
        for d in ctx.by_namespace(namespace):
            freq.update(norm_key(strip_numbering(s.heading)) for s in split_sections(d))
    return freq


def build_heading_section(ctx: BuildContext) -> list[Candidate]:
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


def build_question_answer(ctx: BuildContext) -> list[Candidate]:
    """Question heading (ends with ``?``) -> the section under it."""
    out: list[Candidate] = []
    for pool, sections in section_pools(ctx).values():
        for s in sections:
            query = strip_numbering(s.heading)
            if query.endswith("?") and n_tokens(query) >= 2:
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
    from diffembed.data.tasks.common import EvalCorpus
    from diffembed.data.tasks.reasoning import build_concept_problems

    texts: set[str] = set()
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = TaskContext(corpus=EvalCorpus([], [], ""), seed=seed, measure_bm25=False)
            summary = build_concept_problems(ctx, Path(tmp))
            with (Path(tmp) / summary.name / "queries.jsonl").open(encoding="utf-8") as f:
                texts.update(norm_key(json.loads(line)["text"]) for line in f if line.strip())
    return texts


def build_problem_concept(ctx: BuildContext) -> list[Candidate]:
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
            if n_tokens(d.text) >= 8 and not any(contains_word(d.title, t) for t in terms):
                pool.add(d.id, doc_string(d.title, d.text), _dictionary_keys(d))
    ctx.pools[pool.name] = pool
    out: list[Candidate] = []
    dropped: set[str] = set()
    for c in train_concepts:
        rng = _seeded(ctx.seed, "problem-concept", "problems", c.id)
        frames = _seeded(ctx.seed, "problem-concept", "frames", c.id)
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


BUILDERS: dict[str, Callable[[BuildContext], list[Candidate]]] = {
    "definition-entry": build_definition_entry,
    "synopsis-page": build_synopsis_page,
    "question-answer": build_question_answer,
    "heading-section": build_heading_section,
    "gloss-hypernym": build_gloss_hypernym,
    "problem-concept": build_problem_concept,
}


def merge_duplicate_queries(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per query text (case and spacing ignored): the first is kept and the
    positives of the others (documents just as relevant to it) become its exclusions."""
    first: dict[str, int] = {}
    kept: list[Candidate] = []
    for c in candidates:
        key = norm_key(c.query)
        if key not in first:
            first[key] = len(kept)
            kept.append(c)
            continue
        head = kept[first[key]]
        if head.pool is c.pool:
            head.exclude = head.exclude | {c.positive} | c.exclude
        head.exclude_keys = head.exclude_keys | c.pool.keys[c.positive] | c.exclude_keys
    return kept


# ------------------------------------------------------------------------------ mining
class ModelMiner:
    """Re-mines negatives with an embedding model (see the module doc for the rule)."""

    def __init__(
        self,
        model_dir: str | Path,
        skip: int = DEFAULT_MINER_SKIP,
        max_ratio: float = DEFAULT_MINER_MAX_RATIO,
        device: str = "cpu",
        show_progress: bool = False,
    ) -> None:
        from diffembed.model.embedder import Embedder

        if skip < 0:
            raise ValueError(f"miner skip must be >= 0, got {skip}")
        if max_ratio <= 0:
            raise ValueError(f"miner max ratio must be > 0, got {max_ratio}")
        self.model_dir = Path(model_dir)
        self.embedder = Embedder.load(self.model_dir, device=device)
        self.skip = skip
        self.max_ratio = max_ratio
        self.show_progress = show_progress
        self.truncated: dict[str, int] = {}
        self._docs: dict[str, np.ndarray] = {}

    def describe(self) -> dict[str, Any]:
        """The miner's settings and how many texts it truncated to the model's max length."""
        return {
            "model": str(self.model_dir),
            "skip": self.skip,
            "max_ratio": self.max_ratio,
            "max_length": self.embedder.max_length,
            "truncated_to_max_length": dict(sorted(self.truncated.items())),
        }

    def _encode(self, texts: list[str], role: str, instruction: str | None = None) -> np.ndarray:
        """Encode, counting truncations (per role) instead of warning once per call."""
        vectors, stats = self.embedder.encode_with_stats(
            texts,
            **self.embedder.role_prompt(role, instruction),
            show_progress=self.show_progress,
            warn=False,
        )
        what = "queries" if role == "query" else "documents"
        if stats.truncated:
            self.truncated[what] = self.truncated.get(what, 0) + stats.truncated
        return vectors

    def doc_vectors(self, pool: Pool) -> np.ndarray:
        """Document embeddings of a pool (no instruction), computed once per pool."""
        if pool.name not in self._docs:
            logger.info("miner: encoding %d documents of %s", len(pool), pool.name)
            self._docs[pool.name] = self._encode(list(pool.texts), "document")
        return self._docs[pool.name]

    def query_vectors(self, queries: Sequence[str], instruction: str) -> np.ndarray:
        """Query embeddings with the task instruction."""
        return self._encode(list(queries), "query", instruction)


def mine(
    task: str,
    candidates: list[Candidate],
    k: int,
    seed: int,
    bm25: Callable[[Pool], Bm25Index],
    miner: ModelMiner | None,
    show_progress: bool = False,
) -> tuple[list[Mined], list[Mined] | None]:
    """BM25 negatives (and model ones when ``miner`` is given) for each candidate."""
    from tqdm.auto import tqdm

    bm25_out: list[Mined] = []
    excluded = [c.excluded() for c in candidates]
    for j, c in enumerate(
        tqdm(candidates, desc=f"bm25 {task}", unit="q", disable=not show_progress)
    ):
        scores = bm25(c.pool).scores(c.bm25_query or c.query)
        negs, filled = pick_negatives(
            scores, excluded[j], k, _seeded(seed, task, "bm25", j), c.pool, min_score=0.0
        )
        bm25_out.append(
            Mined(
                negs,
                positive_rank(scores, c.positive, excluded[j]),
                float(scores[c.positive]),
                [float(scores[i]) for i in negs],
                filled,
            )
        )
    if miner is None:
        return bm25_out, None
    model_out: list[Mined | None] = [None] * len(candidates)
    by_pool: dict[str, list[int]] = defaultdict(list)
    for j, c in enumerate(candidates):
        by_pool[c.pool.name].append(j)
    for members in by_pool.values():
        pool = candidates[members[0]].pool
        docs = miner.doc_vectors(pool)
        queries = miner.query_vectors([candidates[j].query for j in members], INSTRUCTIONS[task])
        for row, j in enumerate(members):
            c = candidates[j]
            scores = (docs @ queries[row]).astype(np.float64)
            pos = float(scores[c.positive])
            cap = miner.max_ratio * pos if pos > 0 else None
            negs, filled = pick_negatives(
                scores,
                excluded[j],
                k,
                _seeded(seed, task, "model", j),
                pool,
                skip=miner.skip,
                max_score=cap,
            )
            model_out[j] = Mined(
                negs,
                positive_rank(scores, c.positive, excluded[j]),
                pos,
                [float(scores[i]) for i in negs],
                filled,
            )
    return bm25_out, [m for m in model_out if m is not None]


# ------------------------------------------------------------------------------ report
def _mean(values: Sequence[float]) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 0.0


def _rank_stats(mined: Sequence[Mined]) -> dict[str, Any]:
    ranks = np.array([m.positive_rank for m in mined], dtype=np.float64)
    top = [m.negative_scores[0] for m in mined if m.negative_scores]
    return {
        "positive_rank_median": float(np.median(ranks)) if len(ranks) else 0.0,
        "recall@1": _mean(list(ranks <= 1)),
        "recall@10": _mean(list(ranks <= 10)),
        "mrr": _mean(list(1.0 / ranks)),
        "mean_positive_score": _mean([m.positive_score for m in mined]),
        "mean_top_negative_score": _mean(top),
        "mean_negative_score": _mean([s for m in mined for s in m.negative_scores]),
        "random_fill": int(sum(m.random_fill for m in mined)),
    }


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


# ------------------------------------------------------------------------------ build
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
) -> dict[str, Any]:
    """Build training pairs from ``corpus_dir/finetune.jsonl`` and write them to ``out``.

    Args:
        corpus_dir: a corpus directory (``diffembed corpus build``); only the finetune split is
            read.
        out: the pairs JSONL to write (atomically); the report goes to ``<stem>.report.json``.
        seed: seed of every random choice.
        hard_negatives: negatives per pair (K).
        max_per_task: cap on pairs per task (a seeded sample, kept in id order).
        max_doc_tokens: whitespace-token cap of documents (0 = none).
        tasks: task types to build (default: all of :data:`TASKS`).
        miner: a model directory to re-mine negatives with (see the module doc).
        miner_skip, miner_max_ratio: the false-negative guards of model mining.
        miner_device: torch device of the miner.
        problems_per_concept: generated problems per concept (``problem-concept``).
        eval_seeds: seeds of the task builds whose concept-problem queries must not recur.
        show_progress: progress bars.

    Returns:
        The report (also written as JSON and logged).
    """
    start = time.perf_counter()
    if hard_negatives < 1:
        raise ValueError(f"hard_negatives must be >= 1, got {hard_negatives}")
    if problems_per_concept < 1:
        raise ValueError(f"problems_per_concept must be >= 1, got {problems_per_concept}")
    if max_per_task is not None and max_per_task < 1:
        raise ValueError(f"max_per_task must be >= 1, got {max_per_task}")
    wanted = list(TASKS if tasks is None else tasks)
    unknown = [t for t in wanted if t not in INSTRUCTIONS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    wanted = [t for t in TASKS if t in wanted]
    docs = read_finetune_docs(corpus_dir)
    logger.info("read %d finetune documents from %s", len(docs), corpus_dir)
    ctx = BuildContext(
        docs=docs,
        seed=seed,
        max_tokens=max_doc_tokens,
        problems_per_concept=problems_per_concept,
        eval_seeds=tuple(eval_seeds),
    )
    tokenize, stemmer = _bm25_tokenizer()
    indexes: dict[str, Bm25Index] = {}

    def bm25(pool: Pool) -> Bm25Index:
        if pool.name not in indexes:
            indexes[pool.name] = Bm25Index(pool, tokenize)
        return indexes[pool.name]

    model = (
        ModelMiner(miner, miner_skip, miner_max_ratio, miner_device, show_progress)
        if miner is not None
        else None
    )
    records: list[dict[str, Any]] = []
    task_reports: dict[str, Any] = {}
    cut_pos = cut_neg = 0
    for task in wanted:
        candidates = merge_duplicate_queries(BUILDERS[task](ctx))
        available = len(candidates)
        if max_per_task is not None and available > max_per_task:
            keep = sorted(_seeded(seed, task, "sample").sample(range(available), max_per_task))
            candidates = [candidates[j] for j in keep]
        if not candidates:
            ctx.notes.setdefault(task, "no pairs: the corpus has no documents of this kind")
            continue
        bm25_mined, model_mined = mine(
            task, candidates, hard_negatives, seed, bm25, model, show_progress
        )
        final = model_mined if model_mined is not None else bm25_mined
        instruction = INSTRUCTIONS[task]
        task_records: list[dict[str, Any]] = []
        dropped = 0
        for c, m in zip(candidates, final, strict=True):
            if not m.negatives:
                dropped += 1
                continue
            rec = {
                "query": c.query,
                "positive": c.pool.texts[c.positive],
                "negatives": [c.pool.texts[i] for i in m.negatives],
                "instruction": instruction,
                "task": task,
            }
            parse_pair(rec, f"{task} pair from {c.origin}")
            cut_pos += int(c.pool.cut[c.positive])
            cut_neg += sum(int(c.pool.cut[i]) for i in m.negatives)
            task_records.append(rec)
        records.extend(task_records)
        pools = sorted({c.pool.name for c in candidates})
        entry: dict[str, Any] = {
            "instruction": instruction,
            "pairs": len(task_records),
            "candidates": available,
            "dropped_without_negatives": dropped,
            "pools": {p: len(ctx.pools[p]) for p in pools},
            "mean_query_tokens": _mean([n_tokens(r["query"]) for r in task_records]),
            "mean_positive_tokens": _mean([n_tokens(r["positive"]) for r in task_records]),
            "mean_negative_tokens": _mean(
                [n_tokens(x) for r in task_records for x in r["negatives"]]
            ),
            "mean_negatives": _mean([len(r["negatives"]) for r in task_records]),
            "bm25": _rank_stats(bm25_mined),
        }
        if model_mined is not None:
            overlap = [
                len(set(a.negatives) & set(b.negatives)) / max(1, len(b.negatives))
                for a, b in zip(bm25_mined, model_mined, strict=True)
            ]
            entry["model"] = {**_rank_stats(model_mined), "overlap_with_bm25": _mean(overlap)}
        task_reports[task] = entry
    if not records:
        raise PairsBuildError(f"{corpus_dir}: no pairs could be built from the finetune split")
    out = Path(out)
    with atomic_write(out) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    report: dict[str, Any] = {
        "corpus": str(corpus_dir),
        "out": str(out),
        "pairs": len(records),
        "finetune_documents": len(docs),
        "documents_per_source": dict(sorted(Counter(d.source for d in docs).items())),
        "options": {
            "seed": seed,
            "hard_negatives": hard_negatives,
            "max_per_task": max_per_task,
            "max_doc_tokens": max_doc_tokens,
            "tasks": wanted,
            "problems_per_concept": problems_per_concept,
            "eval_seeds": list(eval_seeds),
        },
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
            "positives": cut_pos,
            "negatives": cut_neg,
        },
        "wall_s": round(time.perf_counter() - start, 2),
    }
    write_json(report_path(out), report)
    logger.info("wrote %d pairs to %s\n%s", len(records), out, format_report(report))
    return report


# ------------------------------------------------------------------------------ CLI
def _task_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in INSTRUCTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}"
        )
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, type=Path, help="corpus directory (finetune.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="pairs JSONL to write")
    p.add_argument(
        "--miner",
        type=Path,
        help="model directory to re-mine hard negatives with (default: BM25 negatives)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument(
        "--max-per-task", type=int, help="cap on pairs per task, a seeded sample (default: all)"
    )
    p.add_argument(
        "--hard-negatives",
        type=int,
        default=DEFAULT_HARD_NEGATIVES,
        help=f"hard negatives per pair (default: {DEFAULT_HARD_NEGATIVES})",
    )
    p.add_argument(
        "--max-doc-tokens",
        type=int,
        default=DEFAULT_MAX_DOC_TOKENS,
        help="cut positives and negatives after this many whitespace tokens, 0 = never "
        f"(default: {DEFAULT_MAX_DOC_TOKENS})",
    )
    p.add_argument(
        "--tasks",
        type=_task_list,
        help=f"comma-separated task types to build (default: all of {', '.join(TASKS)})",
    )
    p.add_argument(
        "--miner-skip",
        type=int,
        default=DEFAULT_MINER_SKIP,
        help="with --miner: pass over this many top-ranked non-positives, likely false "
        f"negatives (default: {DEFAULT_MINER_SKIP})",
    )
    p.add_argument(
        "--miner-max-ratio",
        type=float,
        default=DEFAULT_MINER_MAX_RATIO,
        help="with --miner: drop candidates more similar than this times the positive's "
        f"similarity (default: {DEFAULT_MINER_MAX_RATIO})",
    )
    p.add_argument(
        "--miner-device", default="cpu", help="with --miner: torch device (default: cpu)"
    )
    p.add_argument(
        "--problems-per-concept",
        type=int,
        default=DEFAULT_PROBLEMS_PER_CONCEPT,
        help="generated problems per catalogue concept for problem-concept "
        f"(default: {DEFAULT_PROBLEMS_PER_CONCEPT})",
    )
    p.add_argument(
        "--eval-seeds",
        type=_ints,
        default=[0],
        help="comma-separated seeds of the evaluation task builds whose concept problems are "
        "never reproduced (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_pairs_build)


def add_pairs_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``pairs`` verb (sub-verb ``build``) on a ``diffembed`` sub-parser set."""
    p = subparsers.add_parser(
        "pairs",
        help="build training pairs for contrastive fine-tuning",
        description="Training pairs {query, positive, negatives, instruction, task}.",
    )
    verbs = p.add_subparsers(dest="pairs_command", metavar="{build}")
    verbs.required = True
    build = verbs.add_parser(
        "build",
        help="build pairs with BM25 hard negatives from a corpus's finetune split",
        description="Build training pairs of several task types from the finetune split of a "
        "corpus, with BM25 hard negatives (optionally re-mined with a model); writes OUT and "
        "OUT's <stem>.report.json.",
    )
    _add_build_options(build)
    return p


def run_pairs_build(args: argparse.Namespace) -> int:
    """The ``pairs build`` verb; returns the exit status."""
    build_pairs(
        args.corpus,
        args.out,
        seed=args.seed,
        hard_negatives=args.hard_negatives,
        max_per_task=args.max_per_task,
        max_doc_tokens=args.max_doc_tokens,
        tasks=args.tasks,
        miner=args.miner,
        miner_skip=args.miner_skip,
        miner_max_ratio=args.miner_max_ratio,
        miner_device=args.miner_device,
        problems_per_concept=args.problems_per_concept,
        eval_seeds=args.eval_seeds,
        show_progress=not args.no_progress,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m diffembed.data.pairs.build build [options]``: the same as ``diffembed pairs``."""
    parser = argparse.ArgumentParser(prog="python -m diffembed.data.pairs.build")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="pairs_command", metavar="{build}")
    verbs.required = True
    _add_build_options(verbs.add_parser("build", help="build training pairs"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_pairs_build(args)


if __name__ == "__main__":
    sys.exit(main())
