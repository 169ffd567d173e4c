"""What the task builders of one pairs build share (``PairsContext``: the documents, the
options, and pools built once) and the ``Section`` record of sectioned documents; below the
builders (``sources``, ``cloze``) so that each can take it without importing the other."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from diffembed.data.pairs.pools import Pool
from diffembed.formats.corpus import Document

DEFAULT_PROBLEMS_PER_CONCEPT = 24


@dataclass(frozen=True)
class Section:
    """A section of a document: its heading and the text up to the next heading."""

    doc_id: str
    index: int
    heading: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.index}"


@dataclass
class PairsContext:
    """What the task builders of one pairs build share: documents, options and pools built once."""

    docs: list[Document]
    seed: int
    max_tokens: int
    problems_per_concept: int = DEFAULT_PROBLEMS_PER_CONCEPT
    eval_seeds: tuple[int, ...] = (0,)
    pools: dict[str, Pool] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    sections: dict[str, tuple[Pool, list[Section]]] | None = None
    _namespaces: dict[str, list[Document]] | None = None

    def by_namespace(self, namespace: str) -> list[Document]:
        """The documents of an id namespace, in id order."""
        if self._namespaces is None:
            groups: dict[str, list[Document]] = defaultdict(list)
            for d in self.docs:
                groups[d.namespace].append(d)
            self._namespaces = dict(groups)
        return self._namespaces.get(namespace, [])
