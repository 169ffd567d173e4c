"""What an index is built from: user documents (a JSONL file or a folder of text files) read into
``formats.corpus.Document`` records (the token windows long documents are split into are
``diffembed.model.chunking``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from diffembed.errors import DiffembedError
from diffembed.formats.corpus import Document
from diffembed.io import iter_jsonl

logger = logging.getLogger(__name__)


class DocumentsError(DiffembedError):
    """A documents file or folder is malformed; the message names the file and line."""


def read_documents(path: str | Path, strict: bool = True) -> list[Document]:
    """Read documents from a JSONL file or a folder of text files.

    JSONL: one object per line with ``_id`` or ``id`` (string or integer), ``text`` (string),
    optional ``title``; other fields are kept as metadata. Folder: every non-hidden regular file
    below it (sorted), read as UTF-8; the id is the path relative to the folder. Ids must be
    unique; errors name the file and the 1-based line. A document with empty text and title
    (real collections have some) is an error when ``strict``, else left out with a warning that
    counts them (``diffembed index build`` without ``--strict``).
    """
    path = Path(path)
    empty: list[str] = []
    if path.is_dir():
        docs = _read_text_folder(path, strict, empty)
    elif not path.is_file():
        raise DocumentsError(f"{path}: no such file or folder")
    else:
        docs = _read_jsonl(path, strict, empty)
    if empty:
        logger.warning(
            "%s: left out %d document(s) with no text (first: %s); --strict refuses them",
            path,
            len(empty),
            empty[0],
        )
    if not docs:
        raise DocumentsError(f"{path}: no documents" + (" with text" if empty else ""))
    return docs


def _read_jsonl(path: Path, strict: bool, empty: list[str]) -> list[Document]:
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path, DocumentsError):
        where = f"{path}:{lineno}"
        doc = _document(rec, where, strict)
        if doc.id in seen:
            raise DocumentsError(f"{where}: duplicate id {doc.id!r} (first on line {seen[doc.id]})")
        seen[doc.id] = lineno
        if (doc.title + doc.text).strip():
            docs.append(doc)
        else:
            empty.append(f"{where} {doc.id!r}")
    return docs


def _document(rec: dict[str, Any], where: str, strict: bool = True) -> Document:
    """One JSONL record as a ``Document`` whose ``source`` is ``where`` (``file:line``)."""
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
            raise DocumentsError(f"{where}: field {name!r} is {type(value).__name__}, not a string")
    if strict and not (title + text).strip():
        raise DocumentsError(
            f"{where}: document {id_!r} has no text (without --strict it is left out)"
        )
    meta = {k: v for k, v in rec.items() if k not in (key, "title", "text")}
    return Document(id=id_, text=text, title=title, meta=meta, source=where)


def _read_text_folder(root: Path, strict: bool, empty: list[str]) -> list[Document]:
    docs: list[Document] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DocumentsError(f"{p}: not valid UTF-8 ({e.reason})") from None
        except OSError as e:
            raise DocumentsError(
                f"{p}: cannot be read ({e.strerror or type(e).__name__})"
            ) from None
        if not text.strip():
            if strict:
                raise DocumentsError(f"{p}: empty document (without --strict it is left out)")
            empty.append(str(p))
            continue
        docs.append(Document(id=rel, text=text, source=str(p)))
    if not docs and not empty:
        raise DocumentsError(f"{root}: no text files")
    return docs
