"""Build the corpus: extract every source, split by document, write JSONL and a report.

Output directory layout (every file written atomically with :func:`diffembed.io.atomic_write`;
the three splits are replaced only when all of them are complete):

* ``pretrain.jsonl``, ``finetune.jsonl``, ``eval.jsonl``: one JSON object per line,
  ``{"id", "source", "split", "title", "text", "meta"}``, UTF-8, ordered by source name then
  document id; no timestamps, so the same installed packages give byte-identical files;
* ``report.json``: per source the documents, MB of text, whitespace tokens, length
  distribution and split counts, the packages' versions, and what was skipped.

Splits are decided per document by :func:`split_of`: ``sha256(salt + id)``'s first 8 bytes as
a fraction in [0, 1), compared with the cumulative split fractions (default 0.8/0.1/0.1). A
document therefore always lands in the same split, whatever else is in the corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from diffembed.errors import ConfigError, DiffembedError
from diffembed.formats.corpus import Document
from diffembed.io import atomic_write, write_json

from .sources import Context, Source, package_files, package_version, resolve_sources

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("pretrain", "finetune", "eval")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
DEFAULT_MIN_DOCS = 1000


class CorpusTooSmallError(DiffembedError, RuntimeError):
    """Fewer documents were extracted than the required minimum."""


def split_of(doc_id: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = "") -> str:
    """The split (``pretrain``/``finetune``/``eval``) of a document id; deterministic."""
    digest = hashlib.sha256((salt + doc_id).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    acc = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        acc += frac
        if u < acc:
            return name
    return SPLITS[-1]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"split fractions must be 3 non-negative numbers summing to 1: {fractions}"
        )
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def _dumps(record: dict[str, Any]) -> str:
    """One JSON line; the Unicode line separators that ``str.splitlines`` honours are escaped."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    for ch in ("\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e"):
        if ch in line:
            line = line.replace(ch, f"\\u{ord(ch):04x}")
    return line


def length_stats(lengths: Iterable[int]) -> dict[str, float]:
    """min / median / p90 / max / mean of a list of lengths (0s when empty)."""
    arr = np.asarray(list(lengths), dtype=np.int64)
    if arr.size == 0:
        return {"min": 0, "median": 0, "p90": 0, "max": 0, "mean": 0}
    return {
        "min": int(arr.min()),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "max": int(arr.max()),
        "mean": round(float(arr.mean()), 2),
    }


def _extract(source: Source, ctx: Context) -> tuple[list[Document], int]:
    """All documents of a source sorted by id, and how many were dropped as too short."""
    docs = []
    dropped = 0
    for doc in source.extract(ctx):
        if len(doc.text.split()) < source.min_tokens:
            dropped += 1
            continue
        docs.append(doc)
    docs.sort(key=lambda d: d.id)
    return docs, dropped


def build_corpus(
    out_dir: str | Path,
    sources: Sequence[str] | None = None,
    min_docs: int = DEFAULT_MIN_DOCS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    root: str | Path = "/",
    workers: int | None = None,
    salt: str = "",
) -> dict[str, Any]:
    """Build the corpus into ``out_dir`` and return the report (also written as report.json).

    ``sources``: source names (see :data:`diffembed.data.corpus.sources.SOURCES`) or their Debian
    package names; all sources when ``None``. A source whose package is not installed is
    skipped with a warning naming the package. ``min_docs``: fewer documents in total raise
    :class:`CorpusTooSmallError` (nothing is written then). ``fractions``: pretrain /
    finetune / eval shares. ``root``: filesystem root holding the installed packages.
    ``workers``: parallel renderers for man pages (default: CPU count). ``salt``: changes
    the split assignment when non-empty.
    """
    fractions = _check_fractions(fractions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(root)
    workers = workers or max(1, os.cpu_count() or 1)
    selected = resolve_sources(list(sources) if sources else None)
    names = [f"{s}.jsonl" for s in SPLITS]
    report: dict[str, Any] = {
        "sources": {},
        "skipped": {},
        "splits": {"fractions": dict(zip(SPLITS, fractions, strict=True)), "salt": salt},
        "token_unit": "whitespace-separated tokens (str.split())",
        "mb_unit": "MB = 1e6 bytes of UTF-8 text (the text field only)",
        "files": names,
    }
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(atomic_write(out / name)) for name in names}
        all_lengths = _extract_sources(selected, root, workers, files, fractions, salt, report)
        report["total"] = _total(report, all_lengths, min_docs)
    write_json(out / "report.json", report)
    log.info("%s", format_report(report))
    return report


def _extract_sources(
    selected: Sequence[Source],
    root: Path,
    workers: int,
    files: dict[str, TextIO],
    fractions: tuple[float, float, float],
    salt: str,
    report: dict[str, Any],
) -> list[int]:
    """Extract and write every selected source (``report["sources"]`` / ``["skipped"]`` are
    filled in); returns the length of every document written."""
    seen: set[str] = set()
    all_lengths: list[int] = []
    for source in tqdm(selected, desc="corpus sources", unit="source", disable=None):
        missing = [p for p in source.packages if package_files(p, root) is None]
        if missing:
            msg = f"package(s) {', '.join(missing)} not installed; source {source.name} skipped"
            log.warning(msg)
            report["skipped"][source.name] = msg
            continue
        ctx = Context(
            root=root,
            files={p: package_files(p, root) or [] for p in source.packages},
            workers=workers,
        )
        t0 = time.perf_counter()
        try:
            docs, dropped = _extract(source, ctx)
        except (FileNotFoundError, RuntimeError) as exc:
            msg = f"source {source.name} skipped: {exc}"
            log.warning(msg)
            report["skipped"][source.name] = msg
            continue
        stats = _write_source(source, docs, files, seen, fractions, salt)
        stats["packages"] = {p: package_version(p, root) for p in source.packages}
        stats["dropped_short"] = dropped
        stats["min_tokens"] = source.min_tokens
        report["sources"][source.name] = stats
        all_lengths.extend(len(d.text.split()) for d in docs)
        log.info(
            "%-16s %7d docs %8.2f MB %11d tokens  (%.1f s)",
            source.name,
            stats["docs"],
            stats["mb"],
            stats["tokens"],
            time.perf_counter() - t0,
        )
        del docs
    return all_lengths


def _total(report: dict[str, Any], all_lengths: list[int], min_docs: int) -> dict[str, Any]:
    """The report's ``total``; raises :class:`CorpusTooSmallError` below ``min_docs``."""
    total = sum(s["docs"] for s in report["sources"].values())
    if total < min_docs:
        raise CorpusTooSmallError(
            f"corpus has {total} documents, fewer than the required minimum {min_docs} "
            f"(skipped: {', '.join(report['skipped']) or 'none'}); install the packages "
            f"listed in scripts/corpus_packages.txt or lower --min-docs"
        )
    return {
        "docs": total,
        "mb": round(sum(s["bytes"] for s in report["sources"].values()) / 1e6, 3),
        "tokens": sum(s["tokens"] for s in report["sources"].values()),
        "length_tokens": length_stats(all_lengths),
        "split_docs": {
            k: sum(s["split_docs"][k] for s in report["sources"].values()) for k in SPLITS
        },
    }


def _write_source(
    source: Source,
    docs: list[Document],
    files: dict[str, TextIO],
    seen: set[str],
    fractions: tuple[float, float, float],
    salt: str,
) -> dict[str, Any]:
    lengths: list[int] = []
    nbytes = 0
    split_docs = dict.fromkeys(SPLITS, 0)
    renamed = 0
    for doc in docs:
        if doc.id in seen:  # ids must be unique across the corpus
            k = 2
            while f"{doc.id}~{k}" in seen:
                k += 1
            log.warning("duplicate document id %s renamed to %s~%d", doc.id, doc.id, k)
            doc.id = f"{doc.id}~{k}"
            renamed += 1
        seen.add(doc.id)
        split = split_of(doc.id, fractions, salt)
        files[f"{split}.jsonl"].write(_dumps(doc.to_record(split)) + "\n")
        split_docs[split] += 1
        lengths.append(len(doc.text.split()))
        nbytes += len(doc.text.encode("utf-8"))
    return {
        "format": source.format,
        "docs": len(docs),
        "bytes": nbytes,
        "mb": round(nbytes / 1e6, 3),
        "tokens": int(sum(lengths)),
        "length_tokens": length_stats(lengths),
        "split_docs": split_docs,
        "renamed_duplicate_ids": renamed,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report: one row per source plus the total."""
    head = f"{'source':<17}{'docs':>8}{'MB':>9}{'tokens':>12}{'min':>6}{'median':>8}{'p90':>8}{'max':>9}"
    rows = [head, "-" * len(head)]
    items = list(report["sources"].items())
    if "total" in report:
        items.append(("TOTAL", report["total"]))
    for name, s in items:
        lt = s["length_tokens"]
        rows.append(
            f"{name:<17}{s['docs']:>8}{s['mb']:>9.2f}{s['tokens']:>12}"
            f"{lt['min']:>6}{lt['median']:>8.0f}{lt['p90']:>8.0f}{lt['max']:>9}"
        )
    for name, why in report.get("skipped", {}).items():
        rows.append(f"skipped {name}: {why}")
    return "\n".join(rows)
