"""Searching an index: query vectors ranked to documents (a chunked document counts once, scored
by its best chunk), ``Hit`` records with snippets, ``retrieve`` (dense, BM25 or hybrid: the two
fused by :func:`diffembed.eval.fusion.fuse`, the function evaluation measures) and ``Searcher``
(text queries through the index's own model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import ConfigError
from diffembed.eval.fusion import DEFAULT_ALPHA
from diffembed.formats.corpus import Document
from diffembed.index.generations import VECTORS, corrupt_file
from diffembed.index.store import ModelMismatchError, VectorIndex, load_embedder_for, select_in
from diffembed.model.dimensions import truncate

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

SNIPPET_CHARS = 240


@dataclass(frozen=True)
class Hit:
    """One search result: a document, its score (cosine / inner product) and its best chunk."""

    rank: int
    id: str
    score: float
    title: str
    snippet: str
    chunk: int
    char_start: int
    char_end: int
    truncated: bool
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def rank_documents(index: VectorIndex, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
    """``index.search``: the best ``k`` documents for each of ``queries`` (``float32 [Q, H]``;
    vectors of the model's width are cut to the index's ``--dimensions`` and renormalised).

    Chunked indexes fetch more rows than ``k`` (several may belong to one document) and widen
    the fetch until ``k`` distinct documents are found or every row was seen.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] == index.model_dim and index.dim < index.model_dim:
        queries = truncate(queries, index.dim)
    if queries.shape[1] != index.dim:
        raise ValueError(f"query vectors have dimension {queries.shape[1]}, index {index.dim}")
    if not np.isfinite(queries).all():
        raise ValueError("query vectors hold NaN or infinite values")
    if index.ntotal == 0:
        return [[] for _ in range(queries.shape[0])]
    chunked = index.meta["documents"]["mode"] == "chunked"
    fetch = min(index.ntotal, k * 4 if chunked else k)
    while True:
        if index.meta["faiss"]["type"] == "hnsw":
            index.faiss_index.hnsw.efSearch = max(int(index.meta["faiss"]["ef_search"]), fetch)
        scores, rows = index.faiss_index.search(queries, fetch)
        # Finite queries, so the vectors are damaged: faiss returns an infinite score, and
        # leaves out a NaN one (a row of -1, which an exact search gives for no other reason).
        skipped = index.meta["faiss"]["type"] == "flat" and bool((rows < 0).any())
        if skipped or not np.isfinite(scores[rows >= 0]).all():
            raise corrupt_file(
                index.generation / VECTORS,
                "search gave scores that are not finite (NaN or infinite)",
            )
        found = [
            [(r, s) for s, r in zip(srow.tolist(), rrow.tolist(), strict=True) if r >= 0]
            for srow, rrow in zip(scores, rows, strict=True)
        ]
        results = [_resolve_hits(index, f, k) for f in found]
        if fetch >= index.ntotal or all(len(x) >= min(k, index.n_documents) for x in results):
            return results
        fetch = min(index.ntotal, fetch * 4)


def resolve_mode(index: VectorIndex, mode: str | None) -> str:
    """The search mode to use: ``mode``, or hybrid when the index has BM25, else dense."""
    from diffembed.eval.fusion import MODES

    if mode is None:
        return "hybrid" if index.lexical is not None else "dense"
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "dense" and index.lexical is None:
        raise ConfigError(
            f"{index.path}: built without BM25, so mode {mode!r} is not available; use mode "
            "dense, or rebuild the index without --no-bm25"
        )
    return mode


def bm25_note(index: VectorIndex, query: str, mode: str) -> str | None:
    """A sentence for the user when the BM25 side of a ``mode`` search matches no document
    (``LexicalIndex.no_match``: stop words only, or no known term), saying what the results are
    then; None when BM25 takes no part or matches something."""
    if mode == "dense" or index.lexical is None:
        return None
    reason = index.lexical.no_match(query)
    if reason is None:
        return None
    then = "try other words, or mode dense" if mode == "bm25" else "the ranking is the model's"
    return f"BM25 matched no document: {reason}; {then}"


def retrieve(
    index: VectorIndex,
    vectors: np.ndarray | None,
    texts: Sequence[str],
    k: int = 10,
    mode: str | None = None,
    alpha: float | None = DEFAULT_ALPHA,
) -> list[list[Hit]]:
    """The best ``k`` documents for each query, by ``mode`` (``resolve_mode``).

    Args:
        vectors: ``float32 [Q, H]`` query vectors (unused, may be None, for ``bm25``).
        texts: the ``Q`` query texts (BM25; unused for ``dense``).
        alpha: hybrid only: the weight of dense in the convex combination of min-max
            normalised scores (default ``DEFAULT_ALPHA``); None: reciprocal-rank fusion (k = 60).

    Returns:
        ``Q`` lists of ``Hit`` best first; hybrid and bm25 scores are the fused / BM25 scores.
        A document found by BM25 only shows its first chunk. Ties among BM25 and fused scores
        go in trec_eval's order (document id descending), as in ``diffembed eval``.
    """
    from diffembed.eval.fusion import candidate_depth, check_alpha, fuse
    from diffembed.eval.ranking import sort_run

    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    mode = resolve_mode(index, mode)
    alpha = check_alpha(alpha, "alpha")
    if mode == "dense":
        if vectors is None:
            raise ValueError("dense search needs query vectors")
        return rank_documents(index, vectors, k)
    depth = candidate_depth(k)
    lexical = index.lexical
    assert lexical is not None  # resolve_mode checked
    sparse = [lexical.top(t, depth) for t in texts]
    if mode == "bm25":
        return [_hits_of(index, s[:k], {}) for s in sparse]
    if vectors is None:
        raise ValueError("hybrid search needs query vectors")
    out = []
    for dense, bm25 in zip(rank_documents(index, vectors, depth), sparse, strict=True):
        # Ties in trec_eval's order (score, then id descending), as evaluation ranks them.
        fused = sort_run(dict(fuse([(h.id, h.score) for h in dense], bm25, alpha)))[:k]
        out.append(_hits_of(index, fused, {h.id: h.chunk for h in dense}))
    return out


def _hits_of(
    index: VectorIndex, ranked: list[tuple[str, float]], chunks: dict[str, int]
) -> list[Hit]:
    """``Hit`` records of ranked ``(doc_id, score)`` pairs showing chunk ``chunks[doc_id]``
    (the best dense chunk), else the document's first chunk."""
    if not ranked:
        return []
    rows: dict[str, int] = {}
    for row, doc_id, chunk in select_in(
        index.db,
        "SELECT row, doc_id, chunk FROM vectors WHERE doc_id IN ({marks}) ORDER BY row",
        [d for d, _ in ranked],
    ):
        if chunk == chunks.get(doc_id, chunk) and doc_id not in rows:
            rows[doc_id] = row
    return _resolve_hits(index, [(rows[d], s) for d, s in ranked], len(ranked))


def _resolve_hits(index: VectorIndex, found: list[tuple[int, float]], k: int) -> list[Hit]:
    """Map ``(row, score)`` pairs (best first) to the best ``k`` distinct documents."""
    if not found:
        return []
    info = {
        r[0]: r[1:]
        for r in select_in(
            index.db,
            "SELECT row, doc_id, chunk, char_start, char_end FROM vectors WHERE row IN ({marks})",
            [r for r, _ in found],
        )
    }
    chosen: list[tuple[float, tuple]] = []
    seen: set[str] = set()
    for row, score in found:
        doc_id = info[row][0]
        if doc_id in seen:
            continue
        seen.add(doc_id)
        chosen.append((score, info[row]))
        if len(chosen) == k:
            break
    docs = {
        r[0]: r[1:]
        for r in select_in(
            index.db,
            "SELECT doc_id, title, text, meta, truncated FROM documents WHERE doc_id IN ({marks})",
            [c[1][0] for c in chosen],
        )
    }
    hits = []
    for rank, (score, (doc_id, chunk, start, end)) in enumerate(chosen, start=1):
        title, text, meta, truncated = docs[doc_id]
        full = Document(id=doc_id, text=text, title=title).full_text  # what was embedded
        hits.append(
            Hit(
                rank=rank,
                id=doc_id,
                score=float(score),
                title=title,
                snippet=_snippet(full[start:end]),
                chunk=int(chunk),
                char_start=int(start),
                char_end=int(end),
                truncated=bool(truncated),
                meta=json.loads(meta),
            )
        )
    return hits


class Searcher:
    """An index and its model: text queries in, ranked documents out."""

    def __init__(self, index: VectorIndex, embedder: Embedder) -> None:
        if embedder.dim != index.model_dim:
            raise ModelMismatchError(f"model dimension {embedder.dim} != index {index.model_dim}")
        self.index = index
        self.embedder = embedder

    @classmethod
    def open(
        cls, index_dir: str | Path, model_dir: str | Path | None = None, device: str = "cpu"
    ) -> Searcher:
        index = VectorIndex.open(index_dir)
        return cls(index, load_embedder_for(index.meta, model_dir, device))

    def encode_query(
        self, query: str, prompt: str | None = None, prompt_name: str | None = None
    ) -> np.ndarray:
        """``float32 [H]``: the query with ``prompt``/``prompt_name``, else the query prompt."""
        if prompt is None and prompt_name is None:
            return self.embedder.encode_queries([query])[0]
        return self.embedder.encode([query], prompt=prompt, prompt_name=prompt_name)[0]

    def search(
        self,
        query: str,
        k: int = 10,
        prompt: str | None = None,
        prompt_name: str | None = None,
        mode: str | None = None,
        alpha: float | None = DEFAULT_ALPHA,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first, by ``mode`` (default: hybrid
        when the index has BM25, else dense) and, for hybrid, ``alpha`` (the weight of dense in
        the convex combination; None: reciprocal-rank fusion (k = 60)); see ``retrieve``."""
        mode = resolve_mode(self.index, mode)
        vectors = None
        if mode != "bm25":
            vectors = self.encode_query(query, prompt, prompt_name)[None]
        return retrieve(self.index, vectors, [query], k, mode, alpha)[0]
