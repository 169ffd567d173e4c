"""A user's texts to embed: ``.txt`` (one text per line), ``.jsonl``/``.ndjson`` (one field per
line), ``.csv``/``.tsv`` and ``.parquet`` (one column, chosen by name), or ``-`` for standard
input (one text per line).

Every text must be non-empty. Errors name the file and the line (``path:line: ...``; Parquet:
``path: row N: ...``), and ``TextSource.where`` says where each text came from, so that later
errors (a text too long, say) can name its line too.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from diffembed.errors import DiffembedError
from diffembed.io import iter_jsonl

STDIN = "-"
DEFAULT_FIELD = "text"  # the field / column read when --text-field is not given
TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet",)
ACCEPTED = (
    ".txt (one text per line), .jsonl/.ndjson (the --text-field of each line), "
    ".csv/.tsv/.parquet (the --text-field column), or '-' for standard input (one text per line)"
)


class InputError(DiffembedError):
    """A user input file is malformed; the message names the file and line."""


@dataclass
class TextSource:
    """Texts read from one input, and where each one is (``"path:line"``)."""

    texts: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def add(self, text: str, where: str, what: str = "") -> None:
        if not text.strip():
            raise InputError(f"{where}: empty text{what}")
        self.texts.append(text)
        self.where.append(where)


def read_texts(path: str | Path, text_field: str | None = None) -> list[str]:
    """The texts of ``path`` (see the module docstring); ``text_field`` names the JSONL field or
    the CSV/TSV/Parquet column (default ``DEFAULT_FIELD``); given for ``.txt`` or standard input,
    which have no fields, it is refused rather than ignored. Raises ``InputError`` naming the
    file and line."""
    return read_text_source(path, text_field).texts


def read_text_source(path: str | Path, text_field: str | None = None) -> TextSource:
    """Like ``read_texts``, with the place of every text (``TextSource.where``)."""
    lines = str(path) == STDIN or Path(path).suffix.lower() in TEXT_SUFFIXES
    if lines and text_field is not None:
        name = "standard input" if str(path) == STDIN else f"a {Path(path).suffix} file"
        raise InputError(
            f"{'<stdin>' if str(path) == STDIN else path}: --text-field {text_field!r} names a "
            f"field or column, but {name} is one text per line: drop --text-field, or give "
            ".jsonl/.csv/.tsv/.parquet input"
        )
    if str(path) == STDIN:
        source = TextSource()
        _add_lines(source, "<stdin>", _stdin_lines())
    else:
        source = _read_file(Path(path), text_field or DEFAULT_FIELD)
    if not source.texts:
        raise InputError(f"{'<stdin>' if str(path) == STDIN else path}: no texts")
    return source


def _read_file(path: Path, text_field: str) -> TextSource:
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; give one of: {ACCEPTED}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return _read_known_file(path, text_field)
    except OSError as e:  # a file we may not read: the user's to fix, named
        raise InputError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def _read_known_file(path: Path, text_field: str) -> TextSource:
    """``_read_file`` of an existing file, by its extension."""
    suffix = path.suffix.lower()
    source = TextSource()
    if suffix in TEXT_SUFFIXES:
        with path.open("rb") as f:
            _add_lines(source, str(path), f)
    elif suffix in JSONL_SUFFIXES:
        _read_jsonl(source, path, text_field)
    elif suffix in TABLE_SUFFIXES:
        _read_table(source, path, text_field, TABLE_SUFFIXES[suffix])
    elif suffix in PARQUET_SUFFIXES:
        _read_parquet(source, path, text_field)
    else:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise InputError(f"{path}: {kind} is not read as texts; accepted: {ACCEPTED}")
    return source


def _stdin_lines() -> Iterator[bytes]:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        yield from stream
    else:  # a text stream without bytes underneath (tests, embedding applications)
        for line in sys.stdin:
            yield line.encode("utf-8", "surrogateescape")


def _decoded_lines(name: str, lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    """``(1-based line number, text without the line end)``; undecodable or binary lines raise
    ``InputError`` naming ``name`` and the line; a UTF-8 byte-order mark is dropped."""
    for lineno, raw in enumerate(lines, start=1):
        if b"\0" in raw:
            raise InputError(
                f"{name}:{lineno}: a NUL byte: this looks like a binary file, not text; "
                f"accepted: {ACCEPTED}"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"{name}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                f"{e.start + 1}); save the file as UTF-8 text"
            ) from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        yield lineno, line.rstrip("\r\n")


def _add_lines(source: TextSource, name: str, lines: Iterable[bytes]) -> None:
    for lineno, line in _decoded_lines(name, lines):
        source.add(line, f"{name}:{lineno}")


def _read_jsonl(source: TextSource, path: Path, text_field: str) -> None:
    for lineno, record in iter_jsonl(path, InputError, skip_blank=False):
        where = f"{path}:{lineno}"
        if text_field not in record:
            raise InputError(f"{where}: no field {text_field!r} (choose one with --text-field)")
        text = record[text_field]
        if not isinstance(text, str):
            raise InputError(
                f"{where}: field {text_field!r} is {type(text).__name__}, not a string"
            )
        source.add(text, where)


def _read_table(source: TextSource, path: Path, text_field: str, delimiter: str) -> None:
    """CSV/TSV with a header row: the ``text_field`` column, one text per record."""
    with path.open("rb") as f:
        text = "\n".join(line for _, line in _decoded_lines(str(path), f))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if text_field not in header:
            raise InputError(
                f"{path}: no column {text_field!r} in the header row (columns: "
                f"{', '.join(header)}); choose one with --text-field"
            )
        column = header.index(text_field)
        while True:
            where = f"{path}:{reader.line_num + 1}"  # where the record starts
            row = next(reader, None)
            if row is None:
                break
            if not row:
                raise InputError(f"{where}: empty line")
            if len(row) != len(header):
                raise InputError(f"{where}: {len(row)} fields, the header has {len(header)}")
            source.add(row[column], where, f" in column {text_field!r}")
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: malformed {path.suffix[1:]}: {e}") from None


def _read_parquet(source: TextSource, path: Path, text_field: str) -> None:
    """The ``text_field`` column of a Parquet file (pyarrow reads it)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    if text_field not in schema.names:
        raise InputError(
            f"{path}: no column {text_field!r} (columns: {', '.join(schema.names)}); "
            "choose one with --text-field"
        )
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{path}: column {text_field!r} holds {kind}, not text")
    try:
        values = pq.read_table(path, columns=[text_field]).column(0).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    for row, text in enumerate(values, start=1):
        source.add(text or "", f"{path}: row {row}")
