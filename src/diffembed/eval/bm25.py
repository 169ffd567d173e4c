"""The one BM25 of diffembed: its settings, tokenizer, index, dense scores and top-k.

Settings (recorded by :meth:`Bm25.settings`): ``bm25s``, Lucene variant, k1 = 1.5, b = 0.75,
bm25s's lower-cased word tokens with English stop words removed, and Snowball English stemming
when PyStemmer is installed. The evaluation's ``--model bm25``
(:class:`diffembed.eval.retrievers.BM25Retriever`) and the hard-negative mining of
``diffembed pairs`` both score with it.

>>> bm25 = Bm25()                                          # doctest: +SKIP
>>> index = bm25.index(["The quick brown fox", "Sleeping cats"])  # doctest: +SKIP
>>> index.scores("quick foxes")                            # float32 [2]  # doctest: +SKIP
>>> index.top_k("quick foxes", 1)                          # (indices, scores)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LIBRARY = "bm25s"
METHOD = "lucene"
K1 = 1.5
B = 0.75
STOPWORDS = "en"
STEMMER_NAME = "snowball-english (PyStemmer)"
MISSING_BM25S = "bm25 needs bm25s: pip install 'diffembed[eval]'"


def import_bm25s(missing: str = MISSING_BM25S) -> Any:
    """The ``bm25s`` module, with its per-index DEBUG messages kept out of our log.

    Args:
        missing: the ImportError message when bm25s is not installed.
    """
    try:
        import bm25s
    except ImportError as e:
        raise ImportError(missing) from e
    # bm25s sets its own logger to DEBUG; keep its per-index messages out of our log.
    bm25s_logger = logging.getLogger("bm25s")
    bm25s_logger.setLevel(max(bm25s_logger.level, logging.INFO))
    return bm25s


def load_stemmer() -> tuple[Any, str | None]:
    """``(PyStemmer's Snowball English stemmer, its name)``, or ``(None, None)`` without it."""
    try:
        import Stemmer
    except ImportError:
        return None, None
    return Stemmer.Stemmer("english"), STEMMER_NAME


class Bm25:
    """BM25 settings and tokenizer; ``index(texts)`` builds a :class:`Bm25Index`.

    Args:
        k1, b, method: bm25s parameters (defaults: Lucene, 1.5, 0.75).
        missing: the ImportError message when bm25s is not installed.
    """

    def __init__(
        self, k1: float = K1, b: float = B, method: str = METHOD, *, missing: str = MISSING_BM25S
    ) -> None:
        self.bm25s = import_bm25s(missing)
        self.k1, self.b, self.method = k1, b, method
        self.stemmer, self.stemmer_name = load_stemmer()

    def settings(self, version: bool = False) -> dict[str, Any]:
        """``{library, method, k1, b, stopwords, stemmer}``; ``version``: library "bm25s X.Y"."""
        library = LIBRARY
        if version:
            library = f"{LIBRARY} {getattr(self.bm25s, '__version__', '?')}"
        return {
            "library": library,
            "method": self.method,
            "k1": self.k1,
            "b": self.b,
            "stopwords": STOPWORDS,
            "stemmer": self.stemmer_name,
        }

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Word tokens of each text: lower-cased, stop words removed, stemmed."""
        return self.bm25s.tokenize(
            list(texts),
            stopwords=STOPWORDS,
            stemmer=self.stemmer,
            return_ids=False,
            show_progress=False,
        )

    def index(self, texts: Sequence[str]) -> Bm25Index:
        """A BM25 index over ``texts`` (documents are never truncated)."""
        return Bm25Index(self, texts)


class Bm25Index:
    """BM25 over a list of documents: dense ``float32 [N]`` scores of a query, and top-k.

    Queries are token lists (``bm25.tokenize``) mapped to index ids (``query_ids``); tokens not
    in the index are dropped, and a query with no token left scores 0 everywhere.
    """

    def __init__(self, bm25: Bm25, texts: Sequence[str]) -> None:
        self.bm25 = bm25
        self.tokens: list[list[str]] | None = bm25.tokenize(texts)
        self.size = len(self.tokens)
        self.model = bm25.bm25s.BM25(k1=bm25.k1, b=bm25.b, method=bm25.method)
        self.model.index(self.tokens, show_progress=False)

    def __len__(self) -> int:
        return self.size

    def save(self, directory: str | Path) -> list[Path]:
        """Write the index's bm25s files into ``directory`` (created); returns their paths.
        The documents' tokens are not saved: a loaded index scores queries only."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(str(directory), show_progress=False)
        return sorted(p for p in directory.iterdir() if p.is_file())

    @classmethod
    def load(cls, bm25: Bm25, directory: str | Path, size: int) -> Bm25Index:
        """An index ``save`` wrote into ``directory``, over ``size`` documents (checked)."""
        self = cls.__new__(cls)
        self.bm25, self.tokens, self.size = bm25, None, size
        self.model = bm25.bm25s.BM25.load(str(directory), show_progress=False)
        n = int(self.model.scores["num_docs"])
        if n != size:
            raise ValueError(f"{directory}: BM25 index of {n} documents, expected {size}")
        return self

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        """Index ids of one query's tokens (empty and unknown tokens dropped)."""
        return self.model.get_tokens_ids([t for t in tokens if t])

    def query_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``token_ids`` of each text, tokenized like the documents."""
        return [self.token_ids(t) for t in self.bm25.tokenize(texts)]

    def indexed_ids(self) -> list[list[int]]:
        """The indexed documents as queries (``token_ids`` of their tokens)."""
        if self.tokens is None:
            raise RuntimeError("a loaded BM25 index has no document tokens")
        return [self.token_ids(t) for t in self.tokens]

    def scores_from_ids(self, ids: Sequence[int]) -> np.ndarray:
        """``float32 [N]``: BM25 of one query (index ids) against every document."""
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(list(ids)), dtype=np.float32)

    def score_rows(self, queries: Sequence[Sequence[int]]) -> np.ndarray:
        """``float32 [len(queries), N]``: ``scores_from_ids`` of each query."""
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        for r, ids in enumerate(queries):
            if ids:
                out[r] = self.scores_from_ids(ids)
        return out

    def scores(self, query: str) -> np.ndarray:
        """``float32 [N]``: BM25 of the query text against every document."""
        return self.scores_from_ids(self.query_ids([query])[0])

    def top_k(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(int64 [k'], float32 [k'])``: the ``min(k, N)`` best documents, ties by index."""
        scores = self.scores(query)
        order = np.lexsort((np.arange(self.size), -scores))[:k]
        return order.astype(np.int64), scores[order]
