"""Perl POD (``*.pod``) parsed in Python (no ``pod2text`` needed), following ``perlpodspec``.

* Command paragraphs: ``=head1``..``=head6`` become heading lines; ``=over``/``=item``/``=back``
  become indented items (``*`` bullets become ``- ``, numbers are kept, other item labels
  become a line of their own); ``=begin``/``=end`` and ``=for`` blocks, ``=encoding``,
  ``=pod`` and ``=cut`` are dropped, and so is everything outside POD (code after ``=cut``).
* Ordinary paragraphs are joined into one line; verbatim paragraphs (indented) keep their
  lines, dedented.
* Formatting codes, including the ``C<< ... >>`` multi-bracket form: ``B I C F S`` keep their
  content, ``X`` (index entry) and ``Z`` vanish, ``E<lt>``/``E<gt>``/``E<sol>``/``E<verbar>``,
  numeric and HTML-named escapes become characters, ``L<text|name>`` becomes ``text``,
  ``L<name/"sec">`` becomes ``"sec" in name``, ``L<name>`` becomes ``name``.

One document per file: ``id`` ``perl:<name>`` (``perl:perlfunc``), ``title`` the name from the
``NAME`` section; ``meta``: ``name_line``, ``description`` (the part after `` - ``),
``sections`` (``=head1`` titles), ``path``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from diffembed.formats.corpus import Document

from .common import normalize_inline, normalize_text

log = logging.getLogger(__name__)

_ESCAPES = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|", "quot": '"', "amp": "&"}


_CODES = "BCEFILSXZ"


def expand_codes(text: str) -> str:
    """Expand POD formatting codes in ``text`` (see the module docstring)."""
    out, _ = _expand(text, 0, False)
    return out


def _expand(s: str, i: int, stop_at_gt: bool) -> tuple[str, int]:
    """Expand ``s`` from ``i``; with ``stop_at_gt`` stop after the first unmatched ``>``."""
    buf: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if stop_at_gt and c == ">":
            return "".join(buf), i + 1
        if c in _CODES and i + 1 < n and s[i + 1] == "<":
            j = i + 1
            while j < n and s[j] == "<":
                j += 1
            depth = j - (i + 1)
            if depth > 1 and j < n and s[j] in " \t\n":
                inner, i = _expand_multi(s, j, depth)
            else:  # single bracket; "C<<x>" without a space means C< + literal "<"
                inner, i = _expand(s, i + 2, True)
            buf.append(_apply(c, inner))
            continue
        buf.append(c)
        i += 1
    return "".join(buf), i


def _expand_multi(s: str, j: int, depth: int) -> tuple[str, int]:
    """Content of a ``X<<< ... >>>`` code: it ends at whitespace followed by ``depth`` ``>``."""
    m = re.compile(r"[ \t\n]+" + ">" * depth).search(s, j)
    end = m.start() if m else len(s)
    inner, _ = _expand(s[j:end].lstrip(), 0, False)
    return inner, (m.end() if m else len(s))


def _apply(code: str, inner: str) -> str:
    if code in "XZ":
        return ""
    if code == "E":
        name = inner.strip()
        if name in _ESCAPES:
            return _ESCAPES[name]
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", name):
            return chr(int(name, 16))
        if re.fullmatch(r"0[0-7]+", name):
            return chr(int(name, 8))
        if name.isdigit():
            return chr(int(name))
        return html.unescape(f"&{name};") if name else ""
    if code == "S":
        return inner.replace(" ", "\u00a0")
    if code == "L":
        return _link_text(inner)
    return inner


def _link_text(inner: str) -> str:
    text, bar, target = inner.partition("|")
    if bar:
        return text
    target = inner
    if re.match(r"^[a-z][a-z0-9+.-]*:[^:\s]", target):  # a URL
        return target
    name, slash, section = target.partition("/")
    if slash:
        section = section.strip().strip('"')
        return f'"{section}" in {name}' if name else f'"{section}"'
    return target.strip('"')


def pod_to_text(source: str) -> tuple[str, dict[str, object]]:
    """Convert POD source to ``(text, meta)`` (``sections``, ``name_line``, ``description``)."""
    paragraphs = re.split(r"\n[ \t]*\n", source.replace("\r\n", "\n"))
    out: list[str] = []
    sections: list[str] = []
    name_parts: list[str] = []
    in_pod = False
    skip_until: str | None = None
    indent = 0
    indents: list[int] = []
    current_head = ""
    for para in paragraphs:
        if not para.strip():
            continue
        first = para.lstrip("\n")
        if first.startswith("=") and first[1:2].isalpha():
            m = re.match(r"=(\w+)[ \t]*(.*)", first, re.S)
            cmd, arg = (m.group(1), m.group(2).strip()) if m else ("", "")
            in_pod = cmd != "cut"
            if skip_until is not None:
                if cmd == "end" and arg.split()[:1] == [skip_until]:
                    skip_until = None
                continue
            if cmd == "begin":
                fmt = arg.split()[0] if arg.split() else ""
                if fmt.lstrip(":") not in ("text", "plain"):
                    skip_until = fmt
                continue
            if cmd.startswith("head") and cmd[4:].isdigit():
                title = normalize_inline(expand_codes(arg))
                if cmd == "head1":
                    sections.append(title)
                    current_head = title
                out.append(title)
                indent = 0
                indents = []
            elif cmd == "over":
                indents.append(indent)
                indent += 4
            elif cmd == "back":
                indent = indents.pop() if indents else 0
            elif cmd == "item":
                label = normalize_inline(expand_codes(arg))
                base = " " * max(0, indent - 4)
                bullet = re.match(r"^[*\u2022o-](?:\s+(.*))?$", label)
                if bullet:
                    out.append(base + "- " + (bullet.group(1) or _PENDING))
                elif re.fullmatch(r"\d+\.?", label):
                    out.append(base + label.rstrip(".") + ". " + _PENDING)
                elif label:
                    out.append(base + label)
            # =pod, =cut, =for, =encoding and unknown commands produce no text
            continue
        if not in_pod or skip_until is not None:
            continue
        if para[:1] in (" ", "\t"):
            lines = [ln.expandtabs(8).rstrip() for ln in para.split("\n")]
            cut = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
            block = "\n".join(" " * indent + ln[cut:] for ln in lines)
            out.append(block.strip("\n"))
            continue
        text = normalize_inline(expand_codes(para))
        if current_head.upper() == "NAME" and not name_parts:
            name_parts.append(text)
        if out and out[-1].endswith(_PENDING):
            out[-1] = out[-1][: -len(_PENDING)] + text
        else:
            out.append(" " * indent + text)
    out = [o[: -len(_PENDING)].rstrip() if o.endswith(_PENDING) else o for o in out]
    text = normalize_text("\n\n".join(out).replace("\u00a0", " "))
    name_line = name_parts[0] if name_parts else ""
    _, sep, description = name_line.partition(" - ")
    return text, {
        "sections": sections,
        "name_line": name_line,
        "description": description.strip() if sep else "",
    }


_PENDING = "\x00"  # marks a bullet whose text is the next ordinary paragraph


def extract_pod_files(
    paths: Iterable[str | Path], source: str, root: str | Path = "/"
) -> Iterator[Document]:
    """Yield one document per ``.pod`` file among ``paths``."""
    for p in sorted(set(map(str, paths))):
        path = Path(p)
        if path.suffix != ".pod" or not path.is_file():
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        if "=encoding" in raw[:2000] and re.search(
            r"^=encoding\s+(latin-?1|iso-8859-1)", raw, re.M
        ):
            raw = path.read_bytes().decode("latin-1")
        text, meta = pod_to_text(raw)
        if not text.strip():
            continue
        name_line = str(meta["name_line"])
        title = name_line.partition(" - ")[0].strip() or path.stem
        try:
            meta["path"] = "/" + str(path.relative_to(root))
        except ValueError:
            meta["path"] = str(path)
        yield Document(id=f"perl:{path.stem}", source=source, title=title, text=text, meta=meta)
