"""Searching an index: query vectors ranked to documents (a chunked document counts once, scored
by its best chunk), ``Hit`` records with snippets, and ``Searcher`` (text queries through the
index's own model)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.formats.corpus import Document
from diffembed.index.store import ModelMismatchError, VectorIndex, load_embedder_for, select_in

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
    """``index.search``: the best ``k`` documents for each of ``queries`` (``float32 [Q, H]``).

    Chunked indexes fetch more rows than ``k`` (several may belong to one document) and widen
    the fetch until ``k`` distinct documents are found or every row was seen.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.dim:
        raise ValueError(f"query vectors have dimension {queries.shape[1]}, index {index.dim}")
    if index.ntotal == 0:
        return [[] for _ in range(queries.shape[0])]
    chunked = index.meta["documents"]["mode"] == "chunked"
    fetch = min(index.ntotal, k * 4 if chunked else k)
    while True:
        if index.meta["faiss"]["type"] == "hnsw":
            index.faiss_index.hnsw.efSearch = max(int(index.meta["faiss"]["ef_search"]), fetch)
        scores, rows = index.faiss_index.search(queries, fetch)
        found = [
            [(r, s) for s, r in zip(srow.tolist(), rrow.tolist(), strict=True) if r >= 0]
            for srow, rrow in zip(scores, rows, strict=True)
        ]
        results = [_resolve_hits(index, f, k) for f in found]
        if fetch >= index.ntotal or all(len(x) >= min(k, index.n_documents) for x in results):
            return results
        fetch = min(index.ntotal, fetch * 4)


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
        if embedder.dim != index.dim:
            raise ModelMismatchError(f"model dimension {embedder.dim} != index {index.dim}")
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
        self, query: str, k: int = 10, prompt: str | None = None, prompt_name: str | None = None
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first."""
        return self.index.search(self.encode_query(query, prompt, prompt_name)[None], k)[0]
