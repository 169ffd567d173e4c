"""Hard negatives of the training pairs: BM25 mining, optional re-mining with a model, and the
rank statistics the build report gives per task.

**Hard negatives.** BM25 (bm25s, Lucene variant, k1 1.5, b 0.75, English stopwords, snowball
stemming when PyStemmer is installed) over the candidate documents of the positive's pool: the
documents of the same source (id namespace: ``gcide``, ``man``, ``python``...; for the section
tasks, the sections of that source). Never negatives: the positive, any document with the same
text, any document that shares a title/headword/lemma key with the positive (and for
``definition-entry`` with any lemma of the query synset), and the task-specific exclusions of
:mod:`diffembed.data.pairs.sources`. The ``K`` best-scoring remaining documents with a BM25
score above zero are the negatives (ties broken by pool order); when fewer exist the rest are
drawn at random (seeded) from the pool and counted as ``random_fill`` in the report. Pairs left
with no negative at all (a pool of one) are dropped.

**Re-mining with a model** (``--miner MODEL_DIR``): ``Embedder.load(MODEL_DIR)`` encodes the
queries with the task instruction and the pool documents without one; candidates are ranked by
cosine similarity with the same exclusions, and the negatives are the top-ranked remaining
documents after (1) skipping the ``--miner-skip`` highest-ranked ones (default 2) and (2)
dropping any whose similarity exceeds ``--miner-max-ratio`` (default 0.95) times the positive's
similarity (when that is positive): the highest-ranked non-positives are the likeliest false
negatives (unlabelled relevant documents). BM25 statistics are still reported.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.data.pairs.pools import Candidate, Pool, seeded
from diffembed.data.pairs.sources import INSTRUCTIONS
from diffembed.errors import ConfigError
from diffembed.eval.bm25 import Bm25, Bm25Index

logger = logging.getLogger(__name__)

DEFAULT_MINER_SKIP = 2
DEFAULT_MINER_MAX_RATIO = 0.95


# ------------------------------------------------------------------------------ BM25
def bm25_indexes() -> tuple[Callable[[Pool], Bm25Index], str | None]:
    """A getter of each pool's BM25 index (``diffembed.eval.bm25``, built on first use) and the
    stemmer's name."""
    bm25 = Bm25(missing="pairs build needs bm25s: pip install bm25s")
    indexes: dict[str, Bm25Index] = {}

    def get(pool: Pool) -> Bm25Index:
        if pool.name not in indexes:
            indexes[pool.name] = bm25.index(pool.texts)
        return indexes[pool.name]

    return get, bm25.stemmer_name


def ranked(scores: np.ndarray) -> np.ndarray:
    """Pool indices by descending score, ties by index."""
    return np.lexsort((np.arange(len(scores)), -scores))


@dataclass
class Mined:
    """Negatives of one candidate and the statistics of how they were found."""

    negatives: list[int]
    positive_rank: int
    positive_score: float
    negative_scores: list[float]
    random_fill: int


def pick_negatives(
    scores: np.ndarray,
    excluded: set[int],
    k: int,
    rng: random.Random,
    pool: Pool,
    skip: int = 0,
    max_score: float | None = None,
    min_score: float | None = None,
) -> tuple[list[int], int]:
    """The ``k`` best-scoring documents not in ``excluded``, distinct by text.

    ``skip`` top eligible documents are passed over, as is any scoring above ``max_score``;
    only documents scoring above ``min_score`` count as ranked; the rest is filled at random
    (seeded by ``rng``). Returns the negatives and how many were random fills.
    """
    chosen: list[int] = []
    texts: set[str] = set()
    skipped = 0
    for i in ranked(scores):
        if len(chosen) == k:
            break
        i = int(i)
        if i in excluded or pool.texts[i] in texts:
            continue
        if min_score is not None and scores[i] <= min_score:
            break
        if skipped < skip:
            skipped += 1
            continue
        if max_score is not None and scores[i] > max_score:
            continue
        chosen.append(i)
        texts.add(pool.texts[i])
    filled = 0
    if len(chosen) < k:
        order = list(range(len(pool)))
        rng.shuffle(order)
        taken = set(chosen)
        for i in order:
            if len(chosen) == k:
                break
            if i in excluded or i in taken or pool.texts[i] in texts:
                continue
            chosen.append(i)
            texts.add(pool.texts[i])
            filled += 1
    return chosen, filled


def positive_rank(scores: np.ndarray, positive: int, excluded: set[int]) -> int:
    """1 + the number of eligible documents scoring strictly above the positive."""
    mask = np.ones(len(scores), dtype=bool)
    mask[list(excluded)] = False
    return 1 + int(np.count_nonzero(scores[mask] > scores[positive]))


# ------------------------------------------------------------------------------ mining
class ModelMiner:
    """Re-mines negatives with an embedding model (see the module doc for the rule)."""

    def __init__(
        self,
        model_dir: str | Path,
        skip: int = DEFAULT_MINER_SKIP,
        max_ratio: float = DEFAULT_MINER_MAX_RATIO,
        device: str = "cpu",
        show_progress: bool = False,
    ) -> None:
        from diffembed.model.embedder import Embedder

        if skip < 0:
            raise ConfigError(f"miner skip must be >= 0, got {skip}")
        if max_ratio <= 0:
            raise ConfigError(f"miner max ratio must be > 0, got {max_ratio}")
        self.model_dir = Path(model_dir)
        self.embedder = Embedder.load(self.model_dir, device=device)
        self.skip = skip
        self.max_ratio = max_ratio
        self.show_progress = show_progress
        self.truncated: dict[str, int] = {}
        self._docs: dict[str, np.ndarray] = {}

    def describe(self) -> dict[str, Any]:
        """The miner's settings and how many texts it truncated to the model's max length."""
        return {
            "model": str(self.model_dir),
            "skip": self.skip,
            "max_ratio": self.max_ratio,
            "max_length": self.embedder.max_length,
            "truncated_to_max_length": dict(sorted(self.truncated.items())),
        }

    def _encode(self, texts: list[str], role: str, instruction: str | None = None) -> np.ndarray:
        """Encode, counting truncations (per role) instead of warning once per call."""
        vectors, stats = self.embedder.encode_with_stats(
            texts,
            **self.embedder.role_prompt(role, instruction),
            show_progress=self.show_progress,
            warn=False,
        )
        what = "queries" if role == "query" else "documents"
        if stats.truncated:
            self.truncated[what] = self.truncated.get(what, 0) + stats.truncated
        return vectors

    def doc_vectors(self, pool: Pool) -> np.ndarray:
        """Document embeddings of a pool (no instruction), computed once per pool."""
        if pool.name not in self._docs:
            logger.info("miner: encoding %d documents of %s", len(pool), pool.name)
            self._docs[pool.name] = self._encode(list(pool.texts), "document")
        return self._docs[pool.name]

    def query_vectors(self, queries: Sequence[str], instruction: str) -> np.ndarray:
        """Query embeddings with the task instruction."""
        return self._encode(list(queries), "query", instruction)


def _mined(
    scores: np.ndarray, c: Candidate, excluded: set[int], negs: list[int], filled: int
) -> Mined:
    return Mined(
        negs,
        positive_rank(scores, c.positive, excluded),
        float(scores[c.positive]),
        [float(scores[i]) for i in negs],
        filled,
    )


def _mine_bm25(
    task: str,
    candidates: list[Candidate],
    excluded: list[set[int]],
    k: int,
    seed: int,
    bm25: Callable[[Pool], Bm25Index],
    show_progress: bool,
) -> list[Mined]:
    from tqdm.auto import tqdm

    out: list[Mined] = []
    for j, c in enumerate(
        tqdm(candidates, desc=f"bm25 {task}", unit="q", disable=not show_progress)
    ):
        # float64 downstream, as before the BM25 stacks were merged (same values).
        scores = bm25(c.pool).scores(c.bm25_query or c.query).astype(np.float64)
        negs, filled = pick_negatives(
            scores, excluded[j], k, seeded(seed, task, "bm25", j), c.pool, min_score=0.0
        )
        out.append(_mined(scores, c, excluded[j], negs, filled))
    return out


def _mine_model(
    task: str,
    candidates: list[Candidate],
    excluded: list[set[int]],
    k: int,
    seed: int,
    miner: ModelMiner,
) -> list[Mined]:
    out: list[Mined | None] = [None] * len(candidates)
    by_pool: dict[str, list[int]] = defaultdict(list)
    for j, c in enumerate(candidates):
        by_pool[c.pool.name].append(j)
    for members in by_pool.values():
        pool = candidates[members[0]].pool
        docs = miner.doc_vectors(pool)
        queries = miner.query_vectors([candidates[j].query for j in members], INSTRUCTIONS[task])
        for row, j in enumerate(members):
            c = candidates[j]
            scores = (docs @ queries[row]).astype(np.float64)
            pos = float(scores[c.positive])
            cap = miner.max_ratio * pos if pos > 0 else None
            negs, filled = pick_negatives(
                scores,
                excluded[j],
                k,
                seeded(seed, task, "model", j),
                pool,
                skip=miner.skip,
                max_score=cap,
            )
            out[j] = _mined(scores, c, excluded[j], negs, filled)
    return [m for m in out if m is not None]


def mine(
    task: str,
    candidates: list[Candidate],
    k: int,
    seed: int,
    bm25: Callable[[Pool], Bm25Index],
    miner: ModelMiner | None,
    show_progress: bool = False,
) -> tuple[list[Mined], list[Mined] | None]:
    """BM25 negatives (and model ones when ``miner`` is given) for each candidate."""
    excluded = [c.excluded() for c in candidates]
    bm25_out = _mine_bm25(task, candidates, excluded, k, seed, bm25, show_progress)
    if miner is None:
        return bm25_out, None
    return bm25_out, _mine_model(task, candidates, excluded, k, seed, miner)


# ------------------------------------------------------------------------------ report
def round_mean(values: Sequence[float]) -> float:
    """The mean rounded to 4 decimals (0.0 for no values), as the build report gives means."""
    return round(float(np.mean(values)), 4) if len(values) else 0.0


def rank_stats(mined: Sequence[Mined]) -> dict[str, Any]:
    """Where the positives ranked and how the negatives scored, over one task's pairs."""
    ranks = np.array([m.positive_rank for m in mined], dtype=np.float64)
    top = [m.negative_scores[0] for m in mined if m.negative_scores]
    return {
        "positive_rank_median": float(np.median(ranks)) if len(ranks) else 0.0,
        "recall@1": round_mean(list(ranks <= 1)),
        "recall@10": round_mean(list(ranks <= 10)),
        "mrr": round_mean(list(1.0 / ranks)),
        "mean_positive_score": round_mean([m.positive_score for m in mined]),
        "mean_top_negative_score": round_mean(top),
        "mean_negative_score": round_mean([s for m in mined for s in m.negative_scores]),
        "random_fill": int(sum(m.random_fill for m in mined)),
    }
