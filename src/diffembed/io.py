"""Atomic file and directory writes (readers never see a half-written file, index or model), the
checks an output gets before any work (``check_output_file``, ``check_output_dir``,
``check_writable``: every error names the user's path, never a temporary file), the one JSONL
reader (errors name the file and line) and the one reader of a JSON object file
(``read_json``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from diffembed.errors import (
    FileFormatError,
    NotADirectoryOutputError,
    NotWritableError,
    OutputExistsError,
    OutputIsDirectoryError,
)

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux
    ``/proc/self/status``): setting it to 0 and back, even briefly, lets other threads create
    world-writable files and can leave the process at umask 0 when two threads race."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: at least never race with ourselves
        mask = os.umask(0o077)  # the strictest mask for the moment it is set
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the user's path, not the temporary file's
        raise _unwritable(path, path.parent, e, "choose another path") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only after the new directory is in
    place, so a crash leaves either the old or the new directory, never a mixture.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:  # name the user's path, not the temporary folder's
        raise _unwritable(path, path.parent, e, "choose another path") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual directory mode
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(
    path: str | Path,
    overwrite: bool,
    *,
    replaceable: Callable[[Path], bool] | None = None,
    overwrite_hint: str = "pass --overwrite to replace it",
    elsewhere: str = "choose another --out",
) -> None:
    """Refuse to write a directory at ``path`` (with ``atomic_dir``) over what it would delete:
    a file (always: ``OutputExistsError`` "... exists and is not a directory"), or a non-empty
    folder unless ``overwrite`` or ``replaceable(path)`` (e.g. a model directory of ours, which
    the new one replaces), and a folder that cannot be written (``check_writable``). The
    message names ``path``, its first entry, ``overwrite_hint`` (the flag or argument that
    replaces it) and ``elsewhere``. Call it before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path}: exists and is not a directory; {elsewhere}")
    if not overwrite and path.is_dir() and not (replaceable is not None and replaceable(path)):
        held = sorted(p.name for p in path.iterdir())
        if held:
            more = f" and {len(held) - 1} more" if len(held) > 1 else ""
            raise OutputExistsError(
                f"{path}: exists and is not empty (it holds {held[0]!r}{more}); {overwrite_hint} "
                f"or {elsewhere}"
            )
    check_writable(path, elsewhere)


def check_output_file(path: str | Path, elsewhere: str = "choose another --out") -> None:
    """Refuse to write a file at ``path`` (with ``atomic_write``) where it cannot be written:
    ``path`` is a directory (``OutputIsDirectoryError``), or its folder takes no new file
    (``check_writable``). The message names ``path`` and ``elsewhere`` (e.g. "choose another
    --output"). Call it before any work: a command with an output fails in its first second,
    not after the work, and never names a temporary file."""
    path = Path(path)
    if path.is_dir():
        raise OutputIsDirectoryError(f"{path}: is a directory, not a file; {elsewhere}")
    check_writable(path, elsewhere)


def check_writable(
    path: str | Path, elsewhere: str = "choose another --out", *, into: bool = False
) -> None:
    """Refuse ``path`` as an output when the folder that will receive it cannot take a new
    entry: tested by creating and removing an empty temporary file there, since permission
    bits do not tell (root passes them, read-only mounts and ``/proc`` refuse anyway).

    The folder is ``path``'s parent (a file or directory written beside it and renamed onto
    it, as ``atomic_write`` and ``atomic_dir`` do), or with ``into`` the directory ``path``
    itself (a command that writes files inside it); one that does not exist yet is created
    by the command, so its nearest existing ancestor is tested. Raises ``NotWritableError``
    (a ``PermissionError``: cannot write there) or ``NotADirectoryOutputError`` (a
    ``NotADirectoryError``: a file stands where a folder must be), the message naming ``path``
    and ``elsewhere``."""
    path = Path(path)
    where = Path(os.path.abspath(path if into else path.parent))
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        if where == Path(os.path.abspath(path)):
            raise NotADirectoryOutputError(f"{path}: exists and is not a directory; {elsewhere}")
        raise NotADirectoryOutputError(f"{path}: {where} is a file, not a directory; {elsewhere}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".diffembed-write-check.", dir=where)
    except OSError as e:
        raise _unwritable(path, where, e, elsewhere) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _unwritable(path: Path, where: Path, error: OSError, elsewhere: str) -> NotWritableError:
    """The error for an output ``path`` whose folder ``where`` takes no new file."""
    reason = error.strerror or type(error).__name__
    return NotWritableError(f"{path}: cannot create files in {where} ({reason}); {elsewhere}")


def iter_jsonl(
    path: str | Path,
    error: type[Exception] = FileFormatError,
    *,
    skip_blank: bool = True,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(1-based line number, object)`` for each line of a JSONL file.

    Every problem raises ``error`` with a message that starts ``"{path}:{line}: "``: a missing
    or unreadable file, bytes that are not UTF-8, invalid JSON, a value that is not a JSON object, and (with
    ``skip_blank=False``) a blank line. Callers check fields and raise the same way, with the
    ``where`` prefix ``f"{path}:{lineno}"``.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        f = path.open("rb")
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if not line.strip():
                if skip_blank:
                    continue
                raise error(f"{path}:{lineno}: empty line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def read_json(path: str | Path, error: type[Exception] = FileFormatError) -> dict[str, Any]:
    """Read a JSON object from ``path``. Every problem raises ``error`` with a message that
    starts ``"{path}: "`` (``"{path}:{line}: "`` for invalid JSON, as ``iter_jsonl``'s): a
    missing or unreadable file, bytes that are not UTF-8, invalid JSON, a value that is not a
    JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid UTF-8 ({e.reason})") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
