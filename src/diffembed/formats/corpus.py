"""The one document record: a corpus line, a retrieval task's document, an indexed document.

On disk a corpus split is JSONL, one ``Document.to_record`` per line
(``{id, source, split, title, text, meta}``); BEIR corpora and user files carry the subset
``{_id|id, title?, text, meta?}``. Retrievers and indexes embed ``full_text``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One text document.

    ``id`` is unique within its collection (corpus ids are ``"<namespace>:<key>"``, e.g.
    ``wordnet:n:02084071`` or ``man:ls.1``); ``text`` is the body; ``title`` a short
    human-readable name (may be empty); ``source`` says where the document came from (the corpus
    source, e.g. ``wordnet``, or for a user's file ``file:line``, for error messages); ``meta``
    keeps whatever structured information comes with it (JSON-serialisable).
    """

    id: str
    text: str
    title: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """``"{title} {text}"`` (BEIR's convention), or the text alone when there is no title."""
        return f"{self.title} {self.text}".strip() if self.title else self.text

    @property
    def namespace(self) -> str:
        """The id's namespace (``man`` for both man-page sources, ``gcide``, ``python``...)."""
        return self.id.split(":", 1)[0]

    def to_record(self, split: str | None = None) -> dict[str, Any]:
        """The JSON record ``{id, source, split?, title, text, meta}`` with ``meta`` keys sorted."""
        rec: dict[str, Any] = {"id": self.id, "source": self.source}
        if split is not None:
            rec["split"] = split
        rec["title"] = self.title
        rec["text"] = self.text
        rec["meta"] = _sorted_meta(self.meta)
        return rec


def _sorted_meta(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _sorted_meta(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_sorted_meta(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value
