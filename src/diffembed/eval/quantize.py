"""Quantised vectors for memory-bound indexes (``index build --quantize int8|binary``) and for
evaluating them (``diffembed eval --quantize``): one search, measured where it is served (as
``diffembed.eval.fusion`` is for hybrid search). The index's files are
``diffembed.index.quantize``.

- ``int8``: faiss ``IndexScalarQuantizer`` (``QT_8bit``: each dimension's range, learned from
  the first vectors written, cut into 256 steps), searched exactly by inner product of the
  float query with the decoded vectors. 1 byte per dimension in memory (0.25x float32).
- ``binary``: faiss ``IndexBinaryFlat`` of the vectors' signs (1 bit per dimension in memory,
  1/32 of float32), searched by Hamming distance for the top ``k * rescore_factor`` rows,
  which are then re-scored by inner product with their int8 vectors. The int8 codes (1 byte per
  dimension) live on disk in ``rescore.safetensors`` and are memory-mapped: a search reads only
  its candidates' rows, so they cost disk and page cache, not resident memory.

Values outside the range learned by the first write are clipped to it (the vectors are unit
length, so a dimension's range rarely grows much). ``QuantizedVectors.search`` is what index
search and ``diffembed eval --quantize`` both call; ``scores`` gives every row's score for the
same search, for evaluation's full rankings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTIZE = ("none", "int8", "binary")
RESCORE_FACTOR = 10  # binary: rows re-scored per result wanted
_BELOW = 4.0  # binary: rows not re-scored rank after every re-scored one (cosines lie in -1..1)


def _faiss() -> Any:
    import faiss

    return faiss


def _new_sq(dim: int) -> Any:
    faiss = _faiss()
    return faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )


def bytes_per_vector(dim: int, quantize: str) -> dict[str, int]:
    """Bytes one stored vector of ``dim`` dimensions takes: ``in_memory`` (what search holds)
    and ``on_disk`` (the whole generation's vector files, rescoring codes included)."""
    if quantize == "none":
        return {"in_memory": 4 * dim, "on_disk": 4 * dim}
    if quantize == "int8":
        return {"in_memory": dim, "on_disk": dim}
    if quantize == "binary":
        bits = (dim + 7) // 8
        return {"in_memory": bits, "on_disk": bits + dim}
    raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")


class QuantizedVectors:
    """Quantised rows with the methods of the faiss indexes the store uses (``ntotal``, ``add``,
    ``search``, ``reconstruct_n``), plus ``select`` (keep some rows, codes untouched) and
    ``scores``; ``diffembed.index.quantize`` writes and reads them.

    Args:
        dim: dimensions per vector.
        quantize: ``"int8"`` or ``"binary"``.
        rescore_factor: binary only: rows re-scored per result wanted.
        sq: the faiss scalar quantizer (int8: holding the rows; binary: empty, its trained ranges
            encode and decode the rescoring codes).
        bits: binary only: the faiss ``IndexBinaryFlat`` of the sign bits.
        codes: binary only: ``uint8 [N, dim]`` int8 codes of the rows (may be memory-mapped).
    """

    def __init__(
        self,
        dim: int,
        quantize: str,
        rescore_factor: int = RESCORE_FACTOR,
        sq: Any = None,
        bits: Any = None,
        codes: np.ndarray | None = None,
    ) -> None:
        if quantize not in ("int8", "binary"):
            raise ValueError(f"quantize must be int8 or binary, got {quantize!r}")
        self.dim, self.quantize, self.rescore_factor = dim, quantize, int(rescore_factor)
        self.sq = sq if sq is not None else _new_sq(dim)
        if quantize == "binary":
            self.bits = bits if bits is not None else _faiss().IndexBinaryFlat(8 * ((dim + 7) // 8))
            self.codes = codes if codes is not None else np.zeros((0, dim), np.uint8)

    # ------------------------------------------------------------------ the faiss interface
    @property
    def ntotal(self) -> int:
        return int(self.sq.ntotal if self.quantize == "int8" else self.bits.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.sq.is_trained)

    def add(self, vectors: np.ndarray) -> None:
        """Append ``float32 [n, dim]`` unit vectors; the first call learns the int8 ranges."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(vectors):
            return
        if not self.sq.is_trained:
            self.sq.train(vectors)
        if self.quantize == "int8":
            self.sq.add(vectors)
            return
        self.bits.add(np.packbits(vectors > 0, axis=1))
        self.codes = np.concatenate([np.asarray(self.codes), self.sq.sa_encode(vectors)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 [Q, k] scores, int64 [Q, k] rows)`` best first; rows ``-1`` (score
        ``-inf``) past the last row. int8: inner product with the decoded vectors; binary: the
        top ``k * rescore_factor`` rows by Hamming distance re-scored from their int8 codes."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.quantize == "int8":
            return self.sq.search(queries, k)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        if self.ntotal == 0:
            return scores, rows
        for r, (cand, exact) in enumerate(self._rescored(queries, k)):
            order = np.lexsort((cand, -exact))[:k]
            scores[r, : len(order)], rows[r, : len(order)] = exact[order], cand[order]
        return scores, rows

    def _rescored(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: its candidate rows (Hamming top ``k * rescore_factor``) and their
        re-scored inner products ``float32``."""
        depth = min(self.ntotal, max(k, 1) * self.rescore_factor)
        _, found = self.bits.search(np.packbits(queries > 0, axis=1), depth)
        out = []
        for q, cand in zip(queries, found, strict=True):
            cand = cand[cand >= 0].astype(np.int64)
            # Sorted rows read a memory-mapped file front to back.
            cand = np.sort(cand)
            decoded = self.sq.sa_decode(np.ascontiguousarray(self.codes[cand]))
            out.append((cand, (decoded @ q).astype(np.float32)))
        return out

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        """``float32 [n, dim]``: the rows' decoded int8 vectors (not the floats written)."""
        if self.quantize == "int8":
            return self.sq.reconstruct_n(start, n)
        return self.sq.sa_decode(np.ascontiguousarray(self.codes[start : start + n]))

    # ------------------------------------------------------------------ beyond faiss
    def scores(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``float32 [Q, N]``: every row's score in a top-``k`` ``search`` (its top ``k`` are
        ``search``'s): int8: inner products with the decoded vectors; binary: re-scored
        candidates their inner product, every other row ``4 - 2 * hamming / bits`` below them
        (so they keep their Hamming order, after the candidates)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.quantize == "int8":
            return queries @ self.reconstruct_n(0, self.ntotal).T
        signs = np.unpackbits(self._bit_codes(), axis=1)[:, : self.bits.d].astype(np.float32)
        qbits = (queries > 0).astype(np.float32)
        # hamming = |q| + |x| - 2 q.x for 0/1 vectors
        hamming = qbits.sum(1, keepdims=True) + signs.sum(1)[None] - 2 * (qbits @ signs.T)
        out = (1.0 - 2.0 * hamming / self.bits.d - _BELOW).astype(np.float32)
        for r, (cand, exact) in enumerate(self._rescored(queries, k)):
            out[r, cand] = exact
        return out

    def _bit_codes(self) -> np.ndarray:
        faiss = _faiss()
        return faiss.vector_to_array(self.bits.xb).reshape(self.ntotal, self.bits.code_size)

    def select(self, rows: list[int]) -> QuantizedVectors:
        """A copy holding only ``rows`` (in that order), their codes copied, not re-encoded."""
        faiss = _faiss()
        sq = faiss.clone_index(self.sq)
        sq.reset()
        if self.quantize == "int8":
            codes = faiss.vector_to_array(self.sq.codes).reshape(self.ntotal, self.sq.code_size)
            if rows:
                sq.add_sa_codes(np.ascontiguousarray(codes[rows]))
            return QuantizedVectors(self.dim, "int8", self.rescore_factor, sq)
        bits = faiss.IndexBinaryFlat(self.bits.d)
        if rows:
            bits.add(np.ascontiguousarray(self._bit_codes()[rows]))
        codes = np.ascontiguousarray(np.asarray(self.codes)[rows]).reshape(-1, self.dim)
        return QuantizedVectors(self.dim, "binary", self.rescore_factor, sq, bits, codes)
