"""The on-disk index: generations of faiss vectors + SQLite documents, written crash-safely.

Layout of an index directory::

    INDEX_DIR/
      CURRENT          the name of the live generation ("gen-000003\\n"), replaced atomically
      .lock            flock'ed by a writer (build/add), so two writers never interleave
      gen-000003/
        meta.json      model dir hash + path, embedding settings, chunking mode, faiss type,
                       counts, and each other file's size and sha256 ("files")
        vectors.faiss  faiss index (IndexFlatIP, or IndexHNSWFlat with inner product; with
                       --quantize an int8 scalar quantizer or a binary index,
                       ``diffembed.index.quantize``); row r is the r-th vector, of the first
                       meta.json ``vectors.dim`` dimensions of the model's, renormalised
        rescore.safetensors  binary indexes: the int8 codes that re-score the candidates
        docs.sqlite    documents(doc_id, title, text, meta, tokens, truncated, n_chunks) and
                       vectors(row, doc_id, chunk, char_start, char_end, tokens)
        bm25/          BM25 over the same documents (``diffembed.index.lexical``), when built
                       with it (meta.json's "bm25" entry)

Every write (``write_generation``, called by ``build_index`` and ``add_documents``) copies the
live generation into a fresh hidden temporary directory, changes the copy, fsyncs it, renames it
to ``gen-N+1`` and only then replaces ``CURRENT``. A writer killed at any point (``kill -9``)
therefore leaves the previous generation live and consistent (vector count == row count);
leftovers are removed by the next writer, and a first build killed midway leaves only
leftovers, which the next ``build_index`` replaces (``is_writer_debris``). Readers (``VectorIndex``) open whatever ``CURRENT``
names and check every file against the size and sha256 recorded when the generation was
written (``verify_files``; a file damaged in place is refused, never searched), then the counts.
An index never mixes models: ``check_model`` compares a model
directory's hash with the recorded one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import DiffembedError, InputNotFoundError
from diffembed.eval.quantize import QuantizedVectors
from diffembed.formats.corpus import Document

# CURRENT stays importable from here for diffembed.serve.live_index.
from diffembed.index.generations import CURRENT as CURRENT
from diffembed.index.generations import (
    DOCS,
    FILES,
    META,
    READABLE_VERSIONS,
    VECTORS,
    IndexFormatError,
    clean_leftovers,
    corrupt_file,
    corrupt_from_error,
    current_generation,
    file_checksums,
    fsync_path,
    generation_number,
    swap_current,
    verify_files,
)
from diffembed.index.quantize import read_quantized, write_quantized
from diffembed.io import atomic_dir, read_json, write_json
from diffembed.model.dimensions import truncate

if TYPE_CHECKING:
    from diffembed.index.lexical import LexicalIndex
    from diffembed.model.embedder import Embedder

FAISS_TYPES = ("flat", "hnsw")


class ModelMismatchError(DiffembedError):
    """The model given is not the one the index was built with."""


# ------------------------------------------------------------------------------ faiss / sqlite
def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("the index needs faiss-cpu: pip install 'diffembed[serve]'") from e
    return faiss


def _new_faiss(dim: int, kind: str, hnsw_m: int, ef_construction: int) -> Any:
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    raise ValueError(f"faiss type must be one of {FAISS_TYPES}, got {kind!r}")


def vectors_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json's ``vectors`` entry (stored ``dim``, ``quantize`` none|int8|binary,
    ``rescore_factor``, ``bytes_per_vector``); for a version-1 index, which stored the model's
    float32 vectors whole, the entry it would have had."""
    recorded = meta.get("vectors")
    if recorded is not None:
        return recorded
    return {"dim": int(meta["embedding"]["dim"]), "quantize": "none"}


def _empty_faiss(meta: dict[str, Any]) -> Any:
    """A new, empty faiss index (or ``QuantizedVectors``) of the type and settings ``meta``
    records."""
    f, v = meta["faiss"], vectors_meta(meta)
    if v["quantize"] != "none":
        return QuantizedVectors(v["dim"], v["quantize"], v.get("rescore_factor", 10))
    return _new_faiss(v["dim"], f["type"], f["hnsw_m"], f["ef_construction"])


def read_vectors(generation: Path, meta: dict[str, Any]) -> Any:
    """The generation's vectors: a faiss index, or ``QuantizedVectors`` for a quantised index;
    a damaged file is an ``IndexFormatError`` naming it."""
    v = vectors_meta(meta)
    if v["quantize"] != "none":
        return read_quantized(generation, v)
    faiss, path = _faiss(), generation / VECTORS
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:  # faiss reports a short or garbled file this way
        raise corrupt_from_error(path, "not a readable faiss index", e) from None
    kind = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW}.get(meta["faiss"]["type"])
    if (kind is not None and not isinstance(index, kind)) or index.d != v["dim"]:
        raise corrupt_file(
            path, f"not a float32 {meta['faiss']['type']} index of {v['dim']} dimensions"
        )
    return index


def _write_vectors(vindex: Any, generation: Path) -> None:
    if isinstance(vindex, QuantizedVectors):
        write_quantized(vindex, generation)
    else:
        _faiss().write_index(vindex, str(generation / VECTORS))


_SCHEMA = """
CREATE TABLE documents(
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, meta TEXT NOT NULL,
    tokens INTEGER NOT NULL, truncated INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    ord INTEGER NOT NULL);
CREATE TABLE vectors(
    row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, chunk INTEGER NOT NULL,
    char_start INTEGER NOT NULL, char_end INTEGER NOT NULL, tokens INTEGER NOT NULL);
CREATE INDEX vectors_doc ON vectors(doc_id);
"""


def select_in(db: sqlite3.Connection, sql: str, values: Sequence[Any]) -> list[tuple]:
    """Run ``sql`` (with one ``{marks}`` placeholder for an IN list) over ``values`` in slices."""
    out: list[tuple] = []
    for i in range(0, len(values), 500):
        part = list(values[i : i + 500])
        out.extend(db.execute(sql.format(marks=",".join("?" * len(part))), part))
    return out


class VectorIndex:
    """A read-only view of one generation of an index (what ``CURRENT`` named when opened).

    Use ``VectorIndex.open(dir)``; ``search(vectors, k)`` ranks documents.
    """

    def __init__(self, path: Path, generation: Path, meta: dict[str, Any], faiss_index: Any):
        self.path = path
        self.generation = generation
        self.meta = meta
        self.faiss_index = faiss_index
        self.lexical: LexicalIndex | None = None  # the generation's BM25, when built with it
        # check_same_thread=False: the server searches from worker threads, read-only.
        self.db = sqlite3.connect(
            f"file:{generation / DOCS}?mode=ro", uri=True, check_same_thread=False
        )

    @classmethod
    def open(cls, index_dir: str | Path) -> VectorIndex:
        """Open the live generation and check it: vector count == row count == meta count."""
        index_dir = Path(index_dir)
        gen = current_generation(index_dir)
        meta_path = gen / META
        meta = read_json(meta_path, IndexFormatError)
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise IndexFormatError(
                f"{meta_path}: unsupported format_version {meta.get('format_version')!r} "
                f"(this diffembed reads {', '.join(map(str, READABLE_VERSIONS))})"
            )
        if not (gen / VECTORS).is_file() or not (gen / DOCS).is_file():
            raise IndexFormatError(f"{gen}: missing {VECTORS} or {DOCS}")
        verify_files(gen, meta)
        faiss_index = read_vectors(gen, meta)
        index = cls(index_dir, gen, meta, faiss_index)
        try:
            rows = index.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            docs = index.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        except sqlite3.DatabaseError as e:
            index.close()
            raise corrupt_from_error(
                gen / DOCS, "not a readable SQLite database of documents", e
            ) from None
        want = meta["count"]
        if not (faiss_index.ntotal == rows == want["vectors"] and docs == want["documents"]):
            index.close()
            raise IndexFormatError(
                f"{gen}: inconsistent: {faiss_index.ntotal} vectors, {rows} rows, {docs} "
                f"documents; meta.json says {want}"
            )
        if meta.get("bm25") is not None:
            from diffembed.index.lexical import LexicalIndex

            try:
                index.lexical = LexicalIndex.open(gen, meta, docs)
            except IndexFormatError:
                index.close()
                raise
        return index

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ntotal(self) -> int:
        """Number of vectors (rows)."""
        return int(self.faiss_index.ntotal)

    @property
    def n_documents(self) -> int:
        return int(self.meta["count"]["documents"])

    @property
    def dim(self) -> int:
        """Dimensions of the stored vectors (the model's, or fewer with ``--dimensions``)."""
        return int(vectors_meta(self.meta)["dim"])

    @property
    def model_dim(self) -> int:
        """Dimensions of the model's vectors; queries of this width are cut to ``dim``."""
        return int(self.meta["embedding"]["dim"])

    @property
    def quantize(self) -> str:
        """How the vectors are stored: ``"none"`` (float32), ``"int8"`` or ``"binary"``."""
        return str(vectors_meta(self.meta)["quantize"])

    def describe_vectors(self) -> str:
        """E.g. ``"binary (re-scored from int8), 64 of 128 dimensions"``."""
        kind = {"none": "float32", "int8": "int8", "binary": "binary (re-scored from int8)"}
        cut = f", {self.dim} of {self.model_dim} dimensions" if self.dim != self.model_dim else ""
        return f"{kind[self.quantize]}{cut}"

    @property
    def mode(self) -> dict[str, Any]:
        """``{"mode": "whole"|"chunked", ...}``: how long documents were embedded."""
        return dict(self.meta["documents"])

    def describe_mode(self) -> str:
        d = self.meta["documents"]
        bm25 = "; BM25 alongside" if self.lexical is not None else ""
        if d["mode"] == "chunked":
            late = ""
            if d.get("chunking") == "late":
                late = " late-chunked (pooled from the whole document in context),"
            return (
                f"chunked:{late} {d['chunk_tokens']}-token windows, overlap "
                f"{d['chunk_overlap']}; documents ranked by their best chunk{bm25}"
            )
        return (
            f"whole documents up to max_length={self.meta['embedding']['max_length']} tokens "
            f"({d['truncated']} of {self.n_documents} truncated){bm25}"
        )

    def ids(self) -> list[str]:
        """Document ids in insertion order."""
        return [r[0] for r in self.db.execute("SELECT doc_id FROM documents ORDER BY ord")]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT doc_id, title, text, meta, tokens, truncated, n_chunks FROM documents "
            "WHERE doc_id = ?",
            (doc_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "title", "text", "meta", "tokens", "truncated", "n_chunks")
        out = dict(zip(keys, row, strict=True))
        out["meta"] = json.loads(out["meta"])
        out["truncated"] = bool(out["truncated"])
        return out

    def vectors(self) -> np.ndarray:
        """All stored vectors, ``float32 [R, H]``, in row order."""
        if self.ntotal == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.faiss_index.reconstruct_n(0, self.ntotal)


# ------------------------------------------------------------------------------ the model
def check_model(meta: dict[str, Any], model_dir: str | Path) -> dict[str, str]:
    """Raise ``ModelMismatchError`` unless ``model_dir`` hashes to the index's model hash.

    The hash covers what determines the vectors (weights, config, tokenizer, pooling and
    prompts), so a model card edit or removed training records do not matter. Indexes from
    before recorded a hash of all files (``hash_method`` "sha256 of all files") and are checked
    that way."""
    from diffembed.model.model_dir import hash_model_dir

    legacy = str(meta["model"].get("hash_method", "")).startswith("sha256 of all files")
    got = hash_model_dir(model_dir, all_files=legacy)
    want = meta["model"]["hash"]
    if got["hash"] != want:
        raise ModelMismatchError(
            f"{model_dir}: model hash {got['hash'][:23]}… differs from the index's model "
            f"{meta['model']['path']} ({want[:23]}…); an index never mixes models"
        )
    return got


def load_embedder_for(
    meta: dict[str, Any], model_dir: str | Path | None = None, device: str = "cpu"
) -> Embedder:
    """Load the index's model (``model_dir`` or the recorded path), checking its hash, with the
    embedding settings the index was built with (max_length, precision)."""
    from diffembed.model.embedder import Embedder

    model_dir = Path(model_dir) if model_dir is not None else Path(meta["model"]["path"])
    if not model_dir.is_dir():
        raise InputNotFoundError(f"{model_dir}: model directory not found (pass --model)")
    check_model(meta, model_dir)
    emb = meta["embedding"]
    return Embedder.load(
        model_dir, device=device, precision=emb["precision"], max_length=emb["max_length"]
    )


# ------------------------------------------------------------------------------ writing
@dataclass
class EncodedDocuments:
    """Documents turned into rows, ready to append: one or more vectors per document."""

    docs: list[Document]
    vectors: np.ndarray  # float32 [R, H]
    rows: list[tuple[str, int, int, int, int]]  # (doc_id, chunk, char_start, char_end, tokens)
    doc_tokens: list[int]  # per doc: tokens of the whole text (prefix and specials included)
    doc_truncated: list[bool]
    doc_chunks: list[int]
    windowed: int = 0  # late chunking: documents encoded in several windows


def write_generation(
    index_dir: Path,
    base: Path | None,
    meta: dict[str, Any],
    encoded: EncodedDocuments,
    replace_ids: set[str],
    op: str,
) -> Path:
    """Write a new generation from ``base`` (or empty) plus ``encoded``, then make it live.

    The documents in ``replace_ids`` and their vectors are dropped first (upsert); ``op`` is
    recorded in the meta's history. Call it holding ``writer_lock``.
    """
    numbers = [n for p in index_dir.iterdir() if (n := generation_number(p.name)) is not None]
    name = f"gen-{max(numbers, default=0) + 1:06d}"
    with atomic_dir(index_dir / name) as tmp:
        counts = _write_tables(tmp, base, meta, encoded, replace_ids)
        if meta.get("bm25") is not None:  # re-index every document: idf changes with each
            from diffembed.index.lexical import write_bm25

            meta = dict(meta, bm25=write_bm25(tmp, tmp / DOCS))
        meta = _next_meta(meta, name, counts, len(encoded.docs), replace_ids, op)
        meta[FILES] = file_checksums(tmp)  # checked by every open (verify_files)
        write_json(tmp / META, meta)
        for p in (tmp / DOCS, tmp / VECTORS):
            fsync_path(p)
        fsync_path(tmp)
    fsync_path(index_dir)
    swap_current(index_dir, name)
    clean_leftovers(index_dir, keep=name)
    return index_dir / name


def _write_tables(
    tmp: Path,
    base: Path | None,
    meta: dict[str, Any],
    encoded: EncodedDocuments,
    replace_ids: set[str],
) -> tuple[int, int, int]:
    """Write ``docs.sqlite`` and ``vectors.faiss`` into ``tmp``; return the counts
    ``(documents, rows, truncated documents)``."""
    db = sqlite3.connect(tmp / DOCS)
    if base is not None:
        src = sqlite3.connect(f"file:{base / DOCS}?mode=ro", uri=True)
        src.backup(db)
        src.close()
        vindex = read_vectors(base, meta)
    else:
        db.executescript(_SCHEMA)
        vindex = _empty_faiss(meta)
    with db:
        if replace_ids:
            vindex = _drop_documents(db, vindex, meta, replace_ids)
        _append(db, vindex, encoded, vectors_meta(meta)["dim"])
        n_rows = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        n_docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        n_trunc = db.execute("SELECT COALESCE(SUM(truncated), 0) FROM documents").fetchone()[0]
    db.close()
    if n_rows != vindex.ntotal:  # a bug, never a user error
        raise AssertionError(f"{tmp}: {vindex.ntotal} vectors but {n_rows} rows")
    _write_vectors(vindex, tmp)
    return n_docs, n_rows, n_trunc


def _drop_documents(
    db: sqlite3.Connection, vindex: Any, meta: dict[str, Any], ids: set[str]
) -> Any:
    """Delete documents ``ids`` and their rows; return a rebuilt faiss index of the rows kept."""
    db.execute("CREATE TEMP TABLE gone(doc_id TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO gone VALUES (?)", [(i,) for i in ids])
    kept = db.execute(
        "SELECT row, doc_id, chunk, char_start, char_end, tokens FROM vectors "
        "WHERE doc_id NOT IN (SELECT doc_id FROM gone) ORDER BY row"
    ).fetchall()
    if isinstance(vindex, QuantizedVectors):  # keep the codes: decoding and re-encoding drifts
        vindex = vindex.select([r[0] for r in kept])
    else:
        old = vindex.reconstruct_n(0, vindex.ntotal) if vindex.ntotal else None
        vindex = _empty_faiss(meta)
        if kept:
            vindex.add(np.ascontiguousarray(old[[r[0] for r in kept]]))
    db.execute("DELETE FROM documents WHERE doc_id IN (SELECT doc_id FROM gone)")
    db.execute("DELETE FROM vectors")
    db.executemany(
        "INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
        [(i, *r[1:]) for i, r in enumerate(kept)],
    )
    return vindex


def _append(db: sqlite3.Connection, vindex: Any, encoded: EncodedDocuments, dim: int) -> None:
    """Insert ``encoded``'s documents and rows after the existing ones, and add its vectors
    (their first ``dim`` dimensions, renormalised)."""
    first_row = vindex.ntotal
    next_ord = db.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM documents").fetchone()[0]
    per_doc = zip(
        encoded.docs, encoded.doc_tokens, encoded.doc_truncated, encoded.doc_chunks, strict=True
    )
    db.executemany(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                d.id,
                d.title,
                d.text,
                json.dumps(d.meta, ensure_ascii=False, sort_keys=True),
                n,
                int(t),
                c,
                next_ord + i,
            )
            for i, (d, n, t, c) in enumerate(per_doc)
        ],
    )
    db.executemany(
        "INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
        [(first_row + i, *r) for i, r in enumerate(encoded.rows)],
    )
    if len(encoded.rows):
        vindex.add(truncate(encoded.vectors, dim))


def _next_meta(
    meta: dict[str, Any],
    name: str,
    counts: tuple[int, int, int],
    n_written: int,
    replace_ids: set[str],
    op: str,
) -> dict[str, Any]:
    """``meta`` for generation ``name``: its number, counts, time and one more history entry."""
    n_docs, n_rows, n_trunc = counts
    meta = dict(meta)
    meta["generation"] = generation_number(name)
    meta["count"] = {"documents": n_docs, "vectors": n_rows}
    meta["documents"] = dict(meta["documents"], truncated=int(n_trunc))
    meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta["history"] = [
        *meta.get("history", [])[-99:],
        {
            "op": op,
            "documents": n_written,
            "replaced": len(replace_ids),
            "time": meta["updated"],
        },
    ]
    return meta
