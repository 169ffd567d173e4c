"""Writing an index: embed documents (whole, truncated at the model's ``max_length``, or split
into overlapping token windows, embedded one by one or late-chunked: ``diffembed.index.late``)
and store them, with their BM25 (``diffembed.index.lexical``), as a new generation
(``build_index`` for a new index, ``add_documents`` to append or upsert with the index's own
model and settings)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.formats.corpus import Document
from diffembed.index.documents import DocumentsError, chunk_spans
from diffembed.index.store import (
    CURRENT,
    FAISS_TYPES,
    FORMAT_VERSION,
    LOCK,
    EncodedDocuments,
    VectorIndex,
    check_model,
    is_writer_debris,
    load_embedder_for,
    select_in,
    write_generation,
    writer_lock,
)

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder
    from diffembed.model.sharded import ShardedRun
    from diffembed.train.runtime import Dist

logger = logging.getLogger(__name__)


class DuplicateIdError(ValueError):
    """A document id is already in the index (or twice in the input) and upsert was not asked."""


# ------------------------------------------------------------------------------ encoding
def _encode_documents(
    embedder: Embedder,
    docs: list[Document],
    chunk_tokens: int | None,
    chunk_overlap: int,
    batch_tokens: int | None,
    show_progress: bool,
    chunking: str = "plain",
) -> EncodedDocuments:
    """Embed ``docs`` whole (``chunk_tokens`` None) or as token windows (``chunking`` plain:
    each window alone; late: pooled from the whole document), with the document prompt; rows,
    token counts and truncation per document for the store."""
    prefix = embedder.instruction_prefix(embedder.prompts.get("document"))
    texts = [d.full_text for d in docs]
    tok = embedder.tokenizer
    lengths = [
        len(x)
        for x in tok([prefix + t for t in texts], add_special_tokens=True, verbose=False)[
            "input_ids"
        ]
    ]
    if chunk_tokens is not None and chunking == "late":
        return _encode_late(
            embedder, docs, texts, lengths, chunk_tokens, chunk_overlap, batch_tokens
        )
    if chunk_tokens is None:
        rows = [
            (d.id, 0, 0, len(t), min(n, embedder.max_length))
            for d, t, n in zip(docs, texts, lengths, strict=True)
        ]
        chunk_texts, doc_chunks = texts, [1] * len(docs)
    else:
        rows, chunk_texts, doc_chunks = chunk_rows(
            embedder, docs, texts, chunk_tokens, chunk_overlap
        )
    vectors, stats = embedder.encode_with_stats(
        chunk_texts,
        **embedder.role_prompt("document"),
        max_tokens_per_batch=batch_tokens,
        show_progress=show_progress,
        truncate=True,
        warn=False,
    )
    if chunk_tokens is not None and stats.truncated:
        logger.warning(
            "%d chunk(s) exceeded max_length=%d with prefix and special tokens and were "
            "truncated; use a smaller --chunk-tokens",
            stats.truncated,
            embedder.max_length,
        )
    truncated = (
        [n > embedder.max_length for n in lengths] if chunk_tokens is None else [False] * len(docs)
    )
    return EncodedDocuments(
        docs, np.ascontiguousarray(vectors, np.float32), rows, lengths, truncated, doc_chunks
    )


def _encode_late(
    embedder: Embedder,
    docs: list[Document],
    texts: list[str],
    lengths: list[int],
    chunk_tokens: int,
    chunk_overlap: int,
    batch_tokens: int | None,
) -> EncodedDocuments:
    """``_encode_documents`` with late chunking; says how many documents needed windows."""
    from diffembed.index.late import late_chunk

    late = late_chunk(embedder, texts, chunk_tokens, chunk_overlap, batch_tokens)
    for d, n in zip(docs, late.doc_chunks, strict=True):
        if n == 0:
            raise DocumentsError(f"{d.source or d.id}: document {d.id!r} has no tokens")
    if late.windowed:
        logger.warning(
            "late chunking: %d of %d document(s) exceed max_length=%d tokens and were encoded "
            "in %d overlapping windows of up to %d tokens each (each chunk pooled in one window)",
            late.windowed,
            len(docs),
            embedder.max_length,
            sum(w for w in late.windows if w > 1),
            late.capacity,
        )
    rows = [(docs[d].id, c, s, e, n) for d, c, s, e, n in late.rows]
    encoded = EncodedDocuments(
        docs, late.vectors, rows, lengths, [False] * len(docs), late.doc_chunks
    )
    encoded.windowed = late.windowed
    return encoded


def chunk_rows(
    embedder: Embedder,
    docs: list[Document],
    texts: list[str],
    chunk_tokens: int,
    chunk_overlap: int,
) -> tuple[list[tuple[str, int, int, int, int]], list[str], list[int]]:
    """Split each text into token windows: ``(rows, window texts, windows per document)``;
    windows of whitespace only are skipped."""
    enc = embedder.tokenizer(
        texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    rows: list[tuple[str, int, int, int, int]] = []
    chunk_texts: list[str] = []
    doc_chunks: list[int] = []
    for d, t, offsets in zip(docs, texts, enc["offset_mapping"], strict=True):
        kept = 0
        for start, end, n in chunk_spans(offsets, chunk_tokens, chunk_overlap):
            piece = t[start:end]
            if not piece.strip():
                continue
            rows.append((d.id, kept, start, end, n))
            chunk_texts.append(piece)
            kept += 1
        if kept == 0:
            raise DocumentsError(f"{d.source or d.id}: document {d.id!r} has no tokens")
        doc_chunks.append(kept)
    return rows, chunk_texts, doc_chunks


def _check_unique_ids(docs: Sequence[Document]) -> None:
    seen: dict[str, Document] = {}
    for d in docs:
        if d.id in seen:
            raise DuplicateIdError(
                f"{d.source or d.id}: duplicate id {d.id!r} (first at {seen[d.id].source})"
            )
        seen[d.id] = d


# ------------------------------------------------------------------------------ build / add
def build_index(
    docs: Sequence[Document],
    out: str | Path,
    model_dir: str | Path,
    embedder: Embedder | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int = 0,
    faiss_type: str = "flat",
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    batch_tokens: int | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    chunking: str = "plain",
    bm25: bool = True,
    ctx: Dist | None = None,
) -> VectorIndex | None:
    """Embed ``docs`` with the model in ``model_dir`` and write a new index at ``out``.

    Args:
        docs: documents with unique ids (``read_documents``).
        model_dir: the embedding model directory; its hash is recorded.
        embedder: the already loaded model of ``model_dir`` (loaded when None); its
            ``max_length`` and ``precision`` are recorded and reused by add and search.
        chunk_tokens: split documents into windows of this many tokens (None: embed whole,
            truncated at ``max_length``); ``chunk_overlap`` tokens shared by neighbours.
        faiss_type: ``"flat"`` (exact inner product) or ``"hnsw"`` (approximate).
        chunking: ``"plain"`` (each chunk embedded alone) or ``"late"`` (chunks pooled from
            the whole document in context; ``diffembed.index.late``); needs ``chunk_tokens``.
        bm25: keep a BM25 index of the documents in every generation (hybrid search).
        overwrite: replace an existing index at ``out`` (atomically: the old one stays live
            until the new one is complete).
        ctx: the ``torchrun`` process group (``diffembed.model.sharded.join``): every rank
            encodes its shards of ``docs`` (the same on every rank), rank 0 merges them and
            writes the index.

    Returns:
        the opened index (None on ranks other than 0).
    """
    from diffembed.model.embedder import Embedder

    out = Path(out)
    model_dir = Path(model_dir)
    _check_settings(faiss_type, hnsw_m, ef_construction, ef_search, chunk_tokens, chunk_overlap)
    _check_chunking(chunking, chunk_tokens)
    if bm25:  # refuse before any encoding when bm25s is missing
        from diffembed.eval.bm25 import Bm25
        from diffembed.index.lexical import MISSING

        Bm25(missing=MISSING)
    _check_target(out, overwrite)
    _check_unique_ids(docs)
    if embedder is None:
        embedder = Embedder.load(model_dir)
    if chunk_tokens is not None and chunk_tokens > embedder.max_length:
        raise ValueError(
            f"chunk_tokens={chunk_tokens} exceeds the model's max_length={embedder.max_length}"
        )
    meta = _new_meta(model_dir, embedder, chunk_tokens, chunk_overlap)
    meta["documents"]["chunking"] = chunking if chunk_tokens is not None else None
    if bm25:
        meta["bm25"] = {}  # write_generation records the settings and the document count
    meta["faiss"] = {
        "type": faiss_type,
        "metric": "inner_product",
        "hnsw_m": hnsw_m,
        "ef_construction": ef_construction,
        "ef_search": ef_search,
    }

    def encode(part: list[Document], progress: bool = show_progress) -> EncodedDocuments:
        return _encode_documents(
            embedder, part, chunk_tokens, chunk_overlap, batch_tokens, progress, chunking
        )

    run = _sharded_run(out, docs, meta, ctx) if ctx is not None and ctx.world > 1 else None

    def encode_piece(start: int, stop: int) -> dict[str, np.ndarray]:
        main = run is not None and run.ctx.main
        return _encoded_arrays(encode(list(docs[start:stop]), show_progress and main))

    if run is not None and not run.ctx.main:  # rank 0 holds the lock, merges and writes
        run.run(encode_piece)
        return None
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    created, had_lock = not out.exists(), (out / LOCK).exists()
    with writer_lock(out):
        try:
            _check_target(out, overwrite)  # again: now no other writer can change it
            if run is None:
                encoded = encode(list(docs))
            else:
                pieces = run.run(encode_piece)
                encoded = _merge_encoded(docs, pieces or [], meta["embedding"]["dim"])
            write_generation(out, None, meta, encoded, set(), "build")
        except BaseException:
            if not (out / CURRENT).exists():  # a failed first build leaves nothing behind
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                elif not had_lock:
                    (out / LOCK).unlink(missing_ok=True)
            raise
    if run is not None:
        run.finish()
    return VectorIndex.open(out)


# ------------------------------------------------------------------------------ torchrun
def _sharded_run(
    out: Path, docs: Sequence[Document], meta: dict[str, Any], ctx: Dist
) -> ShardedRun:
    """The shards of a ``torchrun`` build (``diffembed.model.sharded``), in ``OUT.shards``,
    keyed by the documents, the model and what decides the vectors."""
    from diffembed.model import sharded

    key = sharded.fingerprint(
        (x for d in docs for x in (d.id, d.full_text)),
        verb="index build",
        model=meta["model"]["hash"],
        embedding=meta["embedding"],
        documents=meta["documents"],
        device=ctx.device.type,
    )
    return sharded.ShardedRun(out, key, ctx, [len(d.full_text) for d in docs])


def _encoded_arrays(encoded: EncodedDocuments) -> dict[str, np.ndarray]:
    """A piece's ``EncodedDocuments`` as arrays for its shard file (rows name their document
    by its index in the piece)."""
    where = {d.id: i for i, d in enumerate(encoded.docs)}
    return {
        "vectors": np.asarray(encoded.vectors, np.float32).reshape(len(encoded.rows), -1),
        "row_doc": np.array([where[r[0]] for r in encoded.rows], np.int64),
        "row_info": np.array([r[1:] for r in encoded.rows], np.int64).reshape(-1, 4),
        "doc_tokens": np.array(encoded.doc_tokens, np.int64),
        "doc_truncated": np.array(encoded.doc_truncated, bool),
        "doc_chunks": np.array(encoded.doc_chunks, np.int64),
        "windowed": np.array(encoded.windowed, np.int64),
    }


def _merge_encoded(
    docs: Sequence[Document], pieces: list[tuple[int, int, dict[str, np.ndarray]]], dim: int
) -> EncodedDocuments:
    """The pieces' ``EncodedDocuments``, concatenated in the input order."""
    rows = [
        (docs[start + d].id, *info)
        for start, _, a in pieces
        for d, info in zip(a["row_doc"].tolist(), a["row_info"].tolist(), strict=True)
    ]
    vectors = [a["vectors"] for _, _, a in pieces]
    merged = EncodedDocuments(
        list(docs),
        np.ascontiguousarray(
            np.concatenate(vectors) if vectors else np.zeros((0, dim)), np.float32
        ),
        rows,
        [int(n) for _, _, a in pieces for n in a["doc_tokens"]],
        [bool(t) for _, _, a in pieces for t in a["doc_truncated"]],
        [int(n) for _, _, a in pieces for n in a["doc_chunks"]],
    )
    merged.windowed = sum(int(a["windowed"]) for _, _, a in pieces)
    return merged


def _check_settings(
    faiss_type: str,
    hnsw_m: int,
    ef_construction: int,
    ef_search: int,
    chunk_tokens: int | None,
    chunk_overlap: int,
) -> None:
    """Refuse settings faiss or chunking cannot use (faiss aborts the process on some)."""
    if faiss_type not in FAISS_TYPES:
        raise ValueError(f"faiss type must be one of {FAISS_TYPES}, got {faiss_type!r}")
    for name, value, least in (
        ("hnsw_m", hnsw_m, 2),
        ("ef_construction", ef_construction, 1),
        ("ef_search", ef_search, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{name} ({flag}) must be an integer >= {least}, got {value!r}")
    if chunk_tokens is None:
        if chunk_overlap:
            raise ValueError("chunk_overlap (--chunk-overlap) needs chunk_tokens (--chunk-tokens)")
        return
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens (--chunk-tokens) must be >= 1, got {chunk_tokens}")
    if not 0 <= chunk_overlap < chunk_tokens:
        raise ValueError(
            f"chunk_overlap (--chunk-overlap) must be >= 0 and below chunk_tokens={chunk_tokens}"
            f", got {chunk_overlap}"
        )


def _check_chunking(chunking: str, chunk_tokens: int | None) -> None:
    from diffembed.index.late import CHUNKINGS

    if chunking not in CHUNKINGS:
        raise ValueError(f"chunking (--chunking) must be one of {CHUNKINGS}, got {chunking!r}")
    if chunking == "late" and chunk_tokens is None:
        raise ValueError("--chunking late needs --chunk-tokens (the size of each chunk)")


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to build over a file, a non-empty non-index folder, or an index (unless asked).
    What a killed writer left (``is_writer_debris``) does not count: the build replaces it."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if (out / CURRENT).exists():
        if not overwrite:
            raise FileExistsError(
                f"{out}: an index exists; use `diffembed index add` or --overwrite"
            )
    elif out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not is_writer_debris(p.name))
        if foreign:
            raise FileExistsError(
                f"{out}: exists, is not empty and is not an index (it holds {foreign[0]!r}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); "
                "choose another --out or empty it"
            )


def _new_meta(
    model_dir: Path, embedder: Embedder, chunk_tokens: int | None, chunk_overlap: int
) -> dict[str, Any]:
    """The meta of a new index: format, model hash and path, embedding settings, chunking."""
    from diffembed.model.model_dir import hash_model_dir

    settings = embedder.settings()
    settings.pop("format_version", None)
    return {
        "format_version": FORMAT_VERSION,
        "model": {"path": str(model_dir.resolve()), **hash_model_dir(model_dir)},
        "embedding": {
            **settings,
            "precision": embedder.precision,
            "dim": embedder.dim,
            "document_prompt": embedder.prompts.get("document"),
        },
        "documents": {
            "mode": "whole" if chunk_tokens is None else "chunked",
            "chunk_tokens": chunk_tokens,
            "chunk_overlap": chunk_overlap if chunk_tokens is not None else None,
            "truncated": 0,
        },
    }


def add_documents(
    index_dir: str | Path,
    docs: Sequence[Document],
    model_dir: str | Path | None = None,
    embedder: Embedder | None = None,
    upsert: bool = False,
    batch_tokens: int | None = None,
    show_progress: bool = False,
) -> VectorIndex:
    """Append ``docs`` to an index, with the index's model and settings.

    An id already in the index is a ``DuplicateIdError`` unless ``upsert`` (then the old
    document and its vectors are replaced). ``model_dir`` (default: the recorded path) must hash
    to the index's model. Crash-safe: the previous generation stays live until the new one is
    complete.
    """
    index_dir = Path(index_dir)
    _check_unique_ids(docs)
    with writer_lock(index_dir):
        with VectorIndex.open(index_dir) as index:
            meta, base = index.meta, index.generation
            existing = {
                r[0]
                for r in select_in(
                    index.db,
                    "SELECT doc_id FROM documents WHERE doc_id IN ({marks})",
                    [d.id for d in docs],
                )
            }
        if existing and not upsert:
            first = next(d for d in docs if d.id in existing)
            raise DuplicateIdError(
                f"{first.source or first.id}: id {first.id!r} is already in {index_dir} "
                f"({len(existing)} duplicate id(s)); pass --upsert to replace them"
            )
        if embedder is None:
            embedder = load_embedder_for(meta, model_dir)
        else:
            check_model(meta, model_dir if model_dir is not None else meta["model"]["path"])
        d = meta["documents"]
        encoded = _encode_documents(
            embedder,
            list(docs),
            d["chunk_tokens"],
            d["chunk_overlap"] or 0,
            batch_tokens,
            show_progress,
            d.get("chunking") or "plain",
        )
        write_generation(index_dir, base, meta, encoded, existing, "upsert" if upsert else "add")
    return VectorIndex.open(index_dir)
