"""Offline text corpora extracted from Debian packages.

``build_corpus(out_dir, sources=None, min_docs=1000, fractions=(0.8, 0.1, 0.1))`` reads the
installed packages (see :data:`SOURCES`; the package list is ``scripts/corpus_packages.txt``)
and writes to ``out_dir``:

* ``pretrain.jsonl``, ``finetune.jsonl``, ``eval.jsonl``: one document per line,
  ``{"id", "source", "split", "title", "text", "meta"}``, sorted by source then id;
* ``report.json``: documents, MB (1e6 bytes of UTF-8 text), whitespace tokens and the
  length distribution (min / median / p90 / max, in whitespace tokens) per source.

**Splits** are by document: ``sha256(salt + id)`` mapped to [0, 1) picks the split from the
cumulative fractions, so a document's split never depends on the rest of the corpus, and the
three files are disjoint. The same ``split`` is also stored in each record.

**Ids** are stable and unique: ``wordnet:n:02084071``, ``gcide:Bank.2``, ``foldoc:capability``,
``jargon:thinko``, ``python:library/os``, ``linux:core-api/kobject``, ``perl:perlfunc``,
``man:open.2``, ``vim:usr_01``, ``postgresql:sql-select``, ``sqlite:c3ref/open``,
``debian-handbook:apt``, ``debian-reference:ch02``, ``bible:Genesis.1``.

One module per source format: :mod:`.wordnet`, :mod:`.dictd` (GCIDE, FOLDOC, Jargon),
:mod:`.rest` (reST: Python and kernel docs), :mod:`.htmltext` (HTML), :mod:`.man` (roff via
``man -l``), :mod:`.pod` (POD), :mod:`.vimhelp` (Vim help), :mod:`.plaintext` (text, Bible).
The CLI is ``diffembed corpus build`` (:mod:`diffembed.cli.data`).
"""

from .build import (
    DEFAULT_FRACTIONS,
    DEFAULT_MIN_DOCS,
    SPLITS,
    CorpusTooSmallError,
    build_corpus,
    format_report,
    split_of,
)
from .common import normalize_text
from .sources import SOURCES, Source, all_packages, package_files, resolve_sources

__all__ = [
    "DEFAULT_FRACTIONS",
    "DEFAULT_MIN_DOCS",
    "SOURCES",
    "SPLITS",
    "CorpusTooSmallError",
    "Source",
    "all_packages",
    "build_corpus",
    "format_report",
    "normalize_text",
    "package_files",
    "resolve_sources",
    "split_of",
]
