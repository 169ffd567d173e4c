"""Exact ranking: trec_eval's tie order, top-k over score matrices produced in blocks, and ranks.

Every retriever exposes a score matrix over an indexed collection, computed in blocks of query
rows (at most ``SCORE_BLOCK_FLOATS`` float32 at a time, so memory stays bounded whatever the
corpus size). Ranking is exact: score descending, ties broken by document id descending --
trec_eval's order, so our top-k and pytrec_eval agree on every tie.

Ranks are 1-based positions in the full ranking of the candidate set, never capped at k
(``ranks_of``); for runs given as dicts, ``ranks_in_run`` ranks a missing document at
``len(run) + 1`` (MTEB's convention for a fixed candidate list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

Run = dict[str, dict[str, float]]
SCORE_BLOCK_FLOATS = 1 << 24  # 64 MiB of float32 scores per block of query rows


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


def _checked_block(
    score_block: Callable[[int, int], np.ndarray], start: int, stop: int, n_docs: int
) -> np.ndarray:
    """The float32 score rows ``start..stop``, checked for shape and finiteness."""
    block = np.asarray(score_block(start, stop), dtype=np.float32)
    if block.shape != (stop - start, n_docs):
        raise ValueError(f"score block has shape {block.shape}, want {(stop - start, n_docs)}")
    if not np.isfinite(block).all():
        raise FloatingPointError(f"non-finite scores for queries {start}..{stop - 1}")
    return block


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
        block = _checked_block(score_block, start, stop, n_docs)
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


def sort_run(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """A query's run as ``[(docid, score)]`` in trec_eval order: score desc, then id desc."""
    return sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)


def ranks_in_run(scores: Mapping[str, float], doc_ids: Sequence[str]) -> dict[str, int]:
    """1-based ranks of ``doc_ids`` in one query's run (trec_eval order); a document missing
    from the run gets ``len(run) + 1`` (MTEB's convention for a fixed candidate list)."""
    position = {d: i + 1 for i, (d, _) in enumerate(sort_run(scores))}
    return {d: position.get(d, len(scores) + 1) for d in doc_ids}
