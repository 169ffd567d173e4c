"""Hybrid retrieval's one fusion: two ranked candidate lists (dense and BM25) into one ranking.

Used alike by index search (``diffembed search --mode hybrid``), the server (``/v1/search`` with
``"mode": "hybrid"``) and evaluation (``diffembed eval --retriever hybrid``), so what is measured
is what is served.

- **Convex combination** (default, ``fusion="convex"``, weight ``alpha``, default
  ``DEFAULT_ALPHA``): ``alpha * dense' + (1 - alpha) * bm25'`` where ``'`` is min-max
  normalisation over each list (its best gets 1, its worst 0; a list whose scores are all equal
  gets 1 everywhere); a document missing from a list gets 0 there.
- **Reciprocal-rank fusion** (``fusion="rrf"``; internally ``alpha=None``):
  ``score(d) = sum over lists of 1 / (k + rank(d))`` with 1-based ranks and ``k = 60``
  (Cormack et al., 2009); a list that does not hold ``d`` adds 0.

User-facing choices (``--fusion``/``--alpha``, the request's ``fusion``/``alpha``) become the
internal ``alpha`` (None: RRF) through :func:`resolve_fusion` only.

Each list holds the best ``candidate_depth(k)`` documents of its retriever; the BM25 list holds
only documents sharing a term with the query (score > 0). Ties in the fused ranking go to the
document seen first (dense list first, then BM25).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from diffembed.errors import ConfigError

K = TypeVar("K", bound=Hashable)

RRF_K = 60
CANDIDATES = 100  # documents taken from each retriever before fusion (at least k)
MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("convex", "rrf")
DEFAULT_FUSION = "convex"
# chosen on our own suites; see README "Hybrid search" for the numbers
DEFAULT_ALPHA = 0.1


def candidate_depth(k: int) -> int:
    """How many documents each retriever contributes when ``k`` fused documents are wanted."""
    return max(int(k), CANDIDATES)


def check_alpha(alpha: float | None, flag: str = "--alpha") -> float | None:
    """``alpha`` unchanged when it is None or in [0, 1], else a ValueError naming ``flag``."""
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"{flag} must be a number between 0 and 1 (weight of dense), got {alpha}")
    return float(alpha)


def resolve_fusion(fusion: str | None, alpha: float | None, flag: str = "--alpha") -> float | None:
    """The internal ``alpha`` (None: reciprocal-rank fusion) for a user's ``fusion`` and
    ``alpha``: fusion None means ``DEFAULT_FUSION``; convex takes ``alpha`` (checked) or
    ``DEFAULT_ALPHA``; rrf takes no alpha. Errors name ``flag`` and the fusion flag beside it
    (``--fusion`` for ``--alpha``, ``fusion`` for the request field ``alpha``)."""
    fusion_flag = "--fusion" if flag.startswith("--") else "fusion"
    fusion = DEFAULT_FUSION if fusion is None else fusion
    if fusion not in FUSIONS:
        raise ConfigError(f"{fusion_flag} must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if fusion == "rrf":
        if alpha is not None:
            raise ConfigError(
                f"{flag} applies to {fusion_flag} convex (the weight of dense); reciprocal-rank "
                f"fusion has no weight: drop {flag} or {fusion_flag} rrf"
            )
        return None
    alpha = check_alpha(alpha, flag)
    return DEFAULT_ALPHA if alpha is None else alpha


def describe_fusion(alpha: float | None) -> dict[str, Any]:
    """The fusion an internal ``alpha`` means, as recorded: ``{"method": "rrf", "k": 60}`` or
    ``{"method": "convex", "alpha": alpha}``."""
    alpha = check_alpha(alpha, "alpha")
    if alpha is None:
        return {"method": "rrf", "k": RRF_K}
    return {"method": "convex", "alpha": alpha}


def fusion_label(fusion: Mapping[str, Any]) -> str:
    """A ``describe_fusion`` record for people: ``RRF k=60`` or ``convex alpha=0.1``."""
    if fusion["method"] == "rrf":
        return f"RRF k={fusion['k']}"
    return f"convex alpha={fusion['alpha']:g}"


def describe_search(mode: str, alpha: float | None) -> dict[str, Any]:
    """What a search in ``mode`` used: ``{"mode", "fusion", "alpha"}``; fusion and alpha are
    None unless ``mode`` is hybrid (alpha None for rrf)."""
    if mode not in ("hybrid", "dense+sparse"):
        return {"mode": mode, "fusion": None, "alpha": None}
    return {"mode": mode, "fusion": describe_fusion(alpha)["method"], "alpha": alpha}


def rrf_scores(rankings: Sequence[Sequence[K]], k: int = RRF_K) -> dict[K, float]:
    """Reciprocal-rank fusion of ranked lists (best first): ``{key: sum 1 / (k + rank)}``."""
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    out: dict[K, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            out[key] = out.get(key, 0.0) + 1.0 / (k + rank)
    return out


def minmax(scores: Mapping[K, float]) -> dict[K, float]:
    """Scores mapped linearly onto [0, 1] (best 1, worst 0); all equal: all 1."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {key: (s - lo) / (hi - lo) for key, s in scores.items()}


def convex_scores(
    dense: Mapping[K, float], sparse: Mapping[K, float], alpha: float
) -> dict[K, float]:
    """``alpha * minmax(dense) + (1 - alpha) * minmax(sparse)``; missing entries count 0."""
    nd, ns = minmax(dense), minmax(sparse)
    keys = list(dict.fromkeys([*nd, *ns]))
    return {key: alpha * nd.get(key, 0.0) + (1 - alpha) * ns.get(key, 0.0) for key in keys}


def fuse(
    dense: Sequence[tuple[K, float]],
    sparse: Sequence[tuple[K, float]],
    alpha: float | None = DEFAULT_ALPHA,
    k: int = RRF_K,
) -> list[tuple[K, float]]:
    """Fuse two candidate lists ``[(key, score)]`` (each best first, keys unique per list).

    Args:
        dense, sparse: the dense and the BM25 candidates.
        alpha: the weight of dense in the convex combination of min-max normalised scores
            (default ``DEFAULT_ALPHA``); None: reciprocal-rank fusion (constant ``k``, 60).

    Returns:
        every key of either list with its fused score, best first (ties: first seen).
    """
    if alpha is None:
        fused = rrf_scores([[key for key, _ in dense], [key for key, _ in sparse]], k)
    else:
        fused = convex_scores(dict(dense), dict(sparse), check_alpha(alpha, "alpha"))
    seen = {key: i for i, key in enumerate(dict.fromkeys([key for key, _ in (*dense, *sparse)]))}
    return sorted(fused.items(), key=lambda item: (-item[1], seen[item[0]]))


def top_candidates(
    scores: np.ndarray, depth: int, tiebreak: np.ndarray | None = None, positive: bool = False
) -> list[tuple[int, float]]:
    """The best ``depth`` entries of ``scores`` (``float [N]``) as ``[(index, score)]``, best
    first, ties by ``tiebreak`` (default: index); ``positive`` keeps scores > 0 only (BM25:
    documents sharing a term with the query)."""
    scores = np.asarray(scores)
    keys = np.arange(scores.shape[0]) if tiebreak is None else tiebreak
    pool = np.flatnonzero(scores > 0) if positive else np.arange(scores.shape[0])
    if pool.shape[0] > depth:
        kth = np.partition(scores[pool], pool.shape[0] - depth)[pool.shape[0] - depth]
        pool = pool[scores[pool] >= kth]
    order = np.lexsort((keys[pool], -scores[pool]))[:depth]
    return [(int(i), float(scores[i])) for i in pool[order]]
