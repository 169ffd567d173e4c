"""The one BM25 (diffembed.eval.bm25) gives the scores of both BM25 stacks it replaced."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest
import Stemmer

from diffembed.eval.bm25 import Bm25
from diffembed.eval.retrievers import BM25Retriever

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Foxes are running; a fox runs faster than dogs.",
    "Cats sleep all day in the sun.",
    "The the the of and",  # stop words only
    "",
    "Python programming: running scripts and programs.",
]
QUERIES = [
    "quick foxes",
    "running dog",
    "sleeping cat",
    "the and of",  # stop words only: no token
    "zebra unicorn",  # no token in the index
    "program run fox fox",
]

# Computed before the redesign (bm25s 0.3.16, PyStemmer installed) by both old implementations,
# which agreed exactly: ``diffembed.eval.evaluate.BM25Retriever`` (index DOCS, prepare_queries,
# score_block; float32) and ``diffembed.data.pairs.build.Bm25Index(pool, _bm25_tokenizer()[0])
# .scores(query)`` (the same values as float64).
OLD_SCORES = [
    [0.7686174511909485, 0.47406938672065735, 0.0, 0.0, 0.0, 0.0],
    [0.3079235851764679, 0.7819929718971252, 0.0, 0.0, 0.0, 0.3702002465724945],
    [0.0, 0.0, 1.1077357530593872, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.6158471703529358, 1.4222081899642944, 0.0, 0.0, 0.0, 1.184981107711792],
]

# What ``diffembed pairs`` records as "bm25" in pairs.report.json.
PAIRS_REPORT_SETTINGS = {
    "library": "bm25s",
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "stopwords": "en",
    "stemmer": "snowball-english (PyStemmer)",
}


def reference_scores(docs: list[str], queries: list[str]) -> np.ndarray:
    """bm25s called directly with the old settings."""
    stemmer = Stemmer.Stemmer("english")

    def tokenize(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
        )

    model = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    model.index(tokenize(docs), show_progress=False)
    rows = []
    for tokens in tokenize(queries):
        ids = model.get_tokens_ids(tokens)
        rows.append(model.get_scores_from_ids(ids) if ids else np.zeros(len(docs)))
    return np.asarray(rows, dtype=np.float32)


def test_scores_equal_both_old_implementations():
    index = Bm25().index(DOCS)
    scores = np.stack([index.scores(q) for q in QUERIES])
    assert scores.dtype == np.float32 and scores.shape == (len(QUERIES), len(DOCS))
    np.testing.assert_allclose(scores, np.asarray(OLD_SCORES), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(scores, reference_scores(DOCS, QUERIES))
    # The token-id path (what the evaluation's score blocks use) gives the same rows.
    np.testing.assert_array_equal(index.score_rows(index.query_ids(QUERIES)), scores)


def test_retriever_scores_are_the_one_bm25():
    retriever = BM25Retriever()
    retriever.index([f"d{i}" for i in range(len(DOCS))], DOCS)
    queries, report = retriever.prepare_queries(QUERIES, None)
    block = retriever.score_block(queries, 0, len(QUERIES))
    np.testing.assert_array_equal(block, np.stack([Bm25().index(DOCS).scores(q) for q in QUERIES]))
    assert report.lengths == [len(q.split()) for q in QUERIES]


def test_settings_as_recorded_by_pairs_and_eval():
    bm25 = Bm25()
    assert bm25.settings() == PAIRS_REPORT_SETTINGS
    assert list(bm25.settings()) == list(PAIRS_REPORT_SETTINGS)
    versioned = BM25Retriever().describe()["settings"]
    assert versioned == {**PAIRS_REPORT_SETTINGS, "library": f"bm25s {bm25s.__version__}"}
    assert bm25.settings(version=True) == versioned


def test_top_k_best_first_ties_by_index():
    index = Bm25().index(["cat", "dog", "cat", "cat dog", "bird"])
    order, scores = index.top_k("cat", 10)
    full = index.scores("cat")
    assert order.tolist() == sorted(range(5), key=lambda j: (-full[j], j))
    np.testing.assert_array_equal(scores, full[order])
    assert order[:2].tolist() == [0, 2]  # equal scores: lower index first
    assert index.top_k("cat", 2)[0].tolist() == [0, 2]
    assert index.top_k("zebra", 3)[1].tolist() == [0.0, 0.0, 0.0]


def test_missing_bm25s_names_the_caller(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(ImportError, match="pairs build needs bm25s"):
        Bm25(missing="pairs build needs bm25s: pip install bm25s")
    with pytest.raises(ImportError, match="--model bm25 needs bm25s"):
        BM25Retriever()
