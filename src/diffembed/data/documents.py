"""What the evaluation task suites and the training pairs both know about corpus documents.

One home for: turning a corpus JSONL record into a :class:`~diffembed.formats.corpus.Document`
(:func:`document_from_record`), telling a GCIDE entry copied from WordNet
(:func:`is_wordnet_copy`), and hiding a manual page's ``NAME`` line, which gives the answer away
when the page's description is the query (:func:`strip_name_section`: the ``man-page`` and
``man-description`` evaluation tasks and the ``synopsis-page`` training pairs cut it alike).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diffembed.formats.corpus import Document


def document_from_record(rec: Mapping[str, Any]) -> Document:
    """The document of one corpus JSONL record (``{id, source, split, title, text, meta}``)."""
    return Document(
        id=str(rec["id"]),
        source=str(rec.get("source", "")),
        title=str(rec.get("title") or ""),
        text=str(rec.get("text") or ""),
        meta=dict(rec.get("meta") or {}),
    )


def is_wordnet_copy(doc: Document) -> bool:
    """A GCIDE entry taken from WordNet (one of its sources names a WordNet version)."""
    return any(str(s).lower().startswith("wordnet") for s in doc.meta.get("sources", []))


def strip_name_section(doc: Document) -> str:
    """A man (or POD) page's text without its NAME header and NAME line.

    The page's ``meta.name_line`` (``"ls - list directory contents"``) is removed with the
    ``NAME`` heading before it when the text starts that way; otherwise every line equal to it
    is removed (a POD page with a preamble before ``NAME``). A page without a NAME line is kept
    as it is.
    """
    name_line = (doc.meta.get("name_line") or "").strip()
    text = doc.text
    if name_line:
        pattern = re.compile(r"\A\s*NAME\s*\n\s*" + re.escape(name_line) + r"[ \t]*\n?")
        stripped, n = pattern.subn("", text, count=1)
        if n:
            return stripped.lstrip("\n")
        lines = text.split("\n")
        text = "\n".join(line for line in lines if line.strip() != name_line)
    return text
