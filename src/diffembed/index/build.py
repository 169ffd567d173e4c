"""Writing an index: embed documents (whole, truncated at the model's ``max_length``, or split
into overlapping token windows, embedded one by one or late-chunked: ``diffembed.model.chunking``)
and store them, with their BM25 (``diffembed.index.lexical``), as a new generation
(``build_index`` for a new index, ``add_documents`` to append or upsert with the index's own
model and settings)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import ConfigError, DiffembedError, OutputExistsError
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR, bytes_per_vector
from diffembed.formats.corpus import Document
from diffembed.index.documents import DocumentsError
from diffembed.index.generations import (
    CURRENT,
    FORMAT_VERSION,
    LOCK,
    is_writer_debris,
    writer_lock,
)
from diffembed.index.store import (
    FAISS_TYPES,
    EncodedDocuments,
    VectorIndex,
    check_model,
    load_embedder_for,
    select_in,
    write_generation,
)
from diffembed.model.chunking import Chunking, late_chunk, split_texts
from diffembed.model.dimensions import check_dimensions, dimensions_warning

if TYPE_CHECKING:
    from diffembed.distributed import Dist
    from diffembed.model.embedder import Embedder
    from diffembed.model.sharded import ShardedRun

logger = logging.getLogger(__name__)


class DuplicateIdError(DiffembedError):
    """A document id is already in the index (or twice in the input) and upsert was not asked."""


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class IndexSettings:
    """What a new index is built with, checked when made (errors name the flags); recorded in
    its meta.json, and reused by ``add_documents`` and search.

    ``chunking``: whole documents (truncated at the model's ``max_length``) or token windows
    (:class:`diffembed.model.chunking.Chunking`); ``faiss_type``: ``"flat"`` (exact inner
    product) or ``"hnsw"`` (approximate, ``hnsw_m`` neighbours per node, ``ef_construction`` /
    ``ef_search`` build and search depths); ``bm25``: keep a BM25 index of the documents in
    every generation (hybrid search); ``dimensions``: store the first N dimensions of each
    vector, renormalised (None: all); ``quantize``: ``"none"`` (float32), ``"int8"`` or
    ``"binary"`` (``diffembed.index.quantize``; flat only), binary re-scoring
    ``rescore_factor`` candidates per result from int8 codes kept on disk.
    """

    chunking: Chunking = field(default_factory=Chunking)
    faiss_type: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    bm25: bool = True
    dimensions: int | None = None
    quantize: str = "none"
    rescore_factor: int = RESCORE_FACTOR

    def __post_init__(self) -> None:
        # faiss aborts the process on some of these, so they are refused before it sees them.
        if self.faiss_type not in FAISS_TYPES:
            raise ConfigError(f"faiss type must be one of {FAISS_TYPES}, got {self.faiss_type!r}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(
                f"quantize (--quantize) must be one of {QUANTIZE}, got {self.quantize!r}"
            )
        if self.quantize != "none" and self.faiss_type != "flat":
            raise ConfigError(
                f"--quantize {self.quantize} searches every vector (faiss flat); drop --faiss "
                f"{self.faiss_type}"
            )
        if self.dimensions is not None and (
            isinstance(self.dimensions, bool)
            or not isinstance(self.dimensions, (int, np.integer))
            or self.dimensions < 1
        ):
            raise ConfigError(f"--dimensions must be an integer >= 1, got {self.dimensions!r}")
        for name, least in (
            ("hnsw_m", 2),
            ("ef_construction", 1),
            ("ef_search", 1),
            ("rescore_factor", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{name} ({flag}) must be an integer >= {least}, got {value!r}")

    def vectors_meta(self, model_dim: int) -> dict[str, Any]:
        """meta.json's ``vectors`` entry for a model of ``model_dim`` dimensions."""
        dim = check_dimensions(self.dimensions or model_dim, model_dim)
        out: dict[str, Any] = {"dim": dim, "quantize": self.quantize}
        if self.quantize == "binary":
            out.update(rescore="int8", rescore_factor=self.rescore_factor)
        out["bytes_per_vector"] = bytes_per_vector(dim, self.quantize)
        return out

    def faiss_meta(self) -> dict[str, Any]:
        """meta.json's ``faiss`` entry."""
        return {
            "type": self.faiss_type,
            "metric": "inner_product",
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
        }


def recorded_chunking(meta: dict[str, Any]) -> Chunking:
    """The ``Chunking`` an index's meta.json records (``documents``)."""
    d = meta["documents"]
    if d["chunk_tokens"] is None:
        return Chunking()
    return Chunking(d["chunk_tokens"], d["chunk_overlap"] or 0, d.get("chunking") or "plain")


# ------------------------------------------------------------------------------ encoding
def _encode_documents(
    embedder: Embedder,
    docs: list[Document],
    chunking: Chunking,
    batch_tokens: int | None,
    show_progress: bool,
) -> EncodedDocuments:
    """Embed ``docs`` whole or as token windows (``chunking`` plain: each window alone; late:
    pooled from the whole document), with the document prompt; rows, token counts and
    truncation per document for the store."""
    prefix = embedder.instruction_prefix(embedder.prompts.get("document"))
    texts = [d.full_text for d in docs]
    tok = embedder.tokenizer
    lengths = [
        len(x)
        for x in tok([prefix + t for t in texts], add_special_tokens=True, verbose=False)[
            "input_ids"
        ]
    ]
    if chunking.mode == "late":
        return _encode_late(embedder, docs, texts, lengths, chunking, batch_tokens)
    if chunking.tokens is None:
        rows = [
            (d.id, 0, 0, len(t), min(n, embedder.max_length))
            for d, t, n in zip(docs, texts, lengths, strict=True)
        ]
        chunk_texts, doc_chunks = texts, [1] * len(docs)
    else:
        found, chunk_texts, doc_chunks = split_texts(
            embedder, texts, chunking.tokens, chunking.overlap
        )
        _refuse_empty(docs, doc_chunks)
        rows = [(docs[d].id, c, s, e, n) for d, c, s, e, n in found]
    vectors, stats = embedder.encode_with_stats(
        chunk_texts,
        **embedder.role_prompt("document"),
        max_tokens_per_batch=batch_tokens,
        show_progress=show_progress,
        truncate=True,
        warn=False,
    )
    if chunking.chunked and stats.truncated:
        logger.warning(
            "%d chunk(s) exceeded max_length=%d with prefix and special tokens and were "
            "truncated; use a smaller --chunk-tokens",
            stats.truncated,
            embedder.max_length,
        )
    truncated = (
        [n > embedder.max_length for n in lengths] if not chunking.chunked else [False] * len(docs)
    )
    return EncodedDocuments(
        docs, np.ascontiguousarray(vectors, np.float32), rows, lengths, truncated, doc_chunks
    )


def _refuse_empty(docs: Sequence[Document], doc_chunks: Sequence[int]) -> None:
    """Refuse the first document that has no chunk with text, naming it."""
    for d, n in zip(docs, doc_chunks, strict=True):
        if n == 0:
            raise DocumentsError(f"{d.source or d.id}: document {d.id!r} has no tokens")


def _encode_late(
    embedder: Embedder,
    docs: list[Document],
    texts: list[str],
    lengths: list[int],
    chunking: Chunking,
    batch_tokens: int | None,
) -> EncodedDocuments:
    """``_encode_documents`` with late chunking; says how many documents needed windows."""
    assert chunking.tokens is not None  # Chunking refuses late without tokens
    late = late_chunk(embedder, texts, chunking.tokens, chunking.overlap, batch_tokens)
    _refuse_empty(docs, late.doc_chunks)
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
    settings: IndexSettings | None = None,
    *,
    embedder: Embedder | None = None,
    batch_tokens: int | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    ctx: Dist | None = None,
) -> VectorIndex | None:
    """Embed ``docs`` with the model in ``model_dir`` and write a new index at ``out``.

    Args:
        docs: documents with unique ids (``read_documents``).
        model_dir: the embedding model directory; its hash is recorded.
        settings: chunking, faiss type and BM25 (``IndexSettings``; default: whole documents,
            flat, with BM25).
        embedder: the already loaded model of ``model_dir`` (loaded when None); its
            ``max_length`` and ``precision`` are recorded and reused by add and search.
        batch_tokens: token budget of an encoding batch (default: the model's).
        overwrite: replace an existing index at ``out`` (atomically: the old one stays live
            until the new one is complete).
        ctx: the ``torchrun`` process group (``diffembed.model.sharded.join``): every rank
            encodes its shards of ``docs`` (the same on every rank), rank 0 merges them and
            writes the index.

    Returns:
        the opened index (None on ranks other than 0).
    """
    from diffembed.model.embedder import Embedder

    settings = settings or IndexSettings()
    out, model_dir = Path(out), Path(model_dir)
    if settings.bm25:  # refuse before any encoding when bm25s is missing
        from diffembed.eval.bm25 import Bm25
        from diffembed.index.lexical import MISSING

        Bm25(missing=MISSING)
    _check_target(out, overwrite)
    _check_unique_ids(docs)
    if embedder is None:
        embedder = Embedder.load(model_dir)
    tokens = settings.chunking.tokens
    if tokens is not None and tokens > embedder.max_length:
        raise ConfigError(
            f"chunk_tokens={tokens} exceeds the model's max_length={embedder.max_length}"
        )
    meta = _new_meta(model_dir, embedder, settings)
    _warn_untrained_dims(model_dir, meta["vectors"]["dim"], embedder.dim)

    def encode(part: list[Document], progress: bool = show_progress) -> EncodedDocuments:
        return _encode_documents(embedder, part, settings.chunking, batch_tokens, progress)

    run = _sharded_run(out, docs, meta, ctx) if ctx is not None and ctx.world > 1 else None
    if run is None:
        _write_first_generation(out, docs, meta, overwrite, lambda: encode(list(docs)))
        return VectorIndex.open(out)

    def encode_piece(start: int, stop: int) -> dict[str, np.ndarray]:
        return _encoded_arrays(encode(list(docs[start:stop]), show_progress and run.ctx.main))

    if not run.ctx.main:  # rank 0 holds the lock, merges and writes
        run.run(encode_piece)
        return None

    def merged() -> EncodedDocuments:
        return _merge_encoded(docs, run.run(encode_piece) or [], meta["embedding"]["dim"])

    _write_first_generation(out, docs, meta, overwrite, merged)
    run.finish()
    return VectorIndex.open(out)


def _write_first_generation(
    out: Path,
    docs: Sequence[Document],
    meta: dict[str, Any],
    overwrite: bool,
    encode: Callable[[], EncodedDocuments],
) -> None:
    """Under the writer lock, check ``out`` again, ``encode`` the documents and write them as
    the index's first generation; a failed first build leaves nothing behind."""
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    created, had_lock = not out.exists(), (out / LOCK).exists()
    with writer_lock(out):
        try:
            _check_target(out, overwrite)  # again: now no other writer can change it
            write_generation(out, None, meta, encode(), set(), "build")
        except BaseException:
            if not (out / CURRENT).exists():
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                elif not had_lock:
                    (out / LOCK).unlink(missing_ok=True)
            raise


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


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to build over a file, a non-empty non-index folder, or an index (unless asked).
    What a killed writer left (``is_writer_debris``) does not count: the build replaces it."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    if (out / CURRENT).exists():
        if not overwrite:
            raise OutputExistsError(
                f"{out}: an index exists; use `diffembed index add` or --overwrite"
            )
    elif out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not is_writer_debris(p.name))
        if foreign:
            raise OutputExistsError(
                f"{out}: exists, is not empty and is not an index (it holds {foreign[0]!r}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); "
                "choose another --out or empty it"
            )


def _new_meta(model_dir: Path, embedder: Embedder, settings: IndexSettings) -> dict[str, Any]:
    """The meta of a new index: format, model hash and path, embedding settings, chunking,
    BM25 (filled in by ``write_generation``) and faiss."""
    from diffembed.model.model_dir import hash_model_dir

    embedding = embedder.settings()
    embedding.pop("format_version", None)
    chunking = settings.chunking
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": {"path": str(model_dir.resolve()), **hash_model_dir(model_dir)},
        "embedding": {
            **embedding,
            "precision": embedder.precision,
            "dim": embedder.dim,
            "document_prompt": embedder.prompts.get("document"),
        },
        "documents": {
            "mode": "chunked" if chunking.chunked else "whole",
            "chunk_tokens": chunking.tokens,
            "chunk_overlap": chunking.overlap if chunking.chunked else None,
            "truncated": 0,
            "chunking": chunking.mode if chunking.chunked else None,
        },
    }
    if settings.bm25:
        meta["bm25"] = {}  # write_generation records the settings and the document count
    meta["faiss"] = settings.faiss_meta()
    meta["vectors"] = settings.vectors_meta(embedder.dim)
    return meta


def _warn_untrained_dims(model_dir: Path, dim: int, full: int) -> None:
    """Log a warning when the index keeps a length of the vectors the model was not trained
    for (``dimensions_warning``)."""
    from diffembed.model.model_dir import trained_dims

    warning = dimensions_warning(dim, full, trained_dims(model_dir))
    if warning is not None:
        logger.warning("index --dimensions: %s", warning)


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
        encoded = _encode_documents(
            embedder, list(docs), recorded_chunking(meta), batch_tokens, show_progress
        )
        write_generation(index_dir, base, meta, encoded, existing, "upsert" if upsert else "add")
    return VectorIndex.open(index_dir)
