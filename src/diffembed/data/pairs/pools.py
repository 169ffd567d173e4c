"""Candidate pools of the training-pair builders and the text helpers they share.

A :class:`Pool` holds the candidate documents of one source for one kind of positive (already
length-capped, as they are written to the pairs); a :class:`Candidate` is a query with its
positive in a pool and the documents that must never be its negatives. Random choices take
:func:`seeded` streams (``random.Random`` seeded with strings, stable across runs and platforms).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from diffembed.data.corpus.common import normalize_inline
from diffembed.data.tasks.common import truncate_words
from diffembed.formats.corpus import Document

_NUMBERING = re.compile(
    r"^(?:(?:chapter|appendix|section|part)\s+)?(?:\d+|[A-Z](?=[.\-]\d))(?:[.\-]\d+)*[.:)]?\s+",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\S+")


# ------------------------------------------------------------------------------ text helpers
def cap_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after its ``max_tokens``-th whitespace token (layout kept), and whether it
    was cut. ``max_tokens <= 0`` keeps the text whole."""
    if max_tokens <= 0:
        return text, False
    cut = truncate_words(text, max_tokens)
    if _TOKEN.search(text, len(cut)) is None:
        return text, False
    return cut, True


def norm_key(text: str) -> str:
    """A title/headword/lemma key: whitespace-collapsed, lower case."""
    return " ".join(text.replace("_", " ").split()).lower()


def doc_string(title: str, body: str) -> str:
    """What retrievers see of a BEIR document with this title and text (``"{title} {text}"``,
    :attr:`diffembed.formats.corpus.Document.full_text`), so pairs look like evaluation
    documents."""
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


def seeded(seed: int, *parts: object) -> random.Random:
    """A random stream for ``parts`` under ``seed`` (seeded with the string ``"seed:part:..."``)."""
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
