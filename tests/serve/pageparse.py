"""Reading the search page's HTML back in tests (``html.parser``): its hits, error, facts, form
controls and the URLs it refers to, as a browser would see them (entities decoded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class ParsedPage:
    """What a test checks of one page."""

    hits: list[dict] = field(default_factory=list)  # data-* of each li.hit + title/snippet/marks
    error: str | None = None
    facts: dict[str, str] = field(default_factory=dict)  # data-fact -> text
    facts_text: str = ""
    title: str = ""
    labels: set[str] = field(default_factory=set)  # the ``for`` of every <label>
    controls: dict[str, str] = field(default_factory=dict)  # id -> tag of input/select/button
    hidden: dict[str, str] = field(default_factory=dict)  # hidden inputs: name -> value
    values: dict[str, str] = field(default_factory=dict)  # input id -> value
    scripts: list[str] = field(default_factory=list)  # the src of every <script>
    urls: list[str] = field(default_factory=list)  # every href, src and action
    forms: list[str] = field(default_factory=list)  # the id of every form
    tags: list[str] = field(default_factory=list)  # every start tag, in order


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self.capture: list[tuple[str, str]] = []  # (what, end tag) being captured
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        page = self.page
        page.tags.append(tag)
        for name in ("href", "src", "action"):
            if name in a:
                page.urls.append(a[name])
        if tag == "script":
            page.scripts.append(a.get("src", ""))
        if tag == "label":
            page.labels.add(a.get("for", ""))
        if tag == "form":
            page.forms.append(a.get("id", ""))
        if tag in ("input", "select", "button"):
            if a.get("type") == "hidden":
                page.hidden[a.get("name", "")] = a.get("value", "")
            elif "id" in a:
                page.controls[a["id"]] = tag
                page.values[a["id"]] = a.get("value", "")
        if tag == "li" and "hit" in a.get("class", "").split():
            page.hits.append(
                {
                    "rank": int(a["data-rank"]),
                    "id": a["data-id"],
                    "score": float(a["data-score"]),
                    "chunk": int(a["data-chunk"]),
                    "marks": [],
                }
            )
        what = None
        if a.get("id") == "error":
            what = "error"
        elif tag == "title":
            what = "title"
        elif a.get("id") == "facts":
            what = "facts"
        elif tag == "dd" and "data-fact" in a:
            what = "fact:" + a["data-fact"]
        elif page.hits and a.get("class") in ("title", "snippet", "where"):
            what = "hit:" + a["class"]
        elif tag == "mark":
            what = "mark"
        if what is not None:
            self.capture.append((what, tag))
            self.text[what] = []

    def handle_endtag(self, tag: str) -> None:
        if self.capture and self.capture[-1][1] == tag:
            what, _ = self.capture.pop()
            text = "".join(self.text.pop(what))
            page = self.page
            if what == "error":
                page.error = text
            elif what == "title":
                page.title = text
            elif what == "facts":
                page.facts_text = text
            elif what.startswith("fact:"):
                page.facts[what[5:]] = text
            elif what.startswith("hit:"):
                page.hits[-1][what[4:]] = text
            elif what == "mark" and page.hits:
                page.hits[-1]["marks"].append(text)

    def handle_data(self, data: str) -> None:
        for what, _ in self.capture:
            self.text[what].append(data)


def parse_page(html: str) -> ParsedPage:
    """``html`` (one search page) read back."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page
