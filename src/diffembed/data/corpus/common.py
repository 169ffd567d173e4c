"""Shared pieces of the corpus builders: text normalisation.

Every format module turns its source into :class:`~diffembed.formats.corpus.Document` objects whose ``text`` has been
passed through :func:`normalize_text`, so all sources share one whitespace convention:

* Unicode NFC, tabs expanded (8 columns), control characters other than newline removed,
  no-break and zero-width spaces turned into plain spaces / removed;
* trailing spaces stripped, runs of two or more spaces *inside* a line collapsed to one
  (leading indentation is kept, so code and nested lists keep their shape), the common
  indentation of all lines removed;
* at most one blank line in a row, no blank lines at the start or end.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "normalize_text",
    "normalize_inline",
    "reflow_paragraphs",
    "words",
]


# Characters removed outright / turned into spaces before anything else.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2007\u202f\u2002\u2003\u2009\u3000\x0b\x0c\r"), " ")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
_BLANKS = re.compile(r"\n{3,}")


def normalize_inline(text: str) -> str:
    """Collapse all whitespace (newlines included) in ``text`` to single spaces and strip it."""
    return " ".join(
        unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH).translate(_SPACES).split()
    )


def normalize_text(text: str) -> str:
    """Normalise whitespace and Unicode of a document body (see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").translate(_ZERO_WIDTH).translate(_SPACES)
    text = _CONTROL.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = line.expandtabs(8).rstrip()
        lines.append(_INNER_SPACES.sub(" ", line))
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln]
    cut = min(indents) if indents else 0
    if cut:
        lines = [ln[cut:] for ln in lines]
    out = "\n".join(lines)
    out = _BLANKS.sub("\n\n", out)
    return out.strip("\n")


def reflow_paragraphs(
    text: str, verbatim_indent: int | None = None, item: re.Pattern[str] | None = None
) -> str:
    """Join hard-wrapped lines so that each paragraph becomes one line.

    Paragraphs are separated by blank lines and, when ``item`` is given, also start at every
    line that ``item`` matches (numbered senses, ``Note:`` labels, ...). A paragraph keeps the
    indentation of its first line. With ``verbatim_indent``, blocks whose lines are all indented
    by at least that many columns are left untouched (examples, tables, code).
    """
    out: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [ln.rstrip() for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        if verbatim_indent is not None and min(_indent(ln) for ln in lines) >= verbatim_indent:
            out.append("\n".join(lines))
            continue
        paras: list[list[str]] = []
        for ln in lines:
            if not paras or (item is not None and item.match(ln)):
                paras.append([ln])
            else:
                paras[-1].append(ln)
        out.append("\n".join(" " * _indent(p[0]) + " ".join(x.strip() for x in p) for p in paras))
    return "\n\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` as a frozenset (for keyword tables)."""
    return frozenset(text.split())
