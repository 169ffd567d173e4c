"""reStructuredText (Sphinx flavour) to plain text, for the Python and Linux kernel docs.

What happens to the markup:

* section titles (underlined, or over- and underlined) become plain lines and are collected
  in ``meta["headings"]``; transitions, grid/simple table borders and comments vanish;
* paragraphs are joined into single lines; list markers are kept (``- ``, ``1.``); literal
  blocks (after ``::``), doctest blocks and code directives keep their lines;
* inline markup: roles (``:func:`~os.path.join``` -> ``join()``, ``:ref:`text <label>``` ->
  ``text``, ``:pep:`8``` -> ``PEP 8``), ````literals````, ``*emphasis*``, ``**strong**``,
  ```links <url>`_``, ``name_``, ``|substitutions|``, footnote references and backslash
  escapes are reduced to their text;
* directives: signature directives (``function``, ``class``, ``c:function``, ``option``, ...)
  keep their signatures as a line followed by their content; admonitions and version notes
  keep their content (``versionadded:: 3.2`` -> ``New in version 3.2.``); code directives
  keep their code; directives that only pull in or point at other material (``toctree``,
  ``index``, ``include``, ``literalinclude``, ``image``, ``raw``, ``kernel-doc``, ...) vanish.
  A ``module`` directive's name and ``:synopsis:`` go to ``meta["module"]`` /
  ``meta["synopsis"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .common import normalize_inline, normalize_text, words

__all__ = ["rst_to_text", "clean_inline"]

DROP_DIRECTIVES = words(
    """toctree index highlight sectionauthor moduleauthor codeauthor literalinclude include
    image raw kernel-doc kernel-include kernel-abi kernel-feat kernel-render kernel-figure
    tabularcolumns contents sectnum currentmodule testsetup testcleanup cssclass namespace
    namespace-push namespace-pop default-role role meta title header footer miscnews
    limited-api-list program audit-event graphviz digraph graph target-notes autosummary
    automodule autoclass autofunction highlightlang program-output"""
)
CODE_DIRECTIVES = words(
    """code-block code sourcecode doctest testcode testoutput parsed-literal productionlist
    math literal-block"""
)
SIGNATURE_DIRECTIVES = words(
    """function method class data attribute exception decorator decoratormethod classmethod
    staticmethod coroutinefunction coroutinemethod awaitablefunction awaitablemethod
    abstractmethod property describe object option cmdoption envvar opcode pdbcommand macro
    member var type struct union enum enumerator fixture module-function"""
)
NO_ARGUMENT_DIRECTIVES = words(
    """note warning tip hint important caution attention danger error seealso impl-detail
    epigraph highlights pull-quote compound container glossary"""
)
TABLE_DIRECTIVES = frozenset(["list-table", "flat-table", "csv-table", "table"])
VERSION_LABELS = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}.",
    "deprecated": "Deprecated since version {}.",
    "deprecated-removed": "Deprecated since version {}, will be removed in version {}.",
}
DROP_ROLES = frozenset(["index", "cspan", "rspan"])

_ADORN = re.compile(r"^([!-/:-@\[-`{-~])\1+$")
_DIRECTIVE = re.compile(r"^\.\.\s+(?:\|[^|]+\|\s+)?([\w:.-]+)::(?:\s+(.*))?$")
_LIST_MARK = re.compile(
    r"^(?:[-*+\u2022]\s+|(?:\d+|[a-zA-Z]|#|[ivxlcIVXLC]+)[.)]\s+|\((?:\d+|[a-zA-Z]|#)\)\s+)"
)
_FIELD_START = re.compile(r"^:[\w -]+:(\s|$)")
_FIELD = re.compile(r"^:([^:`]+(?:`[^`]*`[^:`]*)*):(?:\s+(.*))?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_adorn(s: str, min_len: int = 2) -> bool:
    return len(s) >= min_len and bool(_ADORN.match(s))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """First index at or after ``start`` whose line is non-blank and indented <= ``indent``."""
    j = start
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        j += 1
    return j


def _dedent(lines: list[str]) -> list[str]:
    cut = min((_indent(ln) for ln in lines if ln.strip()), default=0)
    out = [ln[cut:] if ln.strip() else "" for ln in lines]
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out


# --------------------------------------------------------------------------- inline markup

_LITERAL = re.compile(r"``(.+?)``", re.S)
_ROLE = re.compile(r":((?:[\w.+-]+:)*[\w.+-]+):`((?:[^`\\]|\\.)+)`(?!_)")
_TITLE_TARGET = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
_LINK = re.compile(r"`((?:[^`\\]|\\.)+)`__?")
_INTERPRETED = re.compile(r"(?<![\w`])`((?:[^`\\]|\\.)+)`(?![\w`])")
_FOOTNOTE_REF = re.compile(r"\s?\[(?:#[\w-]*|\*|\d+|[A-Za-z][\w.-]*)\]_")
_STRONG = re.compile(r"(?<![\w*])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])", re.S)
_EMPH = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", re.S)
_SUBST = re.compile(r"(?<![\w|])\|(\w[\w .:-]*?)\|(?:__?)?(?![\w|])")
_REFNAME = re.compile(r"\b([A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?)__?(?=[\s.,;:!?)\]]|$)")
_INLINE_TARGET = re.compile(r"_`([^`]+)`")


def _role_text(role: str, content: str) -> str:
    name = role.split(":")[-1]
    if name in DROP_ROLES:
        return ""
    content = content.replace("\\`", "`")
    m = _TITLE_TARGET.match(content)
    if m and m.group(1).strip() and name not in ("abbr",):
        return m.group(1).strip()
    if m and not m.group(1).strip():
        content = m.group(2)
    if name == "pep":
        return f"PEP {content.split('#')[0]}"
    if name == "rfc":
        return f"RFC {content.split('#')[0]}"
    if name in ("kbd", "file", "samp", "abbr", "math", "term", "dfn", "guilabel", "menuselection"):
        return content.lstrip("!")
    if content.startswith("~"):
        content = content[1:].rsplit(".", 1)[-1]
    content = content.lstrip("!")
    if name in ("func", "meth") and not content.endswith(")"):
        content += "()"
    return content


def clean_inline(text: str) -> str:
    """Reduce reST/Sphinx inline markup in ``text`` to plain text (see the module docstring)."""
    keep: list[str] = []

    def _protect(s: str) -> str:
        keep.append(s)
        return f"\x01{len(keep) - 1}\x02"

    text = _LITERAL.sub(lambda m: _protect(m.group(1)), text)
    text = _ROLE.sub(lambda m: _protect(_role_text(m.group(1), m.group(2))), text)
    text = _INLINE_TARGET.sub(r"\1", text)

    def _link(m: re.Match[str]) -> str:
        inner = m.group(1)
        t = _TITLE_TARGET.match(inner)
        if t:
            return _protect(t.group(1).strip() or t.group(2))
        return _protect(inner)

    text = _LINK.sub(_link, text)
    text = _INTERPRETED.sub(lambda m: _protect(m.group(1)), text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = _SUBST.sub(r"\1", text)
    text = _REFNAME.sub(r"\1", text)
    text = re.sub(r"\\ ", "", text)
    text = re.sub(r"\\([^\w\s])", r"\1", text)
    for _ in range(3):  # protected pieces may nest
        if "\x01" not in text:
            break
        text = re.sub(r"\x01(\d+)\x02", lambda m: keep[int(m.group(1))], text)
    return text


# --------------------------------------------------------------------------- blocks


class _State:
    def __init__(self) -> None:
        self.headings: list[str] = []
        self.module = ""
        self.synopsis = ""


def _split_options(body: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Split a directive's block into argument continuation lines, options and content."""
    cut = min((_indent(ln) for ln in body if ln.strip()), default=0)
    body = [ln[cut:] if ln.strip() else "" for ln in body]
    args: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while (
        i < len(body)
        and body[i].strip()
        and not _FIELD.match(body[i])
        and not body[i].lstrip().startswith(".. ")
    ):
        args.append(body[i].strip())
        i += 1
    if not args and i < len(body) and not body[i].strip():
        i += 1  # no argument lines; options may still follow a blank line? (not in reST)
        return args, opts, body[i:]
    while i < len(body) and body[i].strip() and _FIELD.match(body[i]):
        m = _FIELD.match(body[i])
        assert m is not None
        opts[m.group(1).strip()] = (m.group(2) or "").strip()
        i += 1
        while i < len(body) and body[i].strip() and _indent(body[i]) > 0:
            i += 1
    return args, opts, body[i:]


def _directive(name: str, arg: str, body: list[str], st: _State, ind: int) -> list[str]:
    short = name.split(":")[-1].lower()
    if short in DROP_DIRECTIVES:
        return []
    if short in NO_ARGUMENT_DIRECTIVES:  # the whole block (and the line's rest) is content
        return _convert([" " * 4 + arg.strip(), *body] if arg.strip() else body, st, ind)
    args, opts, content = _split_options(body)
    first_args = [a for a in [arg.strip(), *args] if a]
    pad = " " * ind
    if short == "module" or name == "py:module":
        if not st.module and first_args:
            st.module = first_args[0]
            st.synopsis = normalize_inline(clean_inline(opts.get("synopsis", "")))
        return []
    if short in CODE_DIRECTIVES:
        code = [] if short in ("code-block", "code", "sourcecode") else first_args
        lines = code + _dedent(content)
        if short == "parsed-literal":
            lines = [clean_inline(ln) for ln in lines]
        block = "\n".join(pad + "    " + ln if ln else "" for ln in lines).rstrip()
        return [block] if block.strip() else []
    if short in SIGNATURE_DIRECTIVES:
        sigs = [pad + normalize_inline(clean_inline(a)).rstrip("\\").strip() for a in first_args]
        return [s for s in sigs if s.strip()] + _convert(content, st, ind + 4)
    if short in VERSION_LABELS:
        tokens = " ".join(first_args).split() + ["", ""]
        n_versions = 2 if short == "deprecated-removed" else 1
        label = VERSION_LABELS[short].format(*tokens[:n_versions])
        rest = " ".join(tokens[n_versions:]).strip()
        head = label if not rest else f"{label[:-1]}: {clean_inline(rest)}"
        return [pad + normalize_inline(head), *_convert(content, st, ind)]
    if short in TABLE_DIRECTIVES:
        rows: list[str] = []
        if first_args:
            rows.append(pad + normalize_inline(clean_inline(" ".join(first_args))))
        if short == "csv-table":
            for ln in _dedent(content):
                if ln.strip():
                    cells = [c.strip().strip('"') for c in re.split(r'",\s*"|,\s*(?=")', ln)]
                    rows.append(pad + normalize_inline(clean_inline(" ".join(cells))))
            return rows
        stripped = [re.sub(r"^(\s*)(?:[-*] )+", r"\1", ln) for ln in content]
        return rows + _convert(stripped, st, ind)
    if short == "availability":
        return [pad + "Availability: " + normalize_inline(clean_inline(" ".join(first_args)))]
    # admonitions, rubric, topic, sidebar, glossary, only, figure (caption), unknown: keep text
    head: list[str] = []
    if first_args and short not in ("only", "ifconfig", "figure", "glossary", "container"):
        head = [pad + normalize_inline(clean_inline(" ".join(first_args)))]
    return head + _convert(content, st, ind)


_GRID_BORDER = re.compile(r"^\+[-=+]+\+$")


def _grid_row(cells: list[list[str]], pad: str) -> list[str]:
    """One output line for a grid-table row, cell texts joined column by column."""
    texts = [normalize_inline(clean_inline(" ".join(c))) for c in cells]
    line = " ".join(t for t in texts if t)
    return [pad + line] if line else []


# Each block handler looks at ``lines[i]`` (not blank, indented by ``ind``): when the block is
# its kind, it appends the block's text to ``out`` and returns the index after the block, else
# None. ``pad`` is the output indentation of the block's level.
def _markup_block(
    lines: list[str], i: int, ind: int, st: _State, out: list[str], out_indent: int
) -> int | None:
    """Explicit markup: directives, comments, targets, footnotes, substitution defs."""
    s = lines[i].strip()
    if not (s == ".." or s.startswith(".. ")):
        return None
    j = _block_end(lines, i + 1, ind)
    body = lines[i + 1 : j]
    m = _DIRECTIVE.match(s)
    if m and not s.startswith(".. |"):
        out += _directive(m.group(1), m.group(2) or "", body, st, out_indent + ind)
    elif re.match(r"^\.\. \[[^\]]+\]", s):  # footnote / citation: keep its text
        first = re.sub(r"^\.\. \[[^\]]+\]\s*", "", s)
        out += _convert([first, *[ln[ind:] for ln in body]], st, out_indent + ind)
    return j


def _title_block(lines: list[str], i: int, ind: int, st: _State, out: list[str]) -> int | None:
    """A section title with an overline or an underline (recorded in ``st.headings``); a
    transition or stray adornment line is dropped."""
    s = lines[i].strip()
    n = len(lines)
    if _is_adorn(s, 3) and i + 2 < n and lines[i + 1].strip() and lines[i + 2].strip() == s:
        title = normalize_inline(clean_inline(lines[i + 1].strip()))
        st.headings.append(title)
        out.append(title)
        return i + 3
    if (
        i + 1 < n
        and not _is_adorn(s)
        and _indent(lines[i + 1]) == ind
        and _is_adorn(lines[i + 1].strip(), min(3, len(s)))
        and len(lines[i + 1].strip()) >= min(len(s), 3)
        and not _LIST_MARK.match(s)
    ):
        title = normalize_inline(clean_inline(s))
        st.headings.append(title)
        out.append(title)
        return i + 2
    if _is_adorn(s, 4):
        return i + 1
    return None


def _table_block(lines: list[str], i: int, prefix: str, out: list[str]) -> int | None:
    """A grid table (a row's cells may span several lines; each row becomes one line) or a
    simple table (border lines dropped, each row kept as one line); ``prefix`` indents rows."""
    s = lines[i].strip()
    n = len(lines)
    if _GRID_BORDER.match(s):
        j = i
        cells: list[list[str]] = []
        while j < n and lines[j].strip():
            row = lines[j].strip()
            if _GRID_BORDER.match(row):
                out += _grid_row(cells, prefix)
                cells = []
            else:
                for k, cell in enumerate(row.strip("|").split("|")):
                    while len(cells) <= k:
                        cells.append([])
                    cells[k].append(cell.strip())
            j += 1
        out += _grid_row(cells, prefix)
        return j
    if re.match(r"^=+(\s+=+)+$", s):
        j, borders = i, 0
        while j < n:
            row = lines[j].strip()
            if re.match(r"^=+(\s+=+)*$", row):
                borders += 1
                if borders >= 2 and (j + 1 >= n or not lines[j + 1].strip()):
                    return j + 1
            elif row and not re.match(r"^-+(\s+-+)*$", row):
                out.append(prefix + normalize_inline(clean_inline(row)))
            j += 1
        return j
    return None


def _paragraph_lines(lines: list[str], i: int, ind: int) -> tuple[list[str], int, int, bool]:
    """The stripped lines of the paragraph at ``i``, the index after it, the indentation of its
    text (a list item's continuation lines are indented to its text), and whether it is a
    list item."""
    s = lines[i].strip()
    mark = _LIST_MARK.match(s)
    text_indent = ind + (mark.end() if mark else 0)
    para = [s]
    j = i + 1
    while j < len(lines) and lines[j].strip():
        nxt = lines[j]
        ns = nxt.strip()
        if ns.startswith(".. ") or _indent(nxt) != (text_indent if mark else ind):
            break
        if (_LIST_MARK.match(ns) and mark) or _FIELD_START.match(ns):
            break
        para.append(ns)
        j += 1
    return para, j, text_indent, mark is not None


def _paragraph_block(lines: list[str], i: int, ind: int, pad: str, out: list[str]) -> int:
    """A paragraph, a line block ("| text" lines kept as lines) or a field, and the literal
    block after a paragraph that ends with ``::``."""
    para, j, text_indent, is_item = _paragraph_lines(lines, i, ind)
    if all(p.startswith("| ") or p == "|" for p in para):
        out.append("\n".join(pad + " " * ind + clean_inline(p[2:]) for p in para))
        return j
    text = " ".join(para)
    literal_follows = text.endswith("::")
    if literal_follows:  # "Example::" -> "Example:", "Example ::" and "::" -> "Example", ""
        text = text[:-3] if text.endswith(" ::") else text[:-1] if text != "::" else ""
    field = _FIELD.match(text) if not is_item else None
    if field and field.group(1).strip().lower() in ("orphan", "tocdepth", "nosearch"):
        return j
    if field:
        text = f"{field.group(1).strip()}: {field.group(2) or ''}".strip()
    text = normalize_inline(clean_inline(text))
    if text and text != ":":
        out.append(pad + " " * ind + text)
    if not literal_follows:
        return j
    # the literal block is indented deeper than the paragraph's text
    k = _block_end(lines, j, text_indent)
    block = _dedent(lines[j:k])
    if block:
        out.append("\n".join(pad + " " * ind + "    " + ln if ln else "" for ln in block))
    return k


def _convert(lines: list[str], st: _State, out_indent: int = 0) -> list[str]:
    """Convert reST ``lines`` to a list of plain-text blocks (indented by ``out_indent``)."""
    lines = _dedent(lines)
    out: list[str] = []
    pad = " " * out_indent
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
            continue
        ind = _indent(line)
        end = _markup_block(lines, i, ind, st, out, out_indent)
        if end is None:
            end = _title_block(lines, i, ind, st, out)
        if end is None:
            end = _table_block(lines, i, pad + " " * ind, out)
        if end is None and s.startswith(">>> "):  # doctest block
            end = i
            while end < n and lines[end].strip():
                end += 1
            out.append("\n".join(pad + ln for ln in lines[i:end]))
        if end is None:
            end = _paragraph_block(lines, i, ind, pad, out)
        i = end
    return out


def rst_to_text(source: str, transform: Callable[[str], str] | None = None) -> tuple[str, dict]:
    """Convert reST ``source`` to ``(text, meta)``; ``meta`` has ``title``, ``headings``,
    ``module`` and ``synopsis`` (empty strings when absent)."""
    source = source.replace("\r\n", "\n").expandtabs(8)
    if transform is not None:
        source = transform(source)
    st = _State()
    blocks = _convert(source.split("\n"), st)
    text = normalize_text("\n\n".join(b for b in blocks if b.strip()))
    st.headings = [h.replace(" --- ", " \u2014 ") for h in st.headings]
    title = st.headings[0] if st.headings else ""
    return text.replace(" --- ", " \u2014 "), {
        "title": title,
        "headings": st.headings,
        "module": st.module,
        "synopsis": st.synopsis,
    }
