"""Retrievers: the interface every evaluated model implements, dense cosine search, and BM25.

A ``Retriever`` indexes a collection and scores prepared queries against it in blocks of rows;
ranking is exact (:mod:`diffembed.eval.ranking`). Dense models take the top k + 16 candidates
from float32 blocks (or, with ``--faiss``, from a faiss ``IndexFlatIP``) and re-score them in
float64 with a batch-independent summation (``rerank_exact``), so the exact and the faiss path
give bit-identical runs. BM25 (:mod:`diffembed.eval.bm25`) never takes an instruction except
where an instruct task's query text itself carries one. The model retrievers (a diffembed model
directory, MiniLM) and ``make_retriever`` are in :mod:`diffembed.eval.models`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffembed.eval.bm25 import K1, METHOD, B, Bm25, Bm25Index
from diffembed.eval.fusion import DEFAULT_ALPHA
from diffembed.eval.ranking import Run, blocked_top_k, tiebreak_keys

logger = logging.getLogger(__name__)

RERANK_MARGIN = (
    16  # dense: extra candidates re-scored exactly, so near-ties at the cut resolve alike
)


@dataclass
class EncodeReport:
    """What encoding a list of texts did: counts and untruncated lengths in ``token_unit``."""

    texts: int = 0
    truncated: int = 0
    lengths: list[int] = field(default_factory=list)

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else 0.0


@dataclass
class SearchResult:
    """A run ``{qid: {docid: score}}`` (top-k, best first) and full-ranking ranks of targets."""

    run: Run
    ranks: dict[str, dict[str, int]]
    queries: EncodeReport


class Retriever(ABC):
    """A model that scores queries against an indexed collection.

    Call ``index`` with the collection, then ``search`` (retrieval) or ``score_queries``; call
    ``pair_scores`` for similarity pairs. Scores are higher-is-better floats.
    """

    name: str = "retriever"
    kind: str = "abstract"
    token_unit: str = "tokens"

    def __init__(self) -> None:
        self.doc_ids: list[str] = []
        self.tiebreak = np.zeros(0, dtype=np.int64)

    # -- to implement
    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Model identity for result files: name, kind, hash, hash method, settings."""

    @abstractmethod
    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        """Index ``texts`` (documents; ``symmetric``: encoded exactly like queries)."""

    @abstractmethod
    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[Any, EncodeReport]:
        """Encode queries once; the returned object is passed to ``score_block``."""

    @abstractmethod
    def score_block(self, queries: Any, start: int, stop: int) -> np.ndarray:
        """``float32 [stop - start, N]``: scores of prepared query rows against the index."""

    @abstractmethod
    def indexed_as_queries(self) -> Any:
        """The indexed collection as prepared queries (for leave-one-out; no re-encoding)."""

    @abstractmethod
    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        """``float [n]`` similarity of each pair ``(texts1[i], texts2[i])``."""

    # -- shared
    def index(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        instruction: str | None = None,
        symmetric: bool = False,
    ) -> EncodeReport:
        """Index a collection of ``len(ids)`` texts; returns the encoding report."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        self.doc_ids = list(ids)
        self.tiebreak = tiebreak_keys(self.doc_ids)
        return self._index(list(texts), instruction, symmetric)

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
        """Exact top-k of prepared queries; see ``blocked_top_k`` (``use_faiss``: dense only)."""
        return blocked_top_k(
            lambda s, e: self.score_block(queries, s, e),
            n_queries,
            len(self.doc_ids),
            k,
            self.tiebreak,
            exclude_self=exclude_self,
            targets=targets,
            show_progress=show_progress,
        )

    def search(
        self,
        query_ids: Sequence[str],
        query_texts: Sequence[str],
        instruction: str | None = None,
        top_k: int = 100,
        rank_targets: Mapping[str, Sequence[str]] | None = None,
        use_faiss: bool = False,
        show_progress: bool = False,
    ) -> SearchResult:
        """Retrieve the top ``top_k`` indexed documents for each query.

        Args:
            query_ids, query_texts: the queries (same length).
            instruction: passed to the model's query encoding (ignored by BM25 and MiniLM).
            top_k: run depth.
            rank_targets: query id -> document ids whose ranks in the full ranking are wanted.
            use_faiss: faiss top-k for dense models (same result as exact).
            show_progress: progress bars.
        """
        queries, report = self.prepare_queries(query_texts, instruction)
        position = {d: i for i, d in enumerate(self.doc_ids)}
        row_of = {q: i for i, q in enumerate(query_ids)}
        targets = None
        if rank_targets:
            targets = {
                row_of[q]: np.array([position[d] for d in docs], dtype=np.int64)
                for q, docs in rank_targets.items()
                if q in row_of
            }
        indices, values, ranks = self.top_k(
            queries,
            len(query_ids),
            top_k,
            targets,
            use_faiss=use_faiss,
            show_progress=show_progress,
        )
        run: Run = {}
        for r, qid in enumerate(query_ids):
            run[qid] = {
                self.doc_ids[i]: float(v) for i, v in zip(indices[r], values[r], strict=True)
            }
        named: dict[str, dict[str, int]] = {}
        if rank_targets:
            for qid, docs in rank_targets.items():
                if qid in row_of:
                    named[qid] = {d: int(x) for d, x in zip(docs, ranks[row_of[qid]], strict=True)}
        return SearchResult(run, named, report)


class DenseRetriever(Retriever):
    """Cosine retrieval over L2-normalised embeddings: scores are inner products."""

    kind = "dense"
    token_unit = "model tokens"

    def __init__(self, show_progress: bool = False) -> None:
        super().__init__()
        self.show_progress = show_progress
        self.doc_vectors = np.zeros((0, 0), dtype=np.float32)

    @abstractmethod
    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        """``(float32 [n, H] normalised vectors, number truncated)``; role: query|document."""

    @abstractmethod
    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts (special tokens included) under the model's tokenizer."""

    def _report(self, texts: list[str], truncated: int) -> EncodeReport:
        return EncodeReport(len(texts), truncated, self.token_lengths(texts))

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        role = "query" if symmetric else "document"
        self.doc_vectors, truncated = self._encode(texts, instruction, role)
        return self._report(texts, truncated)

    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        vectors, truncated = self._encode(list(texts), instruction, "query")
        return vectors, self._report(list(texts), truncated)

    def score_block(self, queries: np.ndarray, start: int, stop: int) -> np.ndarray:
        return queries[start:stop] @ self.doc_vectors.T

    def indexed_as_queries(self) -> np.ndarray:
        return self.doc_vectors

    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        unique = list(dict.fromkeys([*texts1, *texts2]))
        vectors, truncated = self._encode(unique, instruction, "query")
        row = {t: i for i, t in enumerate(unique)}
        a = vectors[[row[t] for t in texts1]]
        b = vectors[[row[t] for t in texts2]]
        return np.einsum("nh,nh->n", a, b), self._report(unique, truncated)

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
        """Candidates from float32 blocks (or faiss), then ``rerank_exact`` to the final top k."""
        depth = k + RERANK_MARGIN
        if use_faiss and not exclude_self:
            ranks: dict[int, np.ndarray] = {}
            if targets:  # full-ranking ranks need every score: exact pass over those queries
                rows = sorted(targets)
                _, _, sub = super().top_k(
                    queries[rows], len(rows), 1, {i: targets[r] for i, r in enumerate(rows)}
                )
                ranks = {r: sub[i] for i, r in enumerate(rows)}
            candidates = faiss_candidates(queries, self.doc_vectors, depth)
        else:
            candidates, _, ranks = super().top_k(
                queries, n_queries, depth, targets, exclude_self, False, show_progress
            )
        k = min(k, len(self.doc_ids) - (1 if exclude_self else 0))
        indices, values = rerank_exact(queries, self.doc_vectors, candidates, k, self.tiebreak)
        return indices, values, ranks


def rerank_exact(
    queries: np.ndarray,
    docs: np.ndarray,
    candidates: np.ndarray,
    k: int,
    tiebreak: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidates in float64 with a fixed summation order and keep the best ``k``.

    A float32 matrix product rounds differently with the block shape (and faiss differently
    again), which can swap documents whose scores differ in the last bit. Here each score is
    ``sum(doc * query)`` over one contiguous float64 row (numpy's pairwise summation, which
    does not depend on the batch), rounded to float32, so every search path agrees bit for bit.

    Args:
        queries: ``float32 [Q, H]``; docs: ``float32 [N, H]``; tiebreak: ``int [N]``.
        candidates: ``int [Q, C]`` document indices per query (``-1`` entries are ignored).
        k: documents to keep (at most ``C``).

    Returns:
        ``(int64 [Q, k], float32 [Q, k])``: best first, ties by ``tiebreak``.
    """
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    values = np.empty((queries.shape[0], k), dtype=np.float32)
    for r in range(queries.shape[0]):
        cand = candidates[r][candidates[r] >= 0]
        q = queries[r].astype(np.float64)
        exact = np.sum(docs[cand].astype(np.float64) * q, axis=1).astype(np.float32)
        order = np.lexsort((tiebreak[cand], -exact))[:k]
        if order.shape[0] < k:
            raise ValueError(f"query {r}: {order.shape[0]} candidates for top {k}")
        indices[r] = cand[order]
        values[r] = exact[order]
    return indices, values


def faiss_candidates(queries: np.ndarray, docs: np.ndarray, depth: int) -> np.ndarray:
    """``int64 [Q, min(depth, N)]``: the top documents by a faiss ``IndexFlatIP`` (float32).

    Args:
        queries: ``float32 [Q, H]``; docs: ``float32 [N, H]``.
    """
    try:
        import faiss
    except ImportError as e:
        raise ImportError("--faiss needs faiss-cpu: pip install 'diffembed[eval]'") from e
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    _, candidates = index.search(
        np.ascontiguousarray(queries, dtype=np.float32), min(docs.shape[0], depth)
    )
    return candidates.astype(np.int64)


class BM25Retriever(Retriever):
    """BM25 (bm25s, Lucene variant, k1 = 1.5, b = 0.75) over lower-cased word tokens with
    English stop words removed and Snowball English stemming when PyStemmer is installed
    (the one BM25, :mod:`diffembed.eval.bm25`).

    Instructions are ignored; the similarity of a pair is the mean of BM25(text1 -> text2) and
    BM25(text2 -> text1) within an index of all the pairs' texts.
    """

    name = "bm25"
    kind = "bm25"
    token_unit = "whitespace tokens"

    def __init__(self, k1: float = K1, b: float = B, method: str = METHOD) -> None:
        super().__init__()
        self.bm25 = Bm25(
            k1, b, method, missing="--model bm25 needs bm25s: pip install 'diffembed[eval]'"
        )
        self.k1, self.b, self.method = k1, b, method
        self.stemmer_name = self.bm25.stemmer_name
        if self.bm25.stemmer is None:
            logger.warning("bm25: PyStemmer is not installed; indexing without stemming")
        self.model: Bm25Index | None = None

    def describe(self) -> dict[str, Any]:
        settings = self.bm25.settings(version=True)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return {
            "name": self.name,
            "kind": "bm25",
            "hash": f"sha256:{digest}",
            "hash_method": "sha256 of the settings",
            "settings": settings,
        }

    @staticmethod
    def _report(texts: Sequence[str]) -> EncodeReport:
        return EncodeReport(len(texts), 0, [len(t.split()) for t in texts])

    def _indexed(self) -> Bm25Index:
        if self.model is None:
            raise RuntimeError("bm25: call index() first")
        return self.model

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        self.model = self.bm25.index(texts)
        return self._report(texts)

    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[list[list[int]], EncodeReport]:
        return self._indexed().query_ids(texts), self._report(texts)

    def score_block(self, queries: list[list[int]], start: int, stop: int) -> np.ndarray:
        return self._indexed().score_rows(queries[start:stop])

    def indexed_as_queries(self) -> list[list[int]]:
        return self._indexed().indexed_ids()

    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        unique = list(dict.fromkeys([*texts1, *texts2]))
        row = {t: i for i, t in enumerate(unique)}
        report = self.index([str(i) for i in range(len(unique))], unique)
        queries = self.indexed_as_queries()
        scores = np.empty(len(texts1), dtype=np.float64)
        for i, (a, b) in enumerate(zip(texts1, texts2, strict=True)):
            ia, ib = row[a], row[b]
            forward = self.score_block(queries, ia, ia + 1)[0, ib]
            backward = self.score_block(queries, ib, ib + 1)[0, ia]
            scores[i] = (float(forward) + float(backward)) / 2
        return scores, report


class HybridRetriever(Retriever):
    """A dense retriever and BM25 fused by :func:`diffembed.eval.fusion.fuse` -- a convex
    combination of min-max normalised scores with weight ``alpha`` on dense (default
    ``DEFAULT_ALPHA``); None: reciprocal-rank fusion (k = 60) -- exactly as index search and
    the server fuse them: each side contributes its ``candidate_depth(k)`` best documents
    (BM25: those sharing a term with the query).

    Documents outside both candidate lists score ``FLOOR``. Similarity pairs fuse the two
    rankings of the pairs the same way.
    """

    kind = "hybrid"
    FLOOR = -1.0

    def __init__(
        self, dense: DenseRetriever, bm25: Retriever, alpha: float | None = DEFAULT_ALPHA
    ) -> None:
        from diffembed.eval.fusion import CANDIDATES, check_alpha

        super().__init__()
        self.dense, self.bm25 = dense, bm25
        self.alpha = check_alpha(alpha)
        self.name = f"hybrid({dense.name}+{bm25.name})"
        self.token_unit = dense.token_unit
        self.depth = CANDIDATES

    def fusion(self) -> dict[str, Any]:
        """The fusion settings, as recorded with results (``describe_fusion`` and the depth)."""
        from diffembed.eval.fusion import describe_fusion

        return {**describe_fusion(self.alpha), "candidates": self.depth}

    def describe(self) -> dict[str, Any]:
        dense, bm25 = self.dense.describe(), self.bm25.describe()
        parts = json.dumps([dense["hash"], bm25["hash"], self.fusion()], sort_keys=True)
        return {
            "name": self.name,
            "kind": "hybrid",
            "hash": f"sha256:{hashlib.sha256(parts.encode()).hexdigest()}",
            "hash_method": "sha256 of the dense and bm25 hashes and the fusion settings",
            "dense": dense,
            "bm25": bm25,
            "settings": {"fusion": self.fusion()},
        }

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        self.bm25.index(self.doc_ids, texts, instruction, symmetric)
        return self.dense.index(self.doc_ids, texts, instruction, symmetric)

    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[tuple[Any, Any], EncodeReport]:
        dense, report = self.dense.prepare_queries(texts, instruction)
        return (dense, self.bm25.prepare_queries(texts, instruction)[0]), report

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
        """``Retriever.top_k`` over fused scores, with candidates as deep as a search of ``k``."""
        from diffembed.eval.fusion import candidate_depth

        self.depth = candidate_depth(k)
        return super().top_k(queries, n_queries, k, targets, exclude_self, False, show_progress)

    def score_block(self, queries: tuple[Any, Any], start: int, stop: int) -> np.ndarray:
        from diffembed.eval.fusion import fuse, top_candidates

        dense = self.dense.score_block(queries[0], start, stop)
        sparse = self.bm25.score_block(queries[1], start, stop)
        out = np.full(dense.shape, self.FLOOR, dtype=np.float32)
        for r in range(dense.shape[0]):
            fused = fuse(
                top_candidates(dense[r], self.depth, self.tiebreak),
                top_candidates(sparse[r], self.depth, self.tiebreak, positive=True),
                self.alpha,
            )
            out[r, [i for i, _ in fused]] = [s for _, s in fused]
        return out

    def indexed_as_queries(self) -> tuple[Any, Any]:
        return self.dense.indexed_as_queries(), self.bm25.indexed_as_queries()

    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        from diffembed.eval.fusion import fuse, top_candidates

        dense, report = self.dense.pair_scores(texts1, texts2, instruction)
        sparse, _ = self.bm25.pair_scores(texts1, texts2, instruction)
        n = len(texts1)
        fused = fuse(top_candidates(dense, n), top_candidates(sparse, n), self.alpha)
        out = np.zeros(n, dtype=np.float64)
        out[[i for i, _ in fused]] = [s for _, s in fused]
        return out, report
