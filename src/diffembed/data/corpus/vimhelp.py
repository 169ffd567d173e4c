"""Vim help files (the ``:help`` format), from ``vim-doc``'s HTML rendering or plain ``.txt``.

``vim-doc`` ships each help file as HTML whose ``<pre>`` holds the help text verbatim (links
and anchors wrapped in ``<a>``/``<b>``); the ``<pre>`` is turned back into help text, then the
help markup is removed:

* the first line (``*usr_01.txt*  For Vim version 9.0.  Last change: 2019 Nov 21``) goes to
  ``meta["help_file"]`` / ``meta["last_change"]``; the ``VIM ... MANUAL by ...`` banner, chapter
  navigation lines and the trailing ``vim:tw=78:...`` modeline are dropped;
* ``*tag*`` anchors vanish (their names go to ``meta["tags"]``; user-manual section numbers
  such as ``*01.1*`` stay as text), ``|link|`` -> ``link``,
  ```command``` -> ``command``, heading lines lose their trailing `` ~`` (they and all-capitals heading
  lines are collected in ``meta["headings"]``), example markers (a trailing ``>`` and a leading ``<``) are removed,
  ``====``/``----`` separator lines vanish.

One document per help file: ``id`` ``vim:<file stem>`` (``vim:usr_01``); ``title`` the first
line of text after the banner (``About the manuals``, ``Automatic commands``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from diffembed.formats.corpus import Document

from .common import normalize_inline, normalize_text
from .htmltext import html_to_text

_HEADER = re.compile(r"^\*([^*\s]+\.txt)\*\s+(.*?)$")
_LAST_CHANGE = re.compile(r"Last change:\s*(.+?)\s*$")
_TAG = re.compile(r"(?:(?<=\s)|^)\*([^*\s|]+)\*(?=\s|$)", re.M)
_LINK = re.compile(r"\|([^|\s]+)\|")
_BACKTICK = re.compile(r"`([^`\n]+)`")
_BANNER = re.compile(r"^\s*VIM (?:REFERENCE|USER) MANUAL\b.*$")
_NAV = re.compile(r"^\s*(?:Next chapter|Previous chapter|Table of contents|Copyright):")
_MODELINE = re.compile(r"^\s*vim:\s*(?:set\s+)?(?:[a-z]+=?[^:\s]*:?)+\s*$")
_SECTION_NO = re.compile(r"^\d+\.\d+$")  # user-manual section tags (*01.1*) stay as text
_CAPS_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,'&/-]{3,}$")
_SEPARATOR = re.compile(r"^[=\-]{10,}\s*$")


def clean_vim_help(raw: str) -> tuple[str, str, dict[str, object]]:
    """Clean Vim help text; return ``(title, text, meta)`` (see the module docstring)."""
    lines = raw.replace("\r\n", "\n").expandtabs(8).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    meta: dict[str, object] = {"help_file": "", "last_change": ""}
    if lines:
        m = _HEADER.match(lines[0].strip())
        if m:
            meta["help_file"] = m.group(1)
            lc = _LAST_CHANGE.search(m.group(2))
            meta["last_change"] = lc.group(1) if lc else ""
            lines.pop(0)
    tags: list[str] = []
    headings: list[str] = []
    out: list[str] = []
    for line in lines:
        if _BANNER.match(line) or _NAV.match(line) or _MODELINE.match(line):
            continue
        if _SEPARATOR.match(line):
            out.append("")
            continue
        tags.extend(_TAG.findall(line))
        line = _TAG.sub(lambda m: m.group(1) if _SECTION_NO.match(m.group(1)) else "", line)
        line = _LINK.sub(r"\1", line)
        line = _BACKTICK.sub(r"\1", line)
        stripped = line.rstrip()
        if stripped.endswith(" ~") or stripped == "~":
            stripped = stripped[:-1].rstrip()
            if stripped.strip():
                headings.append(normalize_inline(stripped))
        elif _CAPS_HEADING.match(stripped.strip()) and len(stripped.strip().split()) <= 8:
            headings.append(normalize_inline(stripped))
        if stripped.endswith(" >") or stripped == ">":
            stripped = stripped[:-1].rstrip()
        if re.match(r"^<(\s|$)", stripped):
            stripped = " " + stripped[1:]
        out.append(stripped)
    text = normalize_text("\n".join(out))
    title = next((normalize_inline(ln) for ln in text.split("\n") if ln.strip()), "")
    meta.update({"tags": tags, "headings": headings})
    return title, text, meta


def vimdoc_html_to_help(page: str) -> str:
    """The help text inside a ``vim-doc`` HTML page (the content of its ``<pre>`` blocks)."""
    blocks = re.findall(r"<pre[^>]*>(.*?)</pre>", page, flags=re.S | re.I)
    return "\n".join(html_to_text(f"<pre>{b}</pre>").text for b in blocks)


def _read(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def extract_vim_help(
    paths: Iterable[str | Path], source: str, root: str | Path = "/"
) -> Iterator[Document]:
    """Yield one document per Vim help file among ``paths`` (``*.html`` from vim-doc, ``*.txt``)."""
    for p in sorted(set(map(str, paths))):
        path = Path(p)
        if not path.is_file() or path.suffix not in (".html", ".txt"):
            continue
        if path.name in ("index.html", "vimindex.html", "tags.html") or path.stem == "tags":
            continue
        raw = _read(path)
        if path.suffix == ".html":
            if "<pre" not in raw.lower():
                continue
            raw = vimdoc_html_to_help(raw)
        title, text, meta = clean_vim_help(raw)
        if not text.strip():
            continue
        try:
            meta["path"] = "/" + str(path.relative_to(root))
        except ValueError:
            meta["path"] = str(path)
        yield Document(
            id=f"vim:{path.stem}", source=source, title=title or path.stem, text=text, meta=meta
        )
