"""A persisted vector index over a document collection: faiss vectors + SQLite documents.

Layout of an index directory::

    INDEX_DIR/
      CURRENT          the name of the live generation ("gen-000003\\n"), replaced atomically
      .lock            flock'ed by a writer (build/add), so two writers never interleave
      gen-000003/
        meta.json      model dir hash + path, embedding settings, chunking mode, faiss type, counts
        vectors.faiss  faiss index (IndexFlatIP, or IndexHNSWFlat with inner product); row r is
                       the r-th vector
        docs.sqlite    documents(doc_id, title, text, meta, tokens, truncated, n_chunks) and
                       vectors(row, doc_id, chunk, char_start, char_end, tokens)

Every write (``build_index``, ``add_documents``) copies the live generation into a fresh hidden
temporary directory, changes the copy, fsyncs it, renames it to ``gen-N+1`` and only then
replaces ``CURRENT``. A writer killed at any point (``kill -9``) therefore leaves the previous
generation live and consistent (vector count == row count); leftovers are removed by the next
writer. Readers open whatever ``CURRENT`` names and check the counts.

Long documents are either embedded whole (truncated at the model's ``max_length``, with the
number of truncated documents recorded) or split into overlapping token windows (``chunk_tokens``
/ ``chunk_overlap``); search ranks documents by their best chunk and reports which mode is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.formats.corpus import Document
from diffembed.io import atomic_write, write_json

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "CURRENT"
META = "meta.json"
VECTORS = "vectors.faiss"
DOCS = "docs.sqlite"
FAISS_TYPES = ("flat", "hnsw")
_GEN_RE = re.compile(r"^gen-(\d{6,})$")
SNIPPET_CHARS = 240


class IndexFormatError(ValueError):
    """An index directory is missing, malformed or inconsistent; the message names the path."""


class ModelMismatchError(ValueError):
    """The model given is not the one the index was built with."""


class DuplicateIdError(ValueError):
    """A document id is already in the index (or twice in the input) and upsert was not asked."""


class DocumentsError(ValueError):
    """A documents file or folder is malformed; the message names the file and line."""


# ------------------------------------------------------------------------------ documents
def read_documents(path: str | Path) -> list[Document]:
    """Read documents from a JSONL file or a folder of text files.

    JSONL: one object per line with ``_id`` or ``id`` (string or integer), ``text`` (string),
    optional ``title``; other fields are kept as metadata. Folder: every non-hidden regular file
    below it (sorted), read as UTF-8; the id is the path relative to the folder. Ids must be
    unique and texts non-empty; errors name the file and the 1-based line.
    """
    path = Path(path)
    if path.is_dir():
        return _read_text_folder(path)
    if not path.is_file():
        raise DocumentsError(f"{path}: no such file or folder")
    docs: list[Document] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DocumentsError(f"{where}: not valid UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DocumentsError(f"{where}: invalid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise DocumentsError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            key = "_id" if "_id" in rec else "id"
            if key not in rec:
                raise DocumentsError(f"{where}: missing field '_id' (or 'id')")
            id_ = rec[key]
            if isinstance(id_, bool) or not isinstance(id_, (str, int)):
                raise DocumentsError(
                    f"{where}: field {key!r} must be a string or integer, got {type(id_).__name__}"
                )
            id_ = str(id_)
            if not id_.strip():
                raise DocumentsError(f"{where}: field {key!r} is empty")
            if "text" not in rec:
                raise DocumentsError(f"{where}: missing field 'text'")
            text, title = rec["text"], rec.get("title", "")
            for name, value in (("text", text), ("title", title)):
                if not isinstance(value, str):
                    raise DocumentsError(
                        f"{where}: field {name!r} is {type(value).__name__}, not a string"
                    )
            if not (title + text).strip():
                raise DocumentsError(f"{where}: document {id_!r} has no text")
            if id_ in seen:
                raise DocumentsError(f"{where}: duplicate id {id_!r} (first on line {seen[id_]})")
            seen[id_] = lineno
            meta = {k: v for k, v in rec.items() if k not in (key, "title", "text")}
            docs.append(Document(id=id_, text=text, title=title, meta=meta, source=where))
    if not docs:
        raise DocumentsError(f"{path}: no documents")
    return docs


def _read_text_folder(root: Path) -> list[Document]:
    docs: list[Document] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DocumentsError(f"{p}: not valid UTF-8 ({e.reason})") from None
        if not text.strip():
            raise DocumentsError(f"{p}: empty document")
        docs.append(Document(id=rel, text=text, source=str(p)))
    if not docs:
        raise DocumentsError(f"{root}: no text files")
    return docs


# ------------------------------------------------------------------------------ chunking
def chunk_spans(
    offsets: Sequence[tuple[int, int]], chunk_tokens: int, overlap: int
) -> list[tuple[int, int, int]]:
    """Token windows over a text: ``[(char_start, char_end, n_tokens)]``.

    Args:
        offsets: character offsets ``(start, end)`` of each token of the text.
        chunk_tokens: tokens per window (>= 1); ``overlap``: tokens shared by neighbours
            (0 <= overlap < chunk_tokens). The last window ends at the last token.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(f"chunk_overlap must be in [0, chunk_tokens), got {overlap}")
    n = len(offsets)
    spans: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        end = min(start + chunk_tokens, n)
        spans.append((offsets[start][0], offsets[end - 1][1], end - start))
        if end == n:
            break
        start = end - overlap
    return spans


# ------------------------------------------------------------------------------ generations
def _gen_number(name: str) -> int | None:
    m = _GEN_RE.match(name)
    return int(m.group(1)) if m else None


def current_generation(index_dir: str | Path) -> Path:
    """The live generation folder named by ``INDEX_DIR/CURRENT``."""
    index_dir = Path(index_dir)
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        raise IndexFormatError(f"{index_dir}: not an index (no {CURRENT} file)")
    name = pointer.read_text(encoding="utf-8").strip()
    if _gen_number(name) is None:
        raise IndexFormatError(f"{pointer}: malformed generation name {name!r}")
    gen = index_dir / name
    if not gen.is_dir():
        raise IndexFormatError(f"{pointer}: names {name}, which does not exist")
    return gen


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _writer_lock(index_dir: Path) -> Iterator[None]:
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexFormatError(
                f"{index_dir}: another process is writing this index (.lock is held)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _clean_leftovers(index_dir: Path, keep: str | None) -> None:
    """Remove temporary generation folders and generations other than ``keep``."""
    for p in index_dir.iterdir():
        stale_tmp = p.name.startswith(".gen-") and p.name.endswith(".tmp")
        old_gen = _gen_number(p.name) is not None and p.name != keep
        if (stale_tmp or old_gen) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _swap_current(index_dir: Path, name: str) -> None:
    """Point ``CURRENT`` at generation ``name`` (atomic rename of a fsynced file)."""
    with atomic_write(index_dir / CURRENT) as f:
        f.write(name + "\n")
    _fsync_path(index_dir)


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


@dataclass
class _Encoded:
    """Documents turned into rows: one or more vectors per document."""

    docs: list[Document]
    vectors: np.ndarray  # float32 [R, H]
    rows: list[tuple[str, int, int, int, int]]  # (doc_id, chunk, char_start, char_end, tokens)
    doc_tokens: list[int]  # per doc: tokens of the whole text (prefix and specials included)
    doc_truncated: list[bool]
    doc_chunks: list[int]


def _encode_documents(
    embedder: Embedder,
    docs: list[Document],
    chunk_tokens: int | None,
    chunk_overlap: int,
    batch_tokens: int | None,
    show_progress: bool,
) -> _Encoded:

    prefix = embedder.instruction_prefix(embedder.prompts.get("document"))
    texts = [d.full_text for d in docs]
    tok = embedder.tokenizer
    lengths = [
        len(x)
        for x in tok([prefix + t for t in texts], add_special_tokens=True, verbose=False)[
            "input_ids"
        ]
    ]
    rows: list[tuple[str, int, int, int, int]] = []
    chunk_texts: list[str] = []
    doc_chunks: list[int] = []
    if chunk_tokens is None:
        for d, t, n in zip(docs, texts, lengths, strict=True):
            rows.append((d.id, 0, 0, len(t), min(n, embedder.max_length)))
            doc_chunks.append(1)
        chunk_texts = texts
    else:
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
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
    vectors, stats = embedder.encode_with_stats(
        chunk_texts,
        **embedder.role_prompt("document"),
        max_tokens_per_batch=batch_tokens,
        show_progress=show_progress,
        truncate=True,
        warn=False,
    )
    truncated_chunks = stats.truncated
    if chunk_tokens is not None and truncated_chunks:
        logger.warning(
            "%d chunk(s) exceeded max_length=%d with prefix and special tokens and were "
            "truncated; use a smaller --chunk-tokens",
            truncated_chunks,
            embedder.max_length,
        )
    truncated = (
        [n > embedder.max_length for n in lengths] if chunk_tokens is None else [False] * len(docs)
    )
    return _Encoded(
        docs, np.ascontiguousarray(vectors, np.float32), rows, lengths, truncated, doc_chunks
    )


# ------------------------------------------------------------------------------ the index
@dataclass(frozen=True)
class Hit:
    """One search result: a document, its score (cosine / inner product) and its best chunk."""

    rank: int
    id: str
    score: float
    title: str
    snippet: str
    chunk: int
    char_start: int
    char_end: int
    truncated: bool
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class VectorIndex:
    """A read-only view of one generation of an index (what ``CURRENT`` named when opened).

    Use ``VectorIndex.open(dir)``; ``search(vectors, k)`` ranks documents.
    """

    def __init__(self, path: Path, generation: Path, meta: dict[str, Any], faiss_index: Any):
        self.path = path
        self.generation = generation
        self.meta = meta
        self.faiss_index = faiss_index
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
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{meta_path}: unreadable ({e})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{meta_path}: unsupported format_version {meta.get('format_version')!r}"
            )
        if not (gen / VECTORS).is_file() or not (gen / DOCS).is_file():
            raise IndexFormatError(f"{gen}: missing {VECTORS} or {DOCS}")
        faiss_index = _faiss().read_index(str(gen / VECTORS))
        index = cls(index_dir, gen, meta, faiss_index)
        rows = index.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        docs = index.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        want = meta["count"]
        if not (faiss_index.ntotal == rows == want["vectors"] and docs == want["documents"]):
            index.close()
            raise IndexFormatError(
                f"{gen}: inconsistent: {faiss_index.ntotal} vectors, {rows} rows, {docs} "
                f"documents; meta.json says {want}"
            )
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
        return int(self.meta["embedding"]["dim"])

    @property
    def mode(self) -> dict[str, Any]:
        """``{"mode": "whole"|"chunked", ...}``: how long documents were embedded."""
        return dict(self.meta["documents"])

    def describe_mode(self) -> str:
        d = self.meta["documents"]
        if d["mode"] == "chunked":
            return (
                f"chunked: {d['chunk_tokens']}-token windows, overlap {d['chunk_overlap']}; "
                "documents ranked by their best chunk"
            )
        return (
            f"whole documents up to max_length={self.meta['embedding']['max_length']} tokens "
            f"({d['truncated']} of {self.n_documents} truncated)"
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

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Rank documents for each query vector.

        Args:
            queries: ``float32 [Q, H]`` (L2-normalised like the documents).
            k: documents per query (fewer when the index holds fewer).

        Returns:
            ``Q`` lists of ``Hit``, best first; a chunked document appears once, scored by its
            best chunk.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}, index {self.dim}")
        if self.ntotal == 0:
            return [[] for _ in range(queries.shape[0])]
        chunked = self.meta["documents"]["mode"] == "chunked"
        fetch = min(self.ntotal, k * 4 if chunked else k)
        while True:
            if self.meta["faiss"]["type"] == "hnsw":
                self.faiss_index.hnsw.efSearch = max(int(self.meta["faiss"]["ef_search"]), fetch)
            scores, rows = self.faiss_index.search(queries, fetch)
            found = [
                [(r, s) for s, r in zip(srow.tolist(), rrow.tolist(), strict=True) if r >= 0]
                for srow, rrow in zip(scores, rows, strict=True)
            ]
            results = [_resolve_hits(self, f, k) for f in found]
            if fetch >= self.ntotal or all(len(x) >= min(k, self.n_documents) for x in results):
                return results
            fetch = min(self.ntotal, fetch * 4)


def _select_in(db: sqlite3.Connection, sql: str, values: Sequence[Any]) -> list[tuple]:
    """Run ``sql`` (with one ``{marks}`` placeholder for an IN list) over ``values`` in slices."""
    out: list[tuple] = []
    for i in range(0, len(values), 500):
        part = list(values[i : i + 500])
        out.extend(db.execute(sql.format(marks=",".join("?" * len(part))), part))
    return out


def _resolve_hits(index: VectorIndex, found: list[tuple[int, float]], k: int) -> list[Hit]:
    """Map ``(row, score)`` pairs (best first) to the best ``k`` distinct documents."""
    if not found:
        return []
    info = {
        r[0]: r[1:]
        for r in _select_in(
            index.db,
            "SELECT row, doc_id, chunk, char_start, char_end FROM vectors WHERE row IN ({marks})",
            [r for r, _ in found],
        )
    }
    chosen: list[tuple[float, tuple]] = []
    seen: set[str] = set()
    for row, score in found:
        doc_id = info[row][0]
        if doc_id in seen:
            continue
        seen.add(doc_id)
        chosen.append((score, info[row]))
        if len(chosen) == k:
            break
    docs = {
        r[0]: r[1:]
        for r in _select_in(
            index.db,
            "SELECT doc_id, title, text, meta, truncated FROM documents WHERE doc_id IN ({marks})",
            [c[1][0] for c in chosen],
        )
    }
    hits = []
    for rank, (score, (doc_id, chunk, start, end)) in enumerate(chosen, start=1):
        title, text, meta, truncated = docs[doc_id]
        full = f"{title} {text}".strip() if title else text
        hits.append(
            Hit(
                rank=rank,
                id=doc_id,
                score=float(score),
                title=title,
                snippet=_snippet(full[start:end]),
                chunk=int(chunk),
                char_start=int(start),
                char_end=int(end),
                truncated=bool(truncated),
                meta=json.loads(meta),
            )
        )
    return hits


# ------------------------------------------------------------------------------ writing
def check_model(meta: dict[str, Any], model_dir: str | Path) -> dict[str, str]:
    """Raise ``ModelMismatchError`` unless ``model_dir`` hashes to the index's model hash."""
    from diffembed.model.model_dir import hash_model_dir

    got = hash_model_dir(model_dir)
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
        raise FileNotFoundError(f"{model_dir}: model directory not found (pass --model)")
    check_model(meta, model_dir)
    emb = meta["embedding"]
    return Embedder.load(
        model_dir, device=device, precision=emb["precision"], max_length=emb["max_length"]
    )


def _write_generation(
    index_dir: Path,
    base: Path | None,
    meta: dict[str, Any],
    encoded: _Encoded,
    replace_ids: set[str],
    op: str,
) -> Path:
    """Write a new generation from ``base`` (or empty) plus ``encoded``, then make it live."""
    import tempfile

    faiss = _faiss()
    numbers = [n for p in index_dir.iterdir() if (n := _gen_number(p.name)) is not None]
    name = f"gen-{max(numbers, default=0) + 1:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", suffix=".tmp", dir=index_dir))
    try:
        db = sqlite3.connect(tmp / DOCS)
        if base is not None:
            src = sqlite3.connect(f"file:{base / DOCS}?mode=ro", uri=True)
            src.backup(db)
            src.close()
            vindex = faiss.read_index(str(base / VECTORS))
        else:
            db.executescript(_SCHEMA)
            f = meta["faiss"]
            vindex = _new_faiss(
                meta["embedding"]["dim"], f["type"], f["hnsw_m"], f["ef_construction"]
            )
        with db:
            if replace_ids:
                db.execute("CREATE TEMP TABLE gone(doc_id TEXT PRIMARY KEY)")
                db.executemany("INSERT INTO gone VALUES (?)", [(i,) for i in replace_ids])
                kept = db.execute(
                    "SELECT row, doc_id, chunk, char_start, char_end, tokens FROM vectors "
                    "WHERE doc_id NOT IN (SELECT doc_id FROM gone) ORDER BY row"
                ).fetchall()
                old = vindex.reconstruct_n(0, vindex.ntotal) if vindex.ntotal else None
                f = meta["faiss"]
                vindex = _new_faiss(
                    meta["embedding"]["dim"], f["type"], f["hnsw_m"], f["ef_construction"]
                )
                if kept:
                    vindex.add(np.ascontiguousarray(old[[r[0] for r in kept]]))
                db.execute("DELETE FROM documents WHERE doc_id IN (SELECT doc_id FROM gone)")
                db.execute("DELETE FROM vectors")
                db.executemany(
                    "INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
                    [(i, *r[1:]) for i, r in enumerate(kept)],
                )
            first_row = vindex.ntotal
            next_ord = db.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM documents").fetchone()[0]
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
                    for i, (d, n, t, c) in enumerate(
                        zip(
                            encoded.docs,
                            encoded.doc_tokens,
                            encoded.doc_truncated,
                            encoded.doc_chunks,
                            strict=True,
                        )
                    )
                ],
            )
            db.executemany(
                "INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
                [(first_row + i, *r) for i, r in enumerate(encoded.rows)],
            )
            if len(encoded.rows):
                vindex.add(encoded.vectors)
            n_rows = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            n_docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            n_trunc = db.execute("SELECT COALESCE(SUM(truncated), 0) FROM documents").fetchone()[0]
        db.close()
        if n_rows != vindex.ntotal:  # a bug, never a user error
            raise AssertionError(f"{tmp}: {vindex.ntotal} vectors but {n_rows} rows")
        faiss.write_index(vindex, str(tmp / VECTORS))
        meta = dict(meta)
        meta["generation"] = _gen_number(name)
        meta["count"] = {"documents": n_docs, "vectors": n_rows}
        meta["documents"] = dict(meta["documents"], truncated=int(n_trunc))
        meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["history"] = [
            *meta.get("history", [])[-99:],
            {
                "op": op,
                "documents": len(encoded.docs),
                "replaced": len(replace_ids),
                "time": meta["updated"],
            },
        ]
        write_json(tmp / META, meta)
        for p in (tmp / DOCS, tmp / VECTORS):
            _fsync_path(p)
        _fsync_path(tmp)
        os.replace(tmp, index_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(index_dir)
    _swap_current(index_dir, name)
    _clean_leftovers(index_dir, keep=name)
    return index_dir / name


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
) -> VectorIndex:
    """Embed ``docs`` with the model in ``model_dir`` and write a new index at ``out``.

    Args:
        docs: documents with unique ids (``read_documents``).
        model_dir: the embedding model directory; its hash is recorded.
        embedder: the already loaded model of ``model_dir`` (loaded when None); its
            ``max_length`` and ``precision`` are recorded and reused by add and search.
        chunk_tokens: split documents into windows of this many tokens (None: embed whole,
            truncated at ``max_length``); ``chunk_overlap`` tokens shared by neighbours.
        faiss_type: ``"flat"`` (exact inner product) or ``"hnsw"`` (approximate).
        overwrite: replace an existing index at ``out`` (atomically: the old one stays live
            until the new one is complete).

    Returns:
        the opened index.
    """
    from diffembed.model.embedder import Embedder
    from diffembed.model.model_dir import hash_model_dir

    out = Path(out)
    model_dir = Path(model_dir)
    if faiss_type not in FAISS_TYPES:
        raise ValueError(f"faiss type must be one of {FAISS_TYPES}, got {faiss_type!r}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if (out / CURRENT).exists():
        if not overwrite:
            raise FileExistsError(
                f"{out}: an index exists; use `diffembed index add` or --overwrite"
            )
    elif out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        raise FileExistsError(f"{out}: exists, is not empty and is not an index")
    _check_unique_ids(docs)
    if embedder is None:
        embedder = Embedder.load(model_dir)
    if chunk_tokens is not None and chunk_tokens > embedder.max_length:
        raise ValueError(
            f"chunk_tokens={chunk_tokens} exceeds the model's max_length={embedder.max_length}"
        )
    if chunk_tokens is None and chunk_overlap:
        raise ValueError("chunk_overlap needs chunk_tokens")
    model = {"path": str(model_dir.resolve()), **hash_model_dir(model_dir)}
    settings = embedder.settings()
    settings.pop("format_version", None)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": model,
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
        "faiss": {
            "type": faiss_type,
            "metric": "inner_product",
            "hnsw_m": hnsw_m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
        },
        "created": now,
    }
    with _writer_lock(out):
        encoded = _encode_documents(
            embedder, list(docs), chunk_tokens, chunk_overlap, batch_tokens, show_progress
        )
        _write_generation(out, None, meta, encoded, set(), "build")
    return VectorIndex.open(out)


def _check_unique_ids(docs: Sequence[Document]) -> None:
    seen: dict[str, Document] = {}
    for d in docs:
        if d.id in seen:
            raise DuplicateIdError(
                f"{d.source or d.id}: duplicate id {d.id!r} (first at {seen[d.id].source})"
            )
        seen[d.id] = d


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
    with _writer_lock(index_dir):
        with VectorIndex.open(index_dir) as index:
            meta, base = index.meta, index.generation
            existing = {
                r[0]
                for r in _select_in(
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
        )
        _write_generation(index_dir, base, meta, encoded, existing, "upsert" if upsert else "add")
    return VectorIndex.open(index_dir)


# ------------------------------------------------------------------------------ searching
class Searcher:
    """An index and its model: text queries in, ranked documents out."""

    def __init__(self, index: VectorIndex, embedder: Embedder) -> None:
        if embedder.dim != index.dim:
            raise ModelMismatchError(f"model dimension {embedder.dim} != index {index.dim}")
        self.index = index
        self.embedder = embedder

    @classmethod
    def open(
        cls, index_dir: str | Path, model_dir: str | Path | None = None, device: str = "cpu"
    ) -> Searcher:
        index = VectorIndex.open(index_dir)
        return cls(index, load_embedder_for(index.meta, model_dir, device))

    def encode_query(
        self, query: str, prompt: str | None = None, prompt_name: str | None = None
    ) -> np.ndarray:
        """``float32 [H]``: the query with ``prompt``/``prompt_name``, else the query prompt."""
        if prompt is None and prompt_name is None:
            return self.embedder.encode_queries([query])[0]
        return self.embedder.encode([query], prompt=prompt, prompt_name=prompt_name)[0]

    def search(
        self, query: str, k: int = 10, prompt: str | None = None, prompt_name: str | None = None
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first."""
        return self.index.search(self.encode_query(query, prompt, prompt_name)[None], k)[0]


# ------------------------------------------------------------------------------ CLI
def add_index_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build or extend a vector index (faiss + SQLite) over documents",
        description="A crash-safe vector index over documents: faiss vectors, SQLite documents, "
        "the model's hash and the embedding settings. Writes go to a new generation that "
        "replaces the old one atomically.",
    )
    verbs = p.add_subparsers(dest="index_verb", metavar="VERB", required=True)
    b = verbs.add_parser(
        "build",
        help="embed documents into a new index",
        description="Embed documents (JSONL with _id/id, text, optional title; or a folder of "
        "text files) and write an index. Long documents are embedded whole up to the model's "
        "max_length, or chunked with --chunk-tokens.",
    )
    b.add_argument("--model", required=True, type=Path, help="embedding model directory")
    b.add_argument("--docs", required=True, type=Path, help="FILE.jsonl or a folder of text files")
    b.add_argument("--out", required=True, type=Path, help="index directory to create")
    b.add_argument("--chunk-tokens", type=int, help="split documents into N-token windows")
    b.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by neighbours")
    b.add_argument("--faiss", choices=FAISS_TYPES, default="flat", help="flat (exact) or hnsw")
    b.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node (default 32)")
    b.add_argument("--ef-search", type=int, default=128, help="HNSW search depth (default 128)")
    b.add_argument("--max-length", type=int, help="max tokens per text (default: the model's)")
    b.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    b.add_argument("--batch-tokens", type=int, help="token budget per batch (rows x longest)")
    b.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index")
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    b.set_defaults(func=run_index_build)
    a = verbs.add_parser(
        "add",
        help="append documents to an index",
        description="Embed documents with the index's own model and settings and append them. "
        "An id already in the index is an error unless --upsert.",
    )
    a.add_argument("index", type=Path, help="index directory")
    a.add_argument("--docs", required=True, type=Path, help="FILE.jsonl or a folder of text files")
    a.add_argument("--model", type=Path, help="model directory (default: the recorded path)")
    a.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    a.add_argument("--batch-tokens", type=int, help="token budget per batch (rows x longest)")
    a.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    a.set_defaults(func=run_index_add)
    i = verbs.add_parser("info", help="print an index's meta.json")
    i.add_argument("index", type=Path, help="index directory")
    i.set_defaults(func=run_index_info)


def run_index_build(args: argparse.Namespace) -> int:
    from diffembed.model.embedder import Embedder

    docs = read_documents(args.docs)
    overrides: dict[str, Any] = {"precision": args.dtype}
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    embedder = Embedder.load(args.model, device=args.device, **overrides)
    start = time.perf_counter()
    with build_index(
        docs,
        args.out,
        args.model,
        embedder=embedder,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        faiss_type=args.faiss,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        batch_tokens=args.batch_tokens,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
    ) as index:
        logger.info(
            "built %s: %d documents, %d vectors (%s) in %.1f s",
            args.out,
            index.n_documents,
            index.ntotal,
            index.describe_mode(),
            time.perf_counter() - start,
        )
    return 0


def run_index_add(args: argparse.Namespace) -> int:
    docs = read_documents(args.docs)
    with VectorIndex.open(args.index) as index:
        meta = index.meta
    embedder = load_embedder_for(meta, args.model, args.device)
    with add_documents(
        args.index,
        docs,
        model_dir=args.model,
        embedder=embedder,
        upsert=args.upsert,
        batch_tokens=args.batch_tokens,
        show_progress=not args.no_progress,
    ) as index:
        logger.info(
            "%s: now %d documents, %d vectors (generation %d)",
            args.index,
            index.n_documents,
            index.ntotal,
            index.meta["generation"],
        )
    return 0


def run_index_info(args: argparse.Namespace) -> int:
    with VectorIndex.open(args.index) as index:
        print(json.dumps(index.meta, indent=2, ensure_ascii=False))
    return 0


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an index with a text query",
        description="Embed the query with the index's model (its query prompt unless --prompt "
        "or --prompt-name) and print the best documents with scores and snippets.",
    )
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("query", help="query text")
    p.add_argument("-k", type=int, default=10, help="documents to return (default 10)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="instruction for the query")
    group.add_argument("--prompt-name", help="a prompt saved with the model")
    p.add_argument("--model", type=Path, help="model directory (default: the recorded path)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise ValueError("the query is empty")
    searcher = Searcher.open(args.index, args.model, args.device)
    hits = searcher.search(args.query, args.k, args.prompt, args.prompt_name)
    index = searcher.index
    if args.json:
        out = {
            "index": str(args.index),
            "query": args.query,
            "mode": index.mode,
            "documents": index.n_documents,
            "vectors": index.ntotal,
            "hits": [h.to_dict() for h in hits],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(
            f"{args.index}: {index.n_documents} documents, {index.ntotal} vectors; "
            f"{index.describe_mode()}"
        )
        chunked = index.mode["mode"] == "chunked"
        for h in hits:
            where = f" [chunk {h.chunk}]" if chunked else (" [truncated]" if h.truncated else "")
            print(f"{h.rank:3d}  {h.score:.4f}  {h.id}{where}  {h.snippet}")
    sys.stdout.flush()
    index.close()
    return 0
