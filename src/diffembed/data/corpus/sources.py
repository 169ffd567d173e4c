"""The Debian packages the corpus is built from, and which format module reads each.

A :class:`Source` names the packages it needs and a function that yields its documents.
Installed files are found through dpkg's own file lists (``var/lib/dpkg/info/<pkg>.list``)
under a ``root`` directory (``/`` normally; tests point it at a fixture tree), so a package
counts as installed when its list exists, and each source sees exactly its package's files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from diffembed.errors import ConfigError, InputNotFoundError
from diffembed.formats.corpus import Document

from .common import words
from .dictd import extract_dictd
from .htmltext import html_to_text
from .man import extract_man_pages
from .plaintext import extract_text_files, parse_bible, read_text_file, run_bible
from .pod import extract_pod_files
from .rest import rst_to_text
from .vimhelp import extract_vim_help
from .wordnet import extract_wordnet

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What an extractor gets: the root directory, the files of each of its packages (absolute
    paths under ``root``) and a worker count for subprocess-bound work."""

    root: Path
    files: dict[str, list[Path]]
    workers: int

    def all_files(self) -> list[Path]:
        """Every file of every package of the source, sorted."""
        return sorted({p for paths in self.files.values() for p in paths})

    def matching(self, pattern: str) -> list[Path]:
        """Files (as listed by dpkg, re-rooted) whose dpkg path matches the regex ``pattern``."""
        rx = re.compile(pattern)
        out = []
        for p in self.all_files():
            if rx.search("/" + str(p.relative_to(self.root))):
                out.append(p)
        return out


@dataclass(frozen=True)
class Source:
    """A corpus source: its name (also the ``source`` field of its documents), the Debian
    packages it needs (all of them), the format it is read as, and its extractor."""

    name: str
    packages: tuple[str, ...]
    format: str
    extract: Callable[[Context], Iterator[Document]]
    min_tokens: int = 1


def package_files(package: str, root: str | Path = "/") -> list[Path] | None:
    """Files of an installed package (absolute, re-rooted under ``root``); ``None`` if the
    package is not installed (no dpkg file list)."""
    root = Path(root)
    info = root / "var/lib/dpkg/info"
    lists = [info / f"{package}.list", *sorted(info.glob(f"{package}:*.list"))]
    found = [p for p in lists if p.is_file()]
    if not found:
        return None
    out: list[Path] = []
    for lst in found:
        for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line.startswith("/") or line == "/.":
                continue
            out.append(root / line.lstrip("/"))
    return sorted(set(out))


def package_version(package: str, root: str | Path = "/") -> str:
    """The installed version from ``var/lib/dpkg/status`` (``""`` if unknown)."""
    status = Path(root) / "var/lib/dpkg/status"
    if not status.is_file():
        return ""
    current = None
    with status.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("Package: "):
                current = line[9:].strip()
            elif current == package and line.startswith("Version: "):
                return line[9:].strip()
    return ""


# --------------------------------------------------------------------------- extractors


def _wordnet(ctx: Context) -> Iterator[Document]:
    data = ctx.matching(r"/wordnet/data\.noun$")
    if not data:
        raise InputNotFoundError("wordnet-base lists no data.noun")
    yield from extract_wordnet(data[0].parent)


def _dictd(name: str) -> Callable[[Context], Iterator[Document]]:
    def run(ctx: Context) -> Iterator[Document]:
        index = ctx.matching(rf"/{name}\.index$")
        data = ctx.matching(rf"/{name}\.dict(\.dz)?$")
        if not index or not data:
            raise InputNotFoundError(f"no {name}.index / {name}.dict(.dz) in the package")
        yield from extract_dictd(index[0], data[0], name)

    return run


def _rst_docs(
    ctx: Context, source: str, namespace: str, base_rx: str, files: list[Path]
) -> Iterator[Document]:
    for path in files:
        dpkg_path = "/" + str(path.relative_to(ctx.root))
        m = re.search(base_rx, dpkg_path)
        rel = dpkg_path[m.end() :] if m else path.name
        key = re.sub(r"(\.rst)?(\.txt)?(\.gz)?$", "", rel)
        text, meta = rst_to_text(read_text_file(path))
        if not text.strip():
            continue
        title = str(meta.pop("title")) or key.rsplit("/", 1)[-1]
        meta["path"] = dpkg_path
        meta["doc_path"] = key
        yield Document(id=f"{namespace}:{key}", source=source, title=title, text=text, meta=meta)


def _python_doc(ctx: Context) -> Iterator[Document]:
    files = [
        p
        for p in ctx.matching(r"/html/_sources/.*\.rst\.txt$")
        if not re.search(r"/_sources/(includes/|whatsnew/changelog)", str(p))
    ]
    yield from _rst_docs(ctx, "python-doc", "python", r"/html/_sources/", files)


def _linux_doc(ctx: Context) -> Iterator[Document]:
    base = r"/Documentation/"
    rst = [
        p for p in ctx.matching(r"/Documentation/.*\.rst(\.gz)?$") if "/translations/" not in str(p)
    ]
    yield from _rst_docs(ctx, "linux-doc", "linux", base, rst)
    txt = [
        p
        for p in ctx.matching(r"/Documentation/.*\.txt(\.gz)?$")
        if not re.search(r"/Documentation/(translations|devicetree|features)/", str(p))
    ]
    if txt:
        base_dir = Path(str(txt[0]).split("/Documentation/")[0]) / "Documentation"
        yield from extract_text_files(txt, "linux-doc", "linux", base_dir)


def _perl_doc(ctx: Context) -> Iterator[Document]:
    yield from extract_pod_files(ctx.matching(r"/pod/[^/]+\.pod$"), "perl-doc", ctx.root)
    yield from extract_man_pages(
        ctx.matching(r"/share/man/man\w+/[^/]+$"), "perl-doc", ctx.root, ctx.workers
    )


def _man(package: str) -> Callable[[Context], Iterator[Document]]:
    def run(ctx: Context) -> Iterator[Document]:
        pages = ctx.matching(r"/share/man/man\w+/[^/]+$")
        yield from extract_man_pages(pages, package, ctx.root, ctx.workers)

    return run


def _vim_doc(ctx: Context) -> Iterator[Document]:
    yield from extract_vim_help(ctx.matching(r"/doc/vim/html/[^/]+\.html$"), "vim-doc", ctx.root)


#: Classes/ids of page furniture in the HTML sources (navigation, tables of contents, search).
HTML_SKIP = words(
    """navheader navfooter docnav toc list-of-tables list-of-figures list-of-examples
    searchmenu submenu searchbox menu mainmenu logo tagline fancy_toc fancy_toc_mark
    toc_mk toc_sub banner indexterm nosearch rightsidebar imgcontainer showhide
    mobileonly"""
)


def _html_docs(
    ctx: Context,
    source: str,
    namespace: str,
    files: list[Path],
    base_rx: str,
    drop_lines: re.Pattern[str] | None = None,
) -> Iterator[Document]:
    for path in files:
        dpkg_path = "/" + str(path.relative_to(ctx.root))
        m = re.search(base_rx, dpkg_path)
        rel = dpkg_path[m.end() :] if m else path.name
        key = re.sub(r"(\.en)?\.html?$", "", rel)
        raw = path.read_bytes().decode("utf-8", errors="replace")
        page = html_to_text(raw, HTML_SKIP, drop_lines)
        if not page.text.strip():
            continue
        title = page.title or (page.headings[0] if page.headings else key)
        yield Document(
            id=f"{namespace}:{key}",
            source=source,
            title=title,
            text=page.text,
            meta={"path": dpkg_path, "doc_path": key, "headings": page.headings},
        )


def _postgresql_doc(ctx: Context) -> Iterator[Document]:
    files = [
        p
        for p in ctx.matching(r"/postgresql-doc-\d+/html/[^/]+\.html$")
        if p.name != "bookindex.html"
    ]
    yield from _html_docs(ctx, "postgresql-doc", "postgresql", files, r"/html/")


_SQLITE_DIAGRAM_LABEL = re.compile(r"^[a-z][a-z0-9-]*:$")


def _sqlite_doc(ctx: Context) -> Iterator[Document]:
    files = [
        p
        for p in ctx.matching(r"/doc/sqlite3/.*\.html$")
        if not re.search(r"/doc/sqlite3/(releaselog|syntax|images)/", str(p))
        and p.name not in ("sitemap.html", "keyword_index.html", "toc.html", "docs.html")
    ]
    yield from _html_docs(
        ctx, "sqlite-doc", "sqlite", files, r"/doc/sqlite3/", _SQLITE_DIAGRAM_LABEL
    )


def _debian_handbook(ctx: Context) -> Iterator[Document]:
    files = [
        p
        for p in ctx.matching(r"/html/en-US/[^/]+\.html$")
        if p.name not in ("index.html", "ix01.html")
    ]
    yield from _html_docs(ctx, "debian-handbook", "debian-handbook", files, r"/html/en-US/")


def _debian_reference(ctx: Context) -> Iterator[Document]:
    files = [
        p for p in ctx.matching(r"/debian-reference/[^/]+\.en\.html$") if p.name != "index.en.html"
    ]
    yield from _html_docs(ctx, "debian-reference", "debian-reference", files, r"/debian-reference/")


def _bible(ctx: Context) -> Iterator[Document]:
    data = ctx.matching(r"/bible\.data$")
    if not data:
        raise InputNotFoundError("bible-kjv-text lists no bible.data")
    yield from parse_bible(run_bible(data[0].parent), "bible-kjv")


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("wordnet", ("wordnet-base",), "wordnet", _wordnet),
        Source("gcide", ("dict-gcide",), "dictd", _dictd("gcide")),
        Source("foldoc", ("dict-foldoc",), "dictd", _dictd("foldoc")),
        Source("jargon", ("dict-jargon",), "dictd", _dictd("jargon")),
        Source("python-doc", ("python3.11-doc",), "rest", _python_doc, min_tokens=10),
        Source("linux-doc", ("linux-doc-6.1",), "rest", _linux_doc, min_tokens=10),
        Source("perl-doc", ("perl-doc",), "pod+man", _perl_doc, min_tokens=10),
        Source("vim-doc", ("vim-doc",), "vimhelp", _vim_doc, min_tokens=10),
        Source("postgresql-doc", ("postgresql-doc-15",), "html", _postgresql_doc, min_tokens=20),
        Source("sqlite-doc", ("sqlite3-doc",), "html", _sqlite_doc, min_tokens=20),
        Source("manpages", ("manpages",), "man", _man("manpages"), min_tokens=5),
        Source("manpages-dev", ("manpages-dev",), "man", _man("manpages-dev"), min_tokens=5),
        Source("debian-handbook", ("debian-handbook",), "html", _debian_handbook, min_tokens=20),
        Source(
            "debian-reference", ("debian-reference-en",), "html", _debian_reference, min_tokens=20
        ),
        Source("bible-kjv", ("bible-kjv-text", "bible-kjv"), "text", _bible),
    ]
}

#: The tools (Debian packages) the formats need beyond the data packages.
TOOL_PACKAGES: tuple[str, ...] = ("man-db", "groff-base", "bible-kjv")


def resolve_sources(names: list[str] | None) -> list[Source]:
    """Sources by name (or by one of their package names); all sources for ``None``. Sorted."""
    if not names:
        return [SOURCES[k] for k in sorted(SOURCES)]
    by_package = {p: s for s in SOURCES.values() for p in s.packages[:1]}
    out: dict[str, Source] = {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        src = SOURCES.get(name) or by_package.get(name)
        if src is None:
            raise ConfigError(
                f"unknown corpus source {name!r}; known: {', '.join(sorted(SOURCES))}"
            )
        out[src.name] = src
    return [out[k] for k in sorted(out)]


def all_packages() -> list[str]:
    """Every Debian package the sources and their tools need, sorted."""
    return sorted({p for s in SOURCES.values() for p in s.packages} | set(TOOL_PACKAGES))
