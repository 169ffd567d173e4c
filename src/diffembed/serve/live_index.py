"""The index a server searches, following ``INDEX_DIR/CURRENT``.

A writer (``index add``, ``index build --overwrite``) makes a new generation live by replacing
``CURRENT`` and then deletes the old generation. Each request first compares ``CURRENT``'s
inode, mtime and size with what was loaded (one ``stat``); when they changed, that request
opens the new generation and swaps it in. Searches in flight finish on the old one (it is
closed only after them), and requests arriving meanwhile keep using it, so none is dropped or
stalled by a reload. A generation written with another model or other embedding settings is
not searched with this server's model: searches get ``IndexChanged`` until the index is
rebuilt with the served model.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any

import numpy as np

from diffembed.eval.fusion import DEFAULT_ALPHA
from diffembed.index.generations import CURRENT, IndexFormatError
from diffembed.index.search import Hit
from diffembed.index.store import VectorIndex

logger = logging.getLogger(__name__)

# Embedding settings that must match the served model's for the index's vectors to compare.
_SETTINGS = ("dim", "max_length", "precision", "pooling", "normalize", "prompt_template")


class IndexChanged(RuntimeError):
    """The index now holds vectors of another model or settings than the one served."""


class LiveIndex:
    """A ``VectorIndex`` that reloads when its ``CURRENT`` generation changes."""

    def __init__(self, index: VectorIndex) -> None:
        self._index = index
        self._model = index.meta["model"]["hash"]
        self._settings = {k: index.meta["embedding"].get(k) for k in _SETTINGS}
        self._pointer = index.path / CURRENT
        self._stamp = self._read_stamp()
        self._search_lock = threading.Lock()  # faiss search + SQLite reads; closing
        self._reload_lock = threading.Lock()
        self.error: str | None = None

    @property
    def path(self) -> Any:
        return self._index.path

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._pointer)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> VectorIndex:
        """The live generation, reloaded first if ``CURRENT`` changed since the last load (and
        no other request is reloading it right now). Raises ``IndexChanged`` while the index
        holds another model's vectors."""
        stamp = self._read_stamp()
        if stamp is not None and stamp != self._stamp and self._reload_lock.acquire(False):
            try:
                if stamp != self._stamp:
                    self._reload(stamp)
            finally:
                self._reload_lock.release()
        if self.error is not None:
            raise IndexChanged(self.error)
        return self._index

    def _reload(self, stamp: tuple[int, int, int]) -> None:
        try:
            new = VectorIndex.open(self._index.path)
        except (IndexFormatError, OSError, sqlite3.Error, RuntimeError) as e:
            # A writer between steps (or a generation already replaced): the next request
            # tries again; until then the loaded generation serves.
            logger.warning("%s: could not open the new generation yet (%s)", self.path, e)
            return
        problem = self._incompatible(new.meta)
        if problem is not None:
            new.close()
            if self.error is None:
                logger.error("%s", problem)
            self.error, self._stamp = problem, stamp
            return
        with self._search_lock:  # waits for searches in flight on the old generation
            old, self._index = self._index, new
            old.close()
        self.error, self._stamp = None, stamp
        logger.info(
            "%s: now serving %s (%d documents, %d vectors)",
            self.path,
            new.generation.name,
            new.n_documents,
            new.ntotal,
        )

    def _incompatible(self, meta: dict[str, Any]) -> str | None:
        settings = {k: meta["embedding"].get(k) for k in _SETTINGS}
        if meta["model"]["hash"] == self._model and settings == self._settings:
            return None
        changed = [k for k in _SETTINGS if settings[k] != self._settings[k]]
        what = "another model" if meta["model"]["hash"] != self._model else "other settings"
        detail = f" ({', '.join(changed)} changed)" if changed else ""
        return (
            f"the index at {self.path} was rebuilt with {what}{detail}: "
            f"{meta['model'].get('path')}; restart the server with that model or rebuild the "
            "index with the served one"
        )

    def search(
        self,
        vectors: np.ndarray | None,
        k: int,
        query: str = "",
        mode: str = "dense",
        alpha: float | None = DEFAULT_ALPHA,
    ) -> tuple[list[Hit], VectorIndex, str | None]:
        """The ``k`` best documents for one query (its vector and/or text, by ``mode``; hybrid
        ``alpha``: the weight of dense, None: reciprocal-rank fusion (k = 60); see
        ``diffembed.index.search.retrieve``), the generation searched, and the note for a
        BM25 side that matched nothing (``diffembed.index.search.bm25_note``, else None)."""
        from diffembed.index.search import bm25_note, retrieve

        self.current()
        with self._search_lock:
            index = self._index
            hits = retrieve(index, vectors, [query], k, mode, alpha)[0]
            return hits, index, bm25_note(index, query, mode)

    def passages(self, hits: list[dict[str, Any]]) -> dict[str, str]:
        """The text each of ``hits`` (``Hit.to_dict`` records) was ranked by: the span of its
        best chunk (``char_start:char_end``) in the document as embedded (title and text),
        read from the live generation. A document no longer there is left out; one replaced
        since the search (``index add --upsert``) gives its new text."""
        from diffembed.formats.corpus import Document
        from diffembed.index.store import select_in

        if not hits:
            return {}
        self.current()
        with self._search_lock:
            rows = select_in(
                self._index.db,
                "SELECT doc_id, title, text FROM documents WHERE doc_id IN ({marks})",
                [h["id"] for h in hits],
            )
        full = {d: Document(id=d, text=text, title=title).full_text for d, title, text in rows}
        return {
            h["id"]: full[h["id"]][h["char_start"] : h["char_end"]] for h in hits if h["id"] in full
        }

    def resolve_mode(self, mode: str | None) -> str:
        """``mode``, or the live generation's default (hybrid with BM25, else dense)."""
        from diffembed.index.search import resolve_mode

        return resolve_mode(self.current(), mode)

    def describe(self) -> dict[str, Any]:
        """For ``/health``: the live generation's counts and mode, or ``{"error": ...}``."""
        try:
            index = self.current()
        except IndexChanged as e:
            return {"error": str(e)}
        return {"documents": index.n_documents, "vectors": index.ntotal, **index.mode}

    def close(self) -> None:
        with self._search_lock:
            self._index.close()
