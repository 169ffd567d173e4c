"""The BM25 side of an index, kept in the same generation as the vectors.

A generation of an index built with BM25 (the default) holds ``bm25/``: the bm25s files of the
one BM25 of diffembed (:mod:`diffembed.eval.bm25`: Lucene, k1 1.5, b 0.75, English stop words,
Snowball stemming) over every document's ``full_text`` (title and text, never truncated), and
``ids.json``, the document id of each BM25 row. Every write (build, add, upsert) re-indexes all
documents of the new generation before it is made live (BM25's idf and average length change
with every document), so BM25 and the vectors always describe the same documents: a writer
killed at any point leaves the previous generation, with both, live.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.eval.bm25 import Bm25, Bm25Index
from diffembed.formats.corpus import Document
from diffembed.index.generations import IndexFormatError, corrupt_file
from diffembed.io import write_json

BM25_DIR = "bm25"
IDS = "ids.json"
MISSING = "the index's BM25 needs bm25s: pip install bm25s PyStemmer (or build with --no-bm25)"
# Settings that change how queries are tokenized or scored; a mismatch would score wrongly.
_MATCHED = ("method", "k1", "b", "stopwords", "stemmer")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bm25(generation: Path, docs_file: Path) -> dict[str, Any]:
    """Index every document of ``docs_file`` (SQLite, insertion order) into
    ``generation/bm25/`` and fsync it; returns the meta entry ``{settings..., documents}``."""
    db = sqlite3.connect(f"file:{docs_file}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT doc_id, title, text FROM documents ORDER BY ord").fetchall()
    finally:
        db.close()
    bm25 = Bm25(missing=MISSING)
    folder = generation / BM25_DIR
    folder.mkdir()
    if rows:
        texts = [Document(id=i, text=text, title=title).full_text for i, title, text in rows]
        Bm25Index(bm25, texts).save(folder)
    write_json(folder / IDS, [r[0] for r in rows])
    for p in folder.iterdir():
        _fsync(p)
    _fsync(folder)
    return {**bm25.settings(version=True), "documents": len(rows)}


class LexicalIndex:
    """The BM25 of one generation: ``top(query, depth)`` -> ``[(doc_id, score)]``.

    ``open`` checks the document count against the generation's; the bm25s files are loaded
    on the first search."""

    def __init__(self, folder: Path, recorded: dict[str, Any], ids: list[str]) -> None:
        self.folder = folder
        self.recorded = recorded
        self.ids = ids
        self._index: Bm25Index | None = None
        self._tiebreak: Any = None

    @classmethod
    def open(cls, generation: Path, meta: dict[str, Any], n_documents: int) -> LexicalIndex:
        """The BM25 of ``generation`` (whose meta has a ``bm25`` entry) over ``n_documents``;
        raises ``IndexFormatError`` naming the file when it is missing or does not match."""
        folder = generation / BM25_DIR
        try:
            ids = json.loads((folder / IDS).read_text(encoding="utf-8"))  # a JSON list
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{folder / IDS}: unreadable ({e})") from None
        want = meta["bm25"]["documents"]
        if not (isinstance(ids, list) and len(ids) == want == n_documents):
            got = len(ids) if isinstance(ids, list) else "?"
            raise IndexFormatError(
                f"{folder}: inconsistent: BM25 of {got} documents, meta.json says {want}, "
                f"the index holds {n_documents}"
            )
        return cls(folder, meta["bm25"], ids)

    def _loaded(self) -> Bm25Index:
        if self._index is None:
            bm25 = Bm25(missing=MISSING)
            now = bm25.settings()
            changed = [k for k in _MATCHED if now[k] != self.recorded.get(k)]
            if changed:
                raise IndexFormatError(
                    f"{self.folder}: built with BM25 {changed[0]}={self.recorded.get(changed[0])!r}"
                    f" but this installation has {now[changed[0]]!r} (PyStemmer missing?); "
                    "install the same packages or rebuild the index"
                )
            try:
                self._index = Bm25Index.load(bm25, self.folder, len(self.ids))
            except Exception as e:  # numpy, json and bm25s fail on damaged files variously
                raise _unreadable(self.folder, e) from None
        return self._index

    def top(self, query: str, depth: int) -> list[tuple[str, float]]:
        """The best ``depth`` documents sharing a term with ``query``: ``[(doc_id, score)]``,
        best first, ties by document id descending (trec_eval's order, as in evaluation)."""
        from diffembed.eval.fusion import top_candidates
        from diffembed.eval.ranking import tiebreak_keys

        if not self.ids:
            return []
        scores = self._loaded().scores(query)
        if not np.isfinite(scores).all():
            raise corrupt_file(self.folder, "BM25 scores that are not finite (NaN or infinite)")
        if self._tiebreak is None:
            self._tiebreak = tiebreak_keys(self.ids)
        found = top_candidates(scores, depth, self._tiebreak, positive=True)
        return [(self.ids[i], s) for i, s in found]

    def no_match(self, query: str) -> str | None:
        """Why ``top(query)`` finds no document, or None when it may find some: the query is
        only stop words (or holds no word at all), or none of its terms (after stop words and
        stemming) occurs in any indexed document."""
        if not self.ids:
            return None
        index = self._loaded()
        terms = index.bm25.tokenize([query])[0]
        if not terms:
            return "the query has no word BM25 keeps (only stop words or punctuation)"
        if index.token_ids(terms):
            return None
        shown = ", ".join(repr(t) for t in dict.fromkeys(terms))
        return f"no document holds any of the query's terms ({shown}, after stemming)"


def _unreadable(folder: Path, error: Exception) -> IndexFormatError:
    """The error for a BM25 folder that does not load: names the first file that does not read
    as a plain ``.npy`` array (never unpickled) or as JSON, else the folder; library messages
    that advise an unsafe load are not passed on."""
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".npy":
                np.load(path, mmap_mode="r", allow_pickle=False)
            elif path.suffix == ".json":
                json.loads(path.read_bytes())
        except Exception:
            return corrupt_file(path, "not a readable BM25 file")
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if "pickle" in reason:
        reason = "not a plain array"
    return corrupt_file(folder, "the BM25 index does not load", reason)
