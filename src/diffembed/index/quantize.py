"""The files of a quantised index generation (``diffembed.eval.quantize`` holds the vectors and
their search): ``vectors.faiss`` (int8: the faiss scalar-quantizer index; binary: the faiss
binary index of the sign bits) and, binary only, ``rescore.safetensors`` (``codes``: the int8
codes that re-score candidates, memory-mapped when read; ``quantizer``: the serialized, empty
faiss scalar quantizer whose learned ranges decode them)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.eval.quantize import RESCORE_FACTOR, QuantizedVectors
from diffembed.index.generations import RESCORE, VECTORS, corrupt_file, corrupt_from_error


def _faiss() -> Any:
    import faiss

    return faiss


def write_quantized(vectors: QuantizedVectors, generation: Path) -> None:
    """Write ``vectors.faiss`` (and, binary, ``rescore.safetensors``) into a generation."""
    from safetensors.numpy import save_file

    faiss = _faiss()
    if vectors.quantize == "int8":
        faiss.write_index(vectors.sq, str(generation / VECTORS))
        return
    faiss.write_index_binary(vectors.bits, str(generation / VECTORS))
    empty = faiss.clone_index(vectors.sq)
    empty.reset()
    save_file(
        {
            "codes": np.ascontiguousarray(np.asarray(vectors.codes), dtype=np.uint8),
            "quantizer": faiss.serialize_index(empty),
        },
        str(generation / RESCORE),
    )


def read_quantized(generation: Path, vectors: dict[str, Any]) -> QuantizedVectors:
    """The quantised rows of a generation whose meta.json ``vectors`` entry is ``vectors``;
    a damaged or mismatched file is an ``IndexFormatError`` naming it."""
    faiss = _faiss()
    dim, quantize = int(vectors["dim"]), vectors["quantize"]
    factor = int(vectors.get("rescore_factor", RESCORE_FACTOR))
    path = generation / VECTORS
    try:
        if quantize == "int8":
            sq = faiss.read_index(str(path))
        else:
            bits = faiss.read_index_binary(str(path))
    except RuntimeError as e:  # faiss reports a short, garbled or other-kind file this way
        raise corrupt_from_error(path, f"not a readable {quantize} faiss index", e) from None
    if quantize == "int8":
        if not isinstance(sq, faiss.IndexScalarQuantizer) or sq.d != dim:
            raise corrupt_file(path, f"not an int8 scalar-quantizer index of {dim} dimensions")
        return QuantizedVectors(dim, "int8", factor, sq)
    if bits.d != 8 * ((dim + 7) // 8):
        raise corrupt_file(path, f"a binary index of {bits.d} bits, not {dim} dimensions")
    codes, quantizer = _read_rescore(generation / RESCORE, dim)
    try:
        sq = faiss.deserialize_index(quantizer)
    except RuntimeError as e:
        raise corrupt_from_error(generation / RESCORE, "no readable quantizer", e) from None
    if len(codes) != bits.ntotal or sq.d != dim:
        raise corrupt_file(
            generation / RESCORE,
            f"{len(codes)} rescoring rows of {sq.d} dimensions for {bits.ntotal} vectors of {dim}",
        )
    return QuantizedVectors(dim, "binary", factor, sq, bits, codes)


def _read_rescore(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``rescore.safetensors``: its ``codes`` ``uint8 [N, dim]`` memory-mapped (read only as a
    search touches them) and its serialized ``quantizer`` ``uint8 [B]``."""
    if not path.is_file():
        raise corrupt_file(path, "missing (a binary index keeps its rescoring codes there)")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise corrupt_file(path, "not a safetensors file", str(e)[:200]) from None
    out = []
    for name in ("codes", "quantizer"):
        entry = header.get(name) if isinstance(header, dict) else None
        if not isinstance(entry, dict) or entry.get("dtype") != "U8":
            raise corrupt_file(path, f"no uint8 tensor {name!r}")
        shape, (start, end) = entry["shape"], entry["data_offsets"]
        if int(np.prod(shape)) != end - start or 8 + n + end > size:
            raise corrupt_file(path, f"tensor {name!r} does not fit the file")
        if name == "codes" and (len(shape) != 2 or shape[1] != dim):
            raise corrupt_file(path, f"codes of shape {shape}, not [rows, {dim}]")
        offset = 8 + n + start
        if end == start:
            out.append(np.zeros(shape, np.uint8))
        else:
            out.append(np.memmap(path, np.uint8, "r", offset=offset, shape=tuple(shape)))
    return out[0], np.array(out[1])
