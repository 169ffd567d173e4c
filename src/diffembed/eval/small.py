"""Evaluating small vectors as users search them: ``diffembed eval --dimensions N --quantize
int8|binary``.

``SmallVectorRetriever`` wraps a dense model's retriever: every vector (queries and documents)
is cut to its first ``N`` dimensions and renormalised (``diffembed.model.dimensions.truncate``,
what ``/v1/embeddings`` ``dimensions`` and ``index build --dimensions`` do), and with
``quantize`` the documents are stored and searched by ``diffembed.eval.quantize``'s
``QuantizedVectors``, the code ``index build --quantize`` searches with (its ranges learned
from this collection, as an index learns them from its first documents). Rankings are the
quantised scores themselves: nothing is re-scored in float, except what binary search
re-scores from int8 codes. Pair-similarity tasks score the cut float vectors (an index has no
pair scores to quantise).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffembed.errors import ConfigError
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR, QuantizedVectors, bytes_per_vector
from diffembed.eval.retrievers import DenseRetriever, EncodeReport, Retriever
from diffembed.model.dimensions import check_dimensions, dimensions_warning, truncate

logger = logging.getLogger(__name__)

DEFAULT_DEPTH = 100  # results a quantised score block is computed for when no top_k set one


class SmallVectorRetriever(DenseRetriever):
    """``base`` with vectors cut to ``dimensions`` (None: all) and documents stored as
    ``quantize`` (``"none"``, ``"int8"``, ``"binary"``; binary re-scores ``rescore_factor``
    candidates per result from int8 codes)."""

    def __init__(
        self,
        base: DenseRetriever,
        dimensions: int | None = None,
        quantize: str = "none",
        rescore_factor: int = RESCORE_FACTOR,
    ) -> None:
        if quantize not in QUANTIZE:
            raise ConfigError(f"--quantize must be one of {QUANTIZE}, got {quantize!r}")
        super().__init__(base.show_progress)
        self.base = base
        self.dimensions, self.quantize, self.rescore_factor = dimensions, quantize, rescore_factor
        parts = [f"{dimensions} dims"] if dimensions is not None else []
        parts += [quantize] if quantize != "none" else []
        self.name = f"{base.name} [{', '.join(parts)}]"
        self.token_unit = base.token_unit
        self.store: QuantizedVectors | None = None
        self.depth = DEFAULT_DEPTH

    def describe(self) -> dict[str, Any]:
        info = self.base.describe()
        info["name"] = self.name
        dim = self.doc_vectors.shape[1] if self.doc_vectors.size else self.dimensions
        info.setdefault("settings", {})["vectors"] = {
            "dimensions": self.dimensions,
            "quantize": self.quantize,
            "rescore_factor": self.rescore_factor if self.quantize == "binary" else None,
            "bytes_per_vector": bytes_per_vector(dim, self.quantize) if dim else None,
        }
        return info

    def _encode(
        self, texts: list[str], instruction: str | None, role: str
    ) -> tuple[np.ndarray, int]:
        vectors, truncated = self.base._encode(texts, instruction, role)
        if self.dimensions is not None:
            check_dimensions(self.dimensions, vectors.shape[1])
        return truncate(vectors, self.dimensions), truncated

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.base.token_lengths(texts)

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        report = super()._index(texts, instruction, symmetric)
        self.store = None
        if self.quantize != "none":
            self.store = QuantizedVectors(
                self.doc_vectors.shape[1], self.quantize, self.rescore_factor
            )
            self.store.add(self.doc_vectors)
        return report

    def score_block(self, queries: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Scores of query rows against every document: the quantised search's
        (``QuantizedVectors.scores`` for a search of ``self.depth`` results), else float."""
        if self.store is None:
            return super().score_block(queries, start, stop)
        return self.store.scores(queries[start:stop], self.depth)

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
        """Float vectors: ``DenseRetriever``'s (exact re-scoring); quantised: the exact top
        ``k`` of the quantised scores (``Retriever.top_k``), whose top ``k`` are the quantised
        search's."""
        if self.store is None:
            return super().top_k(
                queries, n_queries, k, targets, exclude_self, use_faiss, show_progress
            )
        self.depth = k + (1 if exclude_self else 0)
        return Retriever.top_k(
            self, queries, n_queries, k, targets, exclude_self, False, show_progress
        )


def shrink_retriever(
    model: Any, dimensions: int | None, quantize: str, rescore_factor: int = RESCORE_FACTOR
) -> Any:
    """``model`` itself when neither is asked, else ``SmallVectorRetriever`` around it (a dense
    model only: a ``ConfigError`` naming the flags for BM25)."""
    if dimensions is None and quantize == "none":
        return model
    if not isinstance(model, DenseRetriever):
        raise ConfigError("--dimensions and --quantize apply to dense models, not bm25")
    embedder, path = getattr(model, "embedder", None), getattr(model, "path", None)
    if dimensions is not None and embedder is not None and path is not None:
        from diffembed.model.model_dir import trained_dims

        warning = dimensions_warning(dimensions, embedder.dim, trained_dims(path))
        if warning is not None:
            logger.warning("eval --dimensions: %s", warning)
    return SmallVectorRetriever(model, dimensions, quantize, rescore_factor)
