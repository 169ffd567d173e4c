"""roff man pages, rendered to plain text with ``man -l`` (Debian package ``man-db``, which
drives ``groff`` from ``groff-base``).

Pages are rendered with ``MANWIDTH=10000``, no hyphenation and no justification, so every
filled paragraph comes out as one line while ``.nf`` blocks (synopses, code) keep their lines.
The running header and footer are removed; section headings (``NAME``, ``SYNOPSIS``, ...) are
kept as lines of their own, body text is dedented.

Pages that are only a link to another page (a symlink, or a file whose only request is
``.so man3/other.3``) are not documents; they are recorded in the target's
``meta["aliases"]``.

One document per page: ``id`` ``man:<name>.<section>`` (``man:open.2``,
``man:warnings::register.3perl``), ``title`` ``name(section)``; ``meta``: ``section``,
``name_line`` (the NAME section as one line), ``names`` and ``description`` (its two halves
around `` - ``), ``sections`` (the section headings in order), ``manual`` (header's centre,
e.g. ``System Calls Manual``), ``footer`` (e.g. ``Linux man-pages 6.03 2023-02-05``),
``aliases``, ``path``.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from diffembed.formats.corpus import Document

from .common import normalize_inline, normalize_text

log = logging.getLogger(__name__)

MAN_WIDTH = 10000
_COMPRESSED = (".gz", ".bz2", ".xz", ".lzma", ".Z")
_FIELDS = re.compile(r"\s{3,}")


def page_name(path: str | Path) -> tuple[str, str]:
    """``/usr/share/man/man3/ld.so.8.gz`` -> ``("ld.so", "8")``; section from the file name."""
    name = Path(path).name
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    stem, dot, section = name.rpartition(".")
    if not dot:
        return name, ""
    return stem, section


def _open_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def so_target(path: str | Path) -> str | None:
    """The target of a page that is only a ``.so other/page.N`` include, else ``None``."""
    try:
        head = _open_text(Path(path))[:4096]
    except OSError:
        return None
    requests = [
        ln.strip()
        for ln in head.splitlines()
        if ln.strip() and not ln.startswith(('.\\"', "'\\\"", '.\\\\"', '\\"'))
    ]
    if len(requests) == 1 and requests[0].startswith(".so "):
        return requests[0][4:].strip()
    return None


def render_man(path: str | Path, timeout: float = 60.0) -> str:
    """Render one man page with ``man -l`` to plain UTF-8 text (very long lines, see module)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "MANWIDTH": str(MAN_WIDTH),
        "MAN_DISABLE_SECCOMP": "1",
    }
    proc = subprocess.run(
        ["man", "--no-hyphenation", "--no-justification", "-l", str(path)],
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 and not proc.stdout:
        raise RuntimeError(
            f"man -l {path} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    out = proc.stdout.decode("utf-8", errors="replace")
    # man-db strips overstrike when writing to a pipe; be safe anyway.
    return re.sub(r".\x08", "", out)


_BOX = re.compile("[\u2500-\u257f]")  # box drawing: table rules from tbl
_RULE_LINE = re.compile(r"^[\s+|=_-]*$")
MAX_INDENT = 80  # centred tables come out thousands of columns to the right at MANWIDTH


def parse_rendered(rendered: str) -> tuple[str, dict[str, object]]:
    """Split a rendered page into clean text and meta (``sections``, ``name_line``, ...).

    Table rules (box-drawing characters and ASCII ``+---+`` lines) are removed and very deep
    indentation (centred tables) is brought back to the body's level.
    """
    lines = []
    for ln in rendered.split("\n"):
        if _BOX.search(ln):
            indent = len(ln) - len(ln.lstrip())
            ln = " " * indent + _BOX.sub(" ", ln).strip()
            if not ln.strip():
                continue
        elif ln.strip() and _RULE_LINE.match(ln) and sum(c in "+=-_" for c in ln) >= 3:
            continue
        lines.append(ln)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    meta: dict[str, object] = {"manual": "", "footer": ""}
    if lines and re.match(r"^\S.*\)\s*$", lines[0].strip()) and _FIELDS.search(lines[0]):
        fields = _FIELDS.split(lines[0].strip())
        meta["manual"] = " ".join(fields[1:-1]) if len(fields) > 2 else ""
        lines.pop(0)
    if lines and re.search(r"\S+\([^()\s]*\)\s*$", lines[-1]) and _FIELDS.search(lines[-1]):
        fields = _FIELDS.split(lines[-1].strip())
        meta["footer"] = " ".join(fields[:-1])
        lines.pop()
    sections: list[str] = []
    indents = Counter(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip() and ln[0] == " ")
    body_indent = indents.most_common(1)[0][0] if indents else 0
    out: list[str] = []
    current = ""
    name_lines: list[str] = []
    for ln in lines:
        if not ln.strip():
            out.append("")
            continue
        indent = len(ln) - len(ln.lstrip())
        if indent == 0:
            current = normalize_inline(ln)
            sections.append(current)
            out.append(current)
            continue
        if current.upper() == "NAME":
            name_lines.append(ln.strip())
        rel = indent - body_indent if indent <= MAX_INDENT else 0
        out.append(" " * max(0, rel) + ln.strip())
    text = normalize_text("\n".join(out))
    name_line = normalize_inline(" ".join(name_lines))
    names_part, sep, description = name_line.partition(" - ")
    if not sep:
        names_part, sep, description = name_line.partition(" \u2014 ")
    meta.update(
        {
            "sections": sections,
            "name_line": name_line,
            "names": [n.strip() for n in names_part.split(",") if n.strip()] if sep else [],
            "description": description.strip(),
        }
    )
    return text, meta


def extract_man_pages(
    paths: Iterable[str | Path],
    source: str,
    root: str | Path = "/",
    workers: int | None = None,
) -> Iterator[Document]:
    """Render and yield the man pages among ``paths`` (links become aliases, see module)."""
    root = Path(root)
    pages: list[Path] = []
    aliases: dict[str, list[str]] = {}
    for p in sorted(set(map(str, paths))):
        path = Path(p)
        if not path.is_file():
            continue
        name, section = page_name(path)
        if not section:
            continue
        alias = f"{name}({section})"
        if path.is_symlink():
            target = path.resolve()
            aliases.setdefault(str(target), []).append(alias)
            continue
        so = so_target(path)
        if so is not None:
            cands = [path.parent.parent / so]
            cands += [cands[0].with_name(cands[0].name + ext) for ext in _COMPRESSED]
            target_path = next((c for c in cands if c.exists()), None)
            if target_path is not None:
                aliases.setdefault(str(target_path.resolve()), []).append(alias)
                continue
        pages.append(path)
    workers = workers or max(1, os.cpu_count() or 1)

    def _one(path: Path) -> tuple[Path, str | None]:
        try:
            return path, render_man(path)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            log.warning("could not render %s: %s", path, exc)
            return path, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, rendered in pool.map(_one, pages):
            if not rendered:
                continue
            text, meta = parse_rendered(rendered)
            if not text.strip():
                continue
            name, section = page_name(path)
            try:
                rel = "/" + str(path.relative_to(root))
            except ValueError:
                rel = str(path)
            meta.update(
                {
                    "section": section,
                    "aliases": sorted(set(aliases.get(str(path.resolve()), []))),
                    "path": rel,
                }
            )
            yield Document(
                id=f"man:{name}.{section}",
                source=source,
                title=f"{name}({section})",
                text=text,
                meta=meta,
            )
