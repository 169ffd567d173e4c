"""HTML pages to plain text with the standard library's ``html.parser``.

* Entities and character references are decoded; tags vanish.
* Subtrees that are page furniture are dropped: ``script``, ``style``, ``head`` (its
  ``<title>`` is kept as the title), ``nav``, ``header``, ``footer``, ``svg``, ``form``, and any
  element whose ``class`` or ``id`` is in ``skip_classes`` (navigation bars, tables of
  contents, search boxes; each source passes its own list).
* Block elements (``p``, ``div``, ``h1``..``h6``, ``li``, ``tr``, ``dt``, ``dd``, ``pre``,
  ``table``, ``blockquote``, ...) start new lines; list items get a ``- `` prefix; table cells
  are separated by a space and a table row stays on one line. Whitespace inside normal text is collapsed as a browser would,
  ``<pre>`` keeps its lines.
* Headings are collected, in order, in :attr:`HtmlText.headings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser

from .common import normalize_inline, normalize_text, words

__all__ = ["HtmlText", "html_to_text"]

BLOCK_TAGS = words(
    """p div br hr h1 h2 h3 h4 h5 h6 li ul ol dl dt dd tr table thead tbody tfoot pre
    blockquote section article aside main figure figcaption caption address center
    details summary title body html"""
)
DROP_TAGS = words(
    """script style head nav header footer svg form noscript button select textarea
    iframe object map template"""
)
VOID_TAGS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
HEADING_TAGS = frozenset(["h1", "h2", "h3", "h4", "h5", "h6"])
_PARA = "\x03"  # paragraph break marker
_PRE_NL = "\x00"  # newline inside <pre>
_BREAKS = re.compile("[ \n\x03]*[\n\x03][ \n\x03]*")


@dataclass
class HtmlText:
    """Text extracted from one HTML page."""

    title: str
    text: str
    headings: list[str] = field(default_factory=list)


class _Extractor(HTMLParser):
    def __init__(self, skip_classes: Iterable[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_classes = frozenset(skip_classes)
        self.parts: list[str] = []
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.pre = 0
        self.in_title = False
        self.title_parts: list[str] = []
        self.heading: list[str] | None = None
        self.headings: list[str] = []
        self.table = 0
        self.cell = 0
        self.bullet = False

    # -- helpers
    def _newline(self, blank: bool = False) -> None:
        if self.cell and not self.pre:  # blocks inside a table cell stay on the row's line
            self.parts.append(" ")
        else:
            self.parts.append(_PARA if blank else "\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
            return
        if tag in VOID_TAGS:
            if self.skip_tag is None and tag in ("br", "hr"):
                self._newline()
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        attr = dict(attrs)
        classes = set((attr.get("class") or "").split())
        ident = attr.get("id") or ""
        if tag in DROP_TAGS or classes & self.skip_classes or ident in self.skip_classes:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag == "table":
            self.table += 1
            self.cell = 0
        if tag in HEADING_TAGS:
            self.heading = []
        if tag in ("td", "th"):
            self.parts.append(" ")
            self.cell += 1
        if tag in BLOCK_TAGS:
            blank = tag in HEADING_TAGS or tag in (
                "p",
                "pre",
                "table",
                "blockquote",
                "dl",
                "ul",
                "ol",
            )
            self._newline(blank=blank and (not self.table or tag == "table"))
        if tag == "li":
            self.bullet = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag == "table" and self.table:
            self.table -= 1
            self.cell = 0
        if tag in ("td", "th") and self.cell:
            self.cell -= 1
        if tag in HEADING_TAGS and self.heading is not None:
            h = normalize_inline("".join(self.heading))
            if h:
                self.headings.append(h)
            self.heading = None
        if tag in BLOCK_TAGS:
            blank = tag in HEADING_TAGS or tag in ("p", "pre", "table", "blockquote")
            self._newline(blank=blank and (not self.table or tag == "table"))

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.skip_tag is not None:
            return
        if self.heading is not None:
            self.heading.append(data)
        if self.bullet and data.strip():
            self.parts.append("- ")
            self.bullet = False
            data = data.lstrip()
        if self.pre:
            self.parts.append(data.replace("\n", _PRE_NL))  # protected newlines
        else:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(
    page: str, skip_classes: Iterable[str] = (), drop_lines: re.Pattern[str] | None = None
) -> HtmlText:
    """Extract title, text and headings from the HTML string ``page`` (see the module doc).

    ``drop_lines`` removes whole output lines it matches (e.g. a source's diagram labels).
    """
    parser = _Extractor(skip_classes)
    parser.feed(page)
    parser.close()
    raw = _BREAKS.sub(lambda m: "\n\n" if _PARA in m.group(0) else "\n", "".join(parser.parts))
    lines = []
    for ln in raw.split("\n"):
        if _PRE_NL in ln:  # preformatted: keep its lines, strip only the outer edges
            lines.append(ln.replace(_PRE_NL, "\n").strip("\n"))
        elif drop_lines is None or not drop_lines.match(ln.strip()):
            lines.append(ln.strip())
    text = normalize_text("\n".join(lines))
    return HtmlText(
        title=normalize_inline("".join(parser.title_parts)),
        text=text,
        headings=parser.headings,
    )
