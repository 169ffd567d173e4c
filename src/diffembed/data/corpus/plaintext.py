"""Plain-text sources: generic ``.txt`` documents and the King James Bible.

Generic text (e.g. the kernel's ``*.txt`` documents): form feeds and ``-*- mode -*-`` lines
dropped, whitespace normalised; the title is the first line (``meta["path"]`` keeps the file).

The Bible: ``bible-kjv-text`` stores the text in its own compressed format, which the
``bible`` program (package ``bible-kjv``) decodes. It is run once as
``bible -p DIR -l100000 Gen1:1-Rev22:21``, whose output is a chapter heading (``Genesis 1``)
followed by one line per verse (``  1 In the beginning ...``). One document per chapter:
``id`` ``bible:Genesis.1``, ``title`` ``Genesis 1``, ``text`` one verse per line without the
verse numbers; ``meta``: ``book``, ``chapter``, ``book_number`` (1-66), ``testament``
(``old``/``new``), ``verses`` (count).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from diffembed.errors import DiffembedError
from diffembed.formats.corpus import Document

from .common import normalize_inline, normalize_text

OLD_TESTAMENT_BOOKS = 39
_CHAPTER = re.compile(r"^(\S.*?) (\d+)$")
_VERSE = re.compile(r"^\s+(\d+) (.*)$")


class ToolMissingError(DiffembedError, RuntimeError):
    """A program a source needs is not installed (message names the Debian package)."""


def parse_bible(text: str, source: str = "bible-kjv") -> Iterator[Document]:
    """Turn the output of the ``bible`` program into one document per chapter."""
    book, chapter = "", 0
    verses: list[str] = []
    books: list[str] = []

    def _emit() -> Document | None:
        if not book or not verses:
            return None
        number = books.index(book) + 1
        return Document(
            id=f"bible:{book.replace(' ', '_')}.{chapter}",
            source=source,
            title=f"{book} {chapter}",
            text=normalize_text("\n".join(verses)),
            meta={
                "book": book,
                "chapter": chapter,
                "book_number": number,
                "testament": "old" if number <= OLD_TESTAMENT_BOOKS else "new",
                "verses": len(verses),
            },
        )

    for line in text.split("\n"):
        if not line.strip():
            continue
        m = _CHAPTER.match(line)
        if m and not line[0].isspace():
            doc = _emit()
            if doc is not None:
                yield doc
            book, chapter, verses = m.group(1), int(m.group(2)), []
            if book not in books:
                books.append(book)
            continue
        v = _VERSE.match(line)
        if v:
            verses.append(normalize_inline(v.group(2)))
        elif verses:  # a wrapped verse: continuation line
            verses[-1] += " " + normalize_inline(line)
    doc = _emit()
    if doc is not None:
        yield doc


def run_bible(data_dir: str | Path, timeout: float = 300.0) -> str:
    """Dump the whole KJV text with the ``bible`` program reading ``data_dir/bible.data``."""
    exe = shutil.which("bible")
    if exe is None:
        raise ToolMissingError("the `bible` program is missing (Debian package bible-kjv)")
    proc = subprocess.run(
        [exe, "-p", str(data_dir), "-l100000", "Gen1:1-Rev22:21"],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bible failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode("utf-8", errors="replace")


def clean_plain_text(raw: str) -> str:
    """Normalise a plain-text document (form feeds and Emacs mode lines removed)."""
    raw = raw.replace("\f", "\n")
    raw = re.sub(r"^.*-\*-.*-\*-.*$", "", raw, flags=re.M)
    return normalize_text(raw)


def read_text_file(path: Path) -> str:
    """Read a text file, gunzipping ``*.gz``; UTF-8 with a Latin-1 fallback."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def extract_text_files(
    paths: Iterable[str | Path], source: str, namespace: str, base: str | Path
) -> Iterator[Document]:
    """One document per text file; ``id`` is ``namespace:`` + the path under ``base`` without
    ``.gz`` (``.txt`` is kept, so ``a.txt`` never collides with a reST ``a.rst`` -> ``a``)."""
    base = Path(base)
    for p in sorted(set(map(str, paths))):
        path = Path(p)
        if not path.is_file():
            continue
        text = clean_plain_text(read_text_file(path))
        if not text.strip():
            continue
        rel = str(path.relative_to(base))
        key = re.sub(r"\.gz$", "", rel)
        title = normalize_inline(text.split("\n", 1)[0])
        yield Document(
            id=f"{namespace}:{key}",
            source=source,
            title=title,
            text=text,
            meta={"path": rel},
        )
