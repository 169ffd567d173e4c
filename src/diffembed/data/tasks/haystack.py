"""The haystack of the long-document suite's synthetic tasks: filler prose windows from the eval
split, key facts inserted at sentence boundaries to an exact length, needle definitions of rare
WordNet nouns and invented names for pass keys.

A document of ``L`` units is filler truncated so that, with its fact inserted, it is exactly
``L`` whitespace tokens (or the longest of at most ``L`` tokenizer tokens, when the build's
length meter is a tokenizer): :func:`compose`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffembed.data.tasks.common import (
    BuildContext,
    article,
    is_prose,
    split_sentences,
    truncate_words,
    word_count,
)
from diffembed.errors import DiffembedError
from diffembed.formats.corpus import Document

FIRST_NAMES = [
    "Adele",
    "Bruno",
    "Cecilia",
    "Dmitri",
    "Esther",
    "Felix",
    "Gideon",
    "Helena",
    "Ingrid",
    "Jasper",
    "Katya",
    "Leopold",
    "Marisol",
    "Nikolai",
    "Octavia",
    "Percival",
    "Quentin",
    "Rosalind",
    "Severin",
    "Thaddeus",
    "Ursula",
    "Valentin",
    "Wilhelmina",
    "Xavier",
    "Yolanda",
    "Zebulon",
    "Anselm",
    "Beatrix",
    "Cornelius",
    "Delphine",
    "Evander",
    "Florentyna",
    "Gwendolyn",
    "Horatio",
    "Isolde",
    "Jerome",
    "Kasimir",
    "Lucinda",
    "Montgomery",
    "Nerissa",
    "Oswin",
    "Philippa",
    "Reginald",
    "Sabine",
    "Tobias",
    "Evangeline",
    "Bartholomew",
    "Clementine",
    "Desmond",
    "Imogen",
]
SURNAMES = [
    "Abernathy",
    "Blackwood",
    "Castellano",
    "Drummond",
    "Eberhardt",
    "Fairweather",
    "Galloway",
    "Hargreaves",
    "Ingleby",
    "Jablonski",
    "Kowalczyk",
    "Lindqvist",
    "Montague",
    "Nakamura",
    "Oyelaran",
    "Pemberton",
    "Quigley",
    "Rasmussen",
    "Szymanski",
    "Thistlewood",
    "Underhill",
    "Vasquez",
    "Whitcombe",
    "Yardley",
    "Zielinski",
    "Ashcombe",
    "Brightwater",
    "Cholmondeley",
    "Delacroix",
    "Etherington",
    "Fitzgerald",
    "Grimshaw",
    "Holloway",
    "Iglesias",
    "Kettleburn",
    "Lockhart",
    "Merriweather",
    "Northcott",
    "Ollerenshaw",
    "Penhaligon",
    "Ravenscroft",
    "Stavropoulos",
    "Trelawney",
    "Umberfield",
    "Vanderbilt",
    "Wetherby",
    "Yarborough",
    "Zamoyski",
    "Ashworth",
    "Bellingham",
]


# ------------------------------------------------------------------------------ filler
@dataclass(frozen=True)
class Filler:
    """Prose sentences in corpus order with the id of the document each comes from."""

    sentences: list[str]
    doc_ids: list[str]

    @classmethod
    def from_corpus(cls, docs: Sequence[Document]) -> Filler:
        sentences: list[str] = []
        ids: list[str] = []
        for doc in docs:
            for s in split_sentences(doc.text):
                if is_prose(s) and "pass key" not in s.lower():
                    sentences.append(s)
                    ids.append(doc.id)
        if len(sentences) < 20:
            raise DiffembedError(f"only {len(sentences)} filler sentences in the eval split")
        return cls(sentences, ids)

    def window(self, start: int, words: int) -> tuple[str, list[str]]:
        """Consecutive sentences from ``start`` (wrapping) until at least ``words`` words."""
        out: list[str] = []
        ids: list[str] = []
        total = 0
        i = start
        n = len(self.sentences)
        while total < words:
            s = self.sentences[i % n]
            out.append(s)
            ids.append(self.doc_ids[i % n])
            total += word_count(s)
            i += 1
            if i - start > 4 * n:
                break
        return " ".join(out), sorted(set(ids))


def _boundaries(text: str) -> list[int]:
    """Offsets where a sentence may be inserted: 0, after each sentence end, and the end."""
    cuts = [0] + [m.end() for m in re.finditer(r"(?<=[.!?])\s+", text)] + [len(text)]
    return sorted(set(cuts))


def _insert(text: str, fact: str, position: float) -> str:
    """Insert ``fact`` at the sentence boundary nearest ``position`` (0..1) of ``text``."""
    cuts = _boundaries(text)
    target = position * len(text)
    at = min(cuts, key=lambda c: (abs(c - target), c))
    before, after = text[:at].rstrip(), text[at:].lstrip()
    return " ".join(p for p in (before, fact, after) if p)


def compose(filler: str, fact: str, length: int, position: float, ctx: BuildContext) -> str:
    """A document of ``length`` units: ``filler`` truncated, ``fact`` inserted at ``position``."""
    fact_len = ctx.meter.count(fact)
    if ctx.meter.unit == "whitespace tokens":
        return _insert(truncate_words(filler, max(length - fact_len, 0)), fact, position)
    lo, hi = 0, min(word_count(filler), length)
    best = _insert("", fact, position)
    while lo <= hi:
        mid = (lo + hi) // 2
        doc = _insert(truncate_words(filler, mid), fact, position)
        if ctx.meter.count(doc) <= length:
            best, lo = doc, mid + 1
        else:
            hi = mid - 1
    return best


# ------------------------------------------------------------------------------ facts
def needle_candidates(ctx: BuildContext, vocab: set[str]) -> list[Document]:
    """Rare WordNet nouns: one lower-case alphabetic lemma absent from the filler vocabulary."""
    out = []
    seen_defs: set[str] = set()
    for doc in ctx.corpus.source("wordnet"):
        meta = doc.meta
        lemmas = meta.get("lemmas") or []
        definition = (meta.get("definition") or "").strip()
        if meta.get("pos") != "n" or len(lemmas) != 1 or not definition:
            continue
        lemma = lemmas[0]
        if not (lemma.isalpha() and lemma.islower() and len(lemma) >= 6) or lemma in vocab:
            continue
        if not 5 <= word_count(definition) <= 25 or definition in seen_defs:
            continue
        if definition.startswith("(") or lemma in definition.lower():
            continue
        seen_defs.add(definition)
        out.append(doc)
    return out


def pick_needles(
    candidates: Sequence[Document], n: int, rng: Any, task: str
) -> list[tuple[Document, str]]:
    """``n`` (WordNet doc, fact sentence) pairs whose lemma appears in no other chosen fact."""
    order = list(range(len(candidates)))
    rng.shuffle(order)
    chosen: list[tuple[Document, str]] = []
    for i in order:
        doc = candidates[i]
        lemma = doc.meta["lemmas"][0]
        fact = f"{article(lemma).capitalize()} {lemma} is {doc.meta['definition'].rstrip('.')}."
        words = set(re.findall(r"[a-z]+", fact.lower()))
        if any(c.meta["lemmas"][0] in words for c, _ in chosen):
            continue
        if any(lemma in re.findall(r"[a-z]+", f.lower()) for _, f in chosen):
            continue
        chosen.append((doc, fact))
        if len(chosen) == n:
            return chosen
    raise DiffembedError(f"{task}: only {len(chosen)} usable needle facts, need {n}")


def pick_names(rng: Any, n: int, haystack: str) -> list[str]:
    """``n`` distinct "First Last" names that occur nowhere in ``haystack``."""
    pairs = [(f, s) for f in FIRST_NAMES for s in SURNAMES]
    rng.shuffle(pairs)
    names: list[str] = []
    used_first: set[str] = set()
    for first, last in pairs:
        name = f"{first} {last}"
        if first in used_first or name.lower() in haystack:
            continue
        names.append(name)
        used_first.add(first)
        if len(names) == n:
            return names
    # more documents than first names: allow repeated first names
    for first, last in pairs:
        name = f"{first} {last}"
        if name not in names and name.lower() not in haystack:
            names.append(name)
            if len(names) == n:
                return names
    raise DiffembedError(f"cannot draw {n} distinct names")
