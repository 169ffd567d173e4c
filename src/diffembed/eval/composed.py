"""Evaluated retrievers made of others: ``diffembed eval --retriever dense|bm25|hybrid`` and
``--chunking plain|late``.

- ``ChunkedRetriever``: a model directory's retriever whose documents are split into token
  chunks exactly as ``diffembed index build --chunk-tokens`` splits them
  (:mod:`diffembed.model.chunking`; plain: each chunk embedded alone; late: pooled from the
  whole document); a document scores as its best chunk, as in index search.
- ``compose_retriever``: the retriever ``evaluate_model`` runs for ``--retriever``: dense (the
  model), bm25, or hybrid (:class:`diffembed.eval.retrievers.HybridRetriever`, the fusion the
  index and the server use).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffembed.errors import ConfigError, DiffembedError
from diffembed.eval.fusion import DEFAULT_ALPHA
from diffembed.eval.models import EmbedderRetriever, SparseReadoutRetriever
from diffembed.eval.retrievers import (
    BM25Retriever,
    DenseRetriever,
    EncodeReport,
    HybridRetriever,
    Retriever,
)
from diffembed.model.chunking import Chunking, late_chunk, split_texts

logger = logging.getLogger(__name__)

# sparse / dense+sparse: a mask-readout model's LM-head terms, alone or fused with its dense side.
RETRIEVERS = ("dense", "bm25", "hybrid", "sparse", "dense+sparse")


class ChunkedRetriever(DenseRetriever):
    """``base``'s model with documents chunked (``chunking`` plain or late); queries, pairs and
    symmetric collections (classification) are encoded whole, as by ``base``."""

    def __init__(self, base: EmbedderRetriever, chunking: Chunking) -> None:
        if chunking.tokens is None:
            raise ConfigError("--chunking needs --chunk-tokens (the size of each chunk)")
        super().__init__(base.show_progress)
        self.base = base
        self.chunk_tokens, self.chunk_overlap = chunking.tokens, chunking.overlap
        self.chunking = chunking.mode
        self.name = f"{base.name} [{chunking.mode} chunks of {chunking.tokens}]"
        self.token_unit = base.token_unit
        self.chunk_vectors: np.ndarray | None = None
        self.starts = np.zeros(0, dtype=np.int64)
        self.windowed = 0

    def describe(self) -> dict[str, Any]:
        info = self.base.describe()
        info["name"] = self.name
        info["settings"]["chunking"] = {
            "mode": self.chunking,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
        }
        return info

    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        return self.base._encode(texts, instruction, role)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.base.token_lengths(texts)

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        self.chunk_vectors = None
        if symmetric:
            return super()._index(texts, instruction, symmetric)
        vectors, doc_chunks = self._chunk(texts)
        self.chunk_vectors = vectors
        self.starts = np.concatenate([[0], np.cumsum(doc_chunks)[:-1]]).astype(np.int64)
        self.doc_vectors = np.zeros((len(texts), vectors.shape[1]), np.float32)  # unused
        return EncodeReport(len(texts), 0, self.token_lengths(texts))

    def _chunk(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Chunk vectors ``float32 [R, H]`` (documents' chunks in order) and chunks per doc."""
        emb = self.base.embedder
        if self.chunking == "late":
            late = late_chunk(
                emb, texts, self.chunk_tokens, self.chunk_overlap, self.base.batch_tokens
            )
            vectors, doc_chunks = late.vectors, late.doc_chunks
            self.windowed = late.windowed
            if late.windowed:
                logger.warning(
                    "%s: %d of %d document(s) exceed max_length=%d and were encoded in "
                    "overlapping windows",
                    self.name,
                    late.windowed,
                    len(texts),
                    emb.max_length,
                )
        else:
            _, pieces, doc_chunks = split_texts(emb, texts, self.chunk_tokens, self.chunk_overlap)
            vectors, _ = self.base._encode(pieces, None, "document")
        empty = [i for i, n in enumerate(doc_chunks) if n == 0]
        if empty:
            raise DiffembedError(f"document {empty[0]} of the collection has no chunk with text")
        return np.ascontiguousarray(vectors, np.float32), list(doc_chunks)

    def score_block(self, queries: np.ndarray, start: int, stop: int) -> np.ndarray:
        if self.chunk_vectors is None:
            return super().score_block(queries, start, stop)
        scores = queries[start:stop] @ self.chunk_vectors.T
        return np.maximum.reduceat(scores, self.starts, axis=1)

    def top_k(
        self,
        queries: Any,
        n_queries: int,
        k: int,
        targets: Mapping[int, np.ndarray] | None = None,
        exclude_self: bool = False,
        use_faiss: bool = False,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """Exact top-k over best-chunk scores (``Retriever.top_k``), or ``DenseRetriever``'s
        for whole texts."""
        if self.chunk_vectors is None:
            return super().top_k(
                queries, n_queries, k, targets, exclude_self, use_faiss, show_progress
            )
        return Retriever.top_k(
            self, queries, n_queries, k, targets, exclude_self, False, show_progress
        )


def compose_retriever(
    model: Retriever | None,
    retriever: str = "dense",
    alpha: float | None = DEFAULT_ALPHA,
    chunking: Chunking | None = None,
) -> Retriever:
    """The retriever for ``--retriever`` (``model``: what ``--model`` loaded; None or BM25 for
    ``--model bm25``), with documents chunked when ``chunking`` is given (it then needs
    ``tokens``). ``alpha``: the hybrid fusion (weight of dense in the convex combination;
    None: reciprocal-rank fusion, k = 60), unused by the other retrievers (the CLI refuses
    ``--alpha``/``--fusion`` there)."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"--retriever must be one of {RETRIEVERS}, got {retriever!r}")
    if chunking is not None and chunking.tokens is None:
        raise ConfigError("--chunking needs --chunk-tokens (the size of each chunk)")
    if retriever == "bm25" or isinstance(model, BM25Retriever) or model is None:
        if retriever == "hybrid" or chunking is not None:
            raise ConfigError(
                "--retriever hybrid and --chunk-tokens need a model directory as --model"
            )
        return model if isinstance(model, BM25Retriever) else BM25Retriever()
    if chunking is not None:
        if not isinstance(model, EmbedderRetriever):
            raise ConfigError("--chunk-tokens needs a diffembed model directory as --model")
        model = ChunkedRetriever(model, chunking)
    if retriever == "hybrid":
        if not isinstance(model, DenseRetriever):
            raise ConfigError("--retriever hybrid needs a dense model as --model")
        return HybridRetriever(model, BM25Retriever(), alpha)
    if retriever in ("sparse", "dense+sparse"):
        if not isinstance(model, EmbedderRetriever):
            raise ConfigError(f"--retriever {retriever} needs a mask-readout model directory")
        sparse = SparseReadoutRetriever(model)
        # One fusion path: the readout's sparse side takes BM25's place in HybridRetriever.
        return sparse if retriever == "sparse" else HybridRetriever(model, sparse, alpha)
    return model
