"""Evaluation metrics: retrieval (pytrec_eval), p-MRR, kNN classification, similarity correlation.

- **Retrieval**: nDCG@1, nDCG@10, Recall@10, Recall@100, MRR@10 and MAP from pytrec_eval, over
  the queries with at least one relevant document (a query missing from the run scores 0).
  Recall@k is the share of a query's relevant documents in its top k. trec_eval's
  ``recip_rank`` has no cutoff, so MRR@10 is ``recip_rank`` of the run truncated to its top 10.
  MAP is computed on the top-k run (``--top-k``, default 100).
- **p-MRR** (FollowIR / MTEB): for each query and each document whose relevance the changed
  instruction removed, with 1-based ranks ``R_og`` (run with the original instruction) and
  ``R_new`` (run with the changed one): ``R_new / R_og - 1`` if ``R_og >= R_new`` else
  ``1 - R_og / R_new``; mean over a query's documents, then over queries. Range -1..1; positive
  means the document moved down as the changed instruction asks. Ranks are positions in the full
  ranking of the candidate set (the task's whole corpus), never capped at k, so a document is
  never "missing" from a run (see :mod:`diffembed.eval.ranking`).
- **Classification**: kNN majority vote, accuracy and macro-F1.
- **Similarity**: Pearson and Spearman correlation with human scores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffembed.errors import DiffembedError
from diffembed.eval.ranking import sort_run
from diffembed.formats.tasks import RETRIEVAL_METRICS

logger = logging.getLogger(__name__)

_PYTREC_MEASURES = {"ndcg_cut.1,10", "recall.10,100", "map"}
_PYTREC_KEYS = {
    "ndcg_at_1": "ndcg_cut_1",
    "ndcg_at_10": "ndcg_cut_10",
    "recall_at_10": "recall_10",
    "recall_at_100": "recall_100",
    "map": "map",
}


def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError as e:
        raise ImportError("metrics need pytrec-eval-terrier: pip install 'diffembed[eval]'") from e
    return pytrec_eval


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """nDCG@1, nDCG@10, Recall@10, Recall@100, MRR@10 and MAP of ``run`` against ``qrels``.

    Scored queries are those of ``qrels`` with a relevant (score > 0) document; one absent from
    ``run`` scores 0. MRR@10 is trec_eval's ``recip_rank`` over each query's top 10 only.

    Returns:
        ``(means, per_query)``: metric name -> mean over scored queries, and query id -> metric
        name -> value; names are ``formats.tasks.RETRIEVAL_METRICS``.
    """
    pytrec_eval = _pytrec_eval()
    scored = {
        q: {d: int(s) for d, s in judged.items()}
        for q, judged in qrels.items()
        if any(s > 0 for s in judged.values())
    }
    if not scored:
        raise DiffembedError("no query has a relevant document")
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
        raise DiffembedError("p-MRR needs at least one changed document")
    return float(np.mean(list(per_query.values()))), per_query


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
