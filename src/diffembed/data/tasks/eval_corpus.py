"""The ``eval`` split of a corpus as the task builders see it: every record checked to be an
eval document, minus the documents whose text also exists in the pretrain or finetune split.

A task's ``task.json`` records the sha256 of ``eval.jsonl`` (:func:`tagged_file_sha256`) and how many
documents were dropped as leaked.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from diffembed.data.documents import document_from_record
from diffembed.errors import FileFormatError, InputNotFoundError
from diffembed.formats.corpus import Document
from diffembed.io import iter_jsonl
from diffembed.provenance import file_sha256

logger = logging.getLogger(__name__)

EVAL_SPLIT = "eval"
OTHER_SPLITS = ("pretrain", "finetune")
# A document text shorter than this (after normalization) is never fingerprinted: short
# dictionary entries collide by chance, long ones only when they are the same text.
FINGERPRINT_MIN_CHARS = 300
FINGERPRINT_CHARS = 400

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _fingerprint(text: str) -> str | None:
    """Alphanumeric prefix of ``text`` (lower-cased): equal for two renderings of one page."""
    norm = _NON_ALNUM.sub("", text.lower())
    if len(norm) < FINGERPRINT_MIN_CHARS:
        return None
    return norm[:FINGERPRINT_CHARS]


def _name_key(meta: Mapping[str, Any]) -> str | None:
    """A manual page's NAME line (``"perlfaq6 - Regular Expressions"``), normalized."""
    line = meta.get("name_line")
    if not isinstance(line, str) or not line.strip():
        return None
    return " ".join(line.lower().split())


def tagged_file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    return f"sha256:{file_sha256(path)}"


class EvalCorpus:
    """The ``eval`` split of a corpus directory, minus documents that leak from other splits.

    Only ``eval.jsonl`` is read for documents, and every record must say ``"split": "eval"``.
    The corpus builder splits by document id, but some texts exist under two ids (a Perl page as
    POD and as a rendered man page: ``perl:perlfaq6`` in eval, ``man:perlfaq6.1`` in pretrain).
    When ``pretrain.jsonl`` / ``finetune.jsonl`` are present, an eval document is dropped as
    leaked if its NAME line or its text fingerprint (first 400 alphanumerics, for texts of at
    least 300) also occurs there.
    """

    def __init__(self, docs: Sequence[Document], leaked: Sequence[str], eval_sha256: str):
        self.docs: list[Document] = list(docs)
        self.leaked: list[str] = list(leaked)
        self.eval_sha256 = eval_sha256
        self._by_id = {d.id: d for d in self.docs}
        self._by_source: dict[str, list[Document]] = {}
        for d in self.docs:
            self._by_source.setdefault(d.source, []).append(d)

    @classmethod
    def load(cls, corpus_dir: str | Path, check_leaks: bool = True) -> EvalCorpus:
        """Read ``corpus_dir/eval.jsonl`` (and, for the leak check, the other splits)."""
        corpus_dir = Path(corpus_dir)
        path = corpus_dir / f"{EVAL_SPLIT}.jsonl"
        if not path.is_file():
            raise InputNotFoundError(f"{path}: no such file (build the corpus first)")
        start = time.perf_counter()
        docs: list[Document] = []
        seen: set[str] = set()
        for lineno, rec in iter_jsonl(path):
            if rec.get("split") != EVAL_SPLIT:
                raise FileFormatError(f"{path}:{lineno}: split is {rec.get('split')!r}, not eval")
            if rec["id"] in seen:
                raise FileFormatError(f"{path}:{lineno}: duplicate id {rec['id']!r}")
            seen.add(rec["id"])
            docs.append(document_from_record(rec))
        leaked: list[str] = []
        if check_leaks:
            docs, leaked = _drop_leaked(docs, *_other_split_keys(corpus_dir))
        logger.info(
            "eval corpus %s: %d documents (%d dropped as copies of pretrain/finetune texts) "
            "in %.1f s",
            corpus_dir,
            len(docs),
            len(leaked),
            time.perf_counter() - start,
        )
        return cls(docs, leaked, tagged_file_sha256(path))

    def source(self, name: str) -> list[Document]:
        """Documents of one source, in corpus order."""
        return list(self._by_source.get(name, []))

    def sources(self, names: Iterable[str]) -> list[Document]:
        """Documents of several sources, in corpus order."""
        wanted = set(names)
        return [d for d in self.docs if d.source in wanted]

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None (absent from eval, or dropped as leaked)."""
        return self._by_id.get(doc_id)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._by_id

    def __len__(self) -> int:
        return len(self.docs)


def _other_split_keys(corpus_dir: Path) -> tuple[set[str], set[str]]:
    """NAME lines and text fingerprints of the pretrain and finetune splits."""
    names: set[str] = set()
    prints: set[str] = set()
    for split in OTHER_SPLITS:
        path = corpus_dir / f"{split}.jsonl"
        if not path.is_file():
            continue
        for _, rec in iter_jsonl(path):
            name = _name_key(rec.get("meta") or {})
            if name is not None:
                names.add(name)
            fp = _fingerprint(rec["text"])
            if fp is not None:
                prints.add(fp)
    return names, prints


def _drop_leaked(
    docs: list[Document], names: set[str], prints: set[str]
) -> tuple[list[Document], list[str]]:
    """The documents whose NAME line and fingerprint occur in no other split, and the ids of
    the others."""
    if not names and not prints:
        return docs, []
    keep: list[Document] = []
    leaked: list[str] = []
    for d in docs:
        name = _name_key(d.meta)
        fp = _fingerprint(d.text)
        if (name is not None and name in names) or (fp is not None and fp in prints):
            leaked.append(d.id)
        else:
            keep.append(d)
    return keep, leaked
