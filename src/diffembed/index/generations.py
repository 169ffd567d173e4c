"""An index directory's generations and their integrity: the names of its files, ``CURRENT``
(the live generation), the writer lock, what a killed writer leaves, and each file's size and
sha256 recorded in meta.json and checked on open. The layout and the crash-safety rule are
described in ``diffembed.index.store``; this module is below ``store`` and ``lexical``, which
both report damaged files through it (``corrupt_file``)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffembed.errors import DiffembedError
from diffembed.io import atomic_write

# 2: meta.json's "vectors" entry (stored dimensions, quantisation; issue 31). Version 1
# indexes (float32 vectors of the model's width, no "vectors" entry) still open and grow.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CURRENT = "CURRENT"
META = "meta.json"
VECTORS = "vectors.faiss"
RESCORE = "rescore.safetensors"  # binary indexes: the int8 codes that re-score candidates
DOCS = "docs.sqlite"
FILES = "files"  # meta.json's {relative path: {"bytes", "sha256"}} of the generation's files
REBUILD = "rebuild the index with `diffembed index build --overwrite`"
_GEN_RE = re.compile(r"^gen-(\d{6,})$")
# atomic_dir's temporary folder of a generation, and the old one it moves aside.
_TMP_RE = re.compile(r"^\.gen-\d{6,}\.(.+\.tmp|old-\d+)$")
LOCK = ".lock"


class IndexFormatError(DiffembedError):
    """An index directory is missing, malformed or inconsistent; the message names the path."""


# ------------------------------------------------------------------------------ generations
def generation_number(name: str) -> int | None:
    m = _GEN_RE.match(name)
    return int(m.group(1)) if m else None


def current_generation(index_dir: str | Path) -> Path:
    """The live generation folder named by ``INDEX_DIR/CURRENT``."""
    index_dir = Path(index_dir)
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        hint = ""
        if index_dir.is_dir() and any(
            p.name != LOCK and is_writer_debris(p.name) for p in index_dir.iterdir()
        ):
            hint = "; a build was interrupted: run `diffembed index build` again"
        raise IndexFormatError(f"{index_dir}: not an index (no {CURRENT} file){hint}")
    name = pointer.read_text(encoding="utf-8").strip()
    if generation_number(name) is None:
        raise IndexFormatError(f"{pointer}: malformed generation name {name!r}")
    gen = index_dir / name
    if not gen.is_dir():
        raise IndexFormatError(f"{pointer}: names {name}, which does not exist")
    return gen


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Hold ``INDEX_DIR/.lock`` (flock, non-blocking): one writer at a time, else an error."""
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK, "a+") as f:
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


def is_writer_debris(name: str) -> bool:
    """Whether ``name`` (an entry of an index folder) is the lock or what a writer killed
    midway leaves: a temporary generation (``.gen-*.tmp``), a generation never made live, or
    the temporary file of ``CURRENT``."""
    return (
        name == LOCK
        or generation_number(name) is not None
        or bool(_TMP_RE.match(name))
        or (name.startswith(f".{CURRENT}.") and name.endswith(".tmp"))
    )


def clean_leftovers(index_dir: Path, keep: str | None) -> None:
    """Remove what killed writers left (temporary generations, a temporary ``CURRENT``) and
    generations other than ``keep``. Call it holding ``writer_lock``."""
    for p in index_dir.iterdir():
        if p.name in (LOCK, keep) or not is_writer_debris(p.name):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def swap_current(index_dir: Path, name: str) -> None:
    """Point ``CURRENT`` at generation ``name`` (atomic rename of a fsynced file)."""
    with atomic_write(index_dir / CURRENT) as f:
        f.write(name + "\n")
    fsync_path(index_dir)


# ------------------------------------------------------------------------------ integrity
def corrupt_file(path: Path, what: str, reason: str | None = None) -> IndexFormatError:
    """The error for an index file that is damaged: ``"{path}: {what} ({reason}); the file is
    truncated or corrupt: rebuild the index ..."``, naming the file and the way out."""
    detail = f" ({reason})" if reason else ""
    return IndexFormatError(f"{path}: {what}{detail}; the file is truncated or corrupt: {REBUILD}")


def corrupt_from_error(path: Path, what: str, error: Exception) -> IndexFormatError:
    """``corrupt_file`` with the first line of a library's ``error`` as the reason."""
    reason = str(error).split("failed: ")[-1].strip().splitlines()[0][:200]
    return corrupt_file(path, what, reason)


def file_checksums(generation: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": "sha256:HEX"}}`` of every file of a
    generation folder but ``meta.json`` (which records them), sorted by path."""
    return {
        p.relative_to(generation).as_posix(): {
            "bytes": p.stat().st_size,
            "sha256": f"sha256:{_sha256(p)}",
        }
        for p in sorted(generation.rglob("*"))
        if p.is_file() and p.relative_to(generation).as_posix() != META
    }


def verify_files(generation: Path, meta: dict[str, Any]) -> None:
    """Raise ``IndexFormatError`` naming the first file of ``generation`` that is missing or
    whose size or sha256 differs from what ``meta["files"]`` recorded when it was written.
    Generations written before checksums were recorded (no ``"files"``) are not checked."""
    recorded = meta.get(FILES)
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise IndexFormatError(f"{generation / META}: {FILES!r} is not an object")
    for name, want in sorted(recorded.items()):
        path = generation / name
        want = want if isinstance(want, dict) else {}
        if not path.is_file():
            raise IndexFormatError(f"{path}: missing (meta.json lists it); {REBUILD}")
        size = path.stat().st_size
        if size != want.get("bytes"):
            raise corrupt_file(
                path, f"{size} bytes, but {want.get('bytes')} when the generation was written"
            )
        got = f"sha256:{_sha256(path)}"
        if got != want.get("sha256"):
            raise corrupt_file(
                path,
                f"its sha256 {got[7:19]}... differs from the {str(want.get('sha256'))[7:19]}... "
                "recorded when the generation was written",
            )


def _sha256(path: Path) -> str:
    """Hex sha256 of a file (``provenance.file_sha256``, imported when first needed)."""
    from diffembed.provenance import file_sha256

    return file_sha256(path)
