"""The ``sentence-document`` task type: the inverse cloze task (ICT) over the finetune split.

A sentence of a document is the query; the document with that sentence removed is its positive
(Lee et al., 2019, "Latent Retrieval for Weakly Supervised Open Domain Question Answering").
Unlike the other task types it needs no relevance labels, so every document of the split can
give a pair: it adds many, varied pairs where the labelled task types give a few thousand that a
small model memorises. The query is not in its positive, so the pair is learned from the
context the sentence shares with its document (terms, topic), not from copying; the other
documents of the source are the pool the hard negatives come from.
"""

from __future__ import annotations

import re

from diffembed.data.pairs.context import PairsContext
from diffembed.data.pairs.pools import Candidate, Pool, doc_string, seeded
from diffembed.data.tasks.common import word_count

INSTRUCTION = "Given a sentence, retrieve the document it was taken from"
#: A query sentence has this many whitespace tokens (inclusive).
SENTENCE_WORDS = (6, 40)
#: What is left of the document after its query sentences are removed has at least this many.
MIN_REST_WORDS = 20
#: A document gives one query per this many words, at most :data:`MAX_QUERIES_PER_DOC`.
WORDS_PER_QUERY = 300
MAX_QUERIES_PER_DOC = 6
# A sentence ends at . ! or ? followed by white space; a blank line ends a paragraph too.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``[(start, end)]`` of the sentences of ``text``, in order."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _is_query_sentence(sentence: str) -> bool:
    """Prose of :data:`SENTENCE_WORDS` words on one line, starting with a letter."""
    n = word_count(sentence)
    stripped = sentence.strip()
    return (
        SENTENCE_WORDS[0] <= n <= SENTENCE_WORDS[1]
        and "\n" not in stripped
        and (stripped[:1].isalpha())
    )


def cloze_queries(text: str, rng_key: tuple, title: str = "") -> tuple[list[str], str] | None:
    """``(sentences, text without them)``: a seeded choice of one query sentence per
    :data:`WORDS_PER_QUERY` words of ``text`` (at least one, at most
    :data:`MAX_QUERIES_PER_DOC`) among its fitting sentences that occur once, in text order, and the text with
    those removed; None when none fits or too little text would remain."""
    flat = " ".join(f"{title} {text}".split())
    # A sentence the document repeats (or its title holds) would still be in its positive.
    spans = [
        (a, b)
        for a, b in sentences(text)
        if _is_query_sentence(text[a:b]) and flat.count(" ".join(text[a:b].split())) == 1
    ]
    if not spans:
        return None
    k = min(len(spans), MAX_QUERIES_PER_DOC, 1 + word_count(text) // WORDS_PER_QUERY)
    chosen = sorted(seeded(*rng_key).sample(spans, k))
    pieces, queries, last = [], [], 0
    for a, b in chosen:
        pieces.append(text[last:a].strip())
        queries.append(" ".join(text[a:b].split()))
        last = b
    pieces.append(text[last:].strip())
    rest = " ".join(p for p in pieces if p)
    if word_count(rest) < MIN_REST_WORDS:
        return None
    return queries, rest


def build_sentence_document(ctx: PairsContext) -> list[Candidate]:
    """Sentence -> its document without its query sentences (:func:`cloze_queries`). A pool
    per id namespace holds those documents, each without its own query sentences, so a positive
    and its negatives are cut alike."""
    out: list[Candidate] = []
    for namespace in sorted({d.namespace for d in ctx.docs}):
        pool = Pool(f"cloze:{namespace}", ctx.max_tokens)
        queries: list[tuple[int, str]] = []
        for d in ctx.by_namespace(namespace):
            found = cloze_queries(d.text, (ctx.seed, "sentence-document", d.id), d.title)
            if found is not None:
                i = pool.add(d.id, doc_string(d.title, found[1]), [d.title] if d.title else [])
                queries.extend((i, q) for q in found[0])
        if len(pool) < 2:
            continue
        ctx.pools[pool.name] = pool
        out.extend(Candidate(q, pool, i, origin=pool.ids[i]) for i, q in queries)
    return out
