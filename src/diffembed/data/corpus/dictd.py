"""dictd databases: a ``NAME.index`` plus a ``NAME.dict`` or dictzip'ed ``NAME.dict.dz``.

The index has one line per headword: ``headword<TAB>offset<TAB>length`` with offset and length
in dictd's base64 (``A-Za-z0-9+/``, most significant digit first), in bytes of the
uncompressed ``.dict``. Several headwords may point at the same block; one document is made
per distinct block (the ``00-database-*`` metadata blocks are skipped). A ``.dict.dz`` is a
gzip stream, so the blocks are read in offset order while the file is decompressed
sequentially (no random access and no full copy in memory).

Dictionary-specific cleaners turn a block into title, text and meta:

* GCIDE (Webster 1913 + supplements): ``\\Ab*a"cus\\`` headword forms and the pronunciation that
  follows them removed, ``{cross references}`` unbraced, ``[1913 Webster]``-style source lines
  moved to ``meta["sources"]``, accent codes such as ``[=a]`` turned into Unicode (``ā``);
  ``meta``: ``headwords``, ``pos`` (as printed, e.g. ``n.``, ``v. t.``), ``index_keys``.
* FOLDOC: the leading headword lines become title + ``meta["aliases"]``, ``<domain>`` tags
  move to ``meta["domains"]``, the trailing ``(YYYY-MM-DD)`` to ``meta["date"]``.
* Jargon File: the pronunciation/part-of-speech line goes to ``meta["pronunciation"]`` and
  ``meta["pos"]``.

ids are ``<dict>:<title>``; a title seen again (later offset) gets ``.2``, ``.3``, ... .
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from diffembed.formats.corpus import Document

from .common import normalize_inline, normalize_text, reflow_paragraphs

log = logging.getLogger(__name__)

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}


def decode_b64_number(s: str) -> int:
    """Decode a dictd base64 number (``"CDxmQ"`` -> byte offset)."""
    n = 0
    for c in s:
        n = n * 64 + _B64_VALUE[c]
    return n


@dataclass
class DictBlock:
    """A block of a ``.dict`` file and every index headword that points at it."""

    offset: int
    length: int
    keys: list[str]
    raw: bytes = b""


def read_index(path: str | Path) -> list[DictBlock]:
    """Read a dictd ``.index`` and group headwords by block, sorted by offset then length."""
    blocks: dict[tuple[int, int], DictBlock] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            key = (decode_b64_number(parts[1]), decode_b64_number(parts[2]))
            block = blocks.get(key)
            if block is None:
                blocks[key] = block = DictBlock(key[0], key[1], [])
            block.keys.append(parts[0])
    return [blocks[k] for k in sorted(blocks)]


def _open_dict(path: Path) -> BinaryIO:
    if path.suffix in (".dz", ".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def iter_blocks(index_path: str | Path, dict_path: str | Path) -> Iterator[DictBlock]:
    """Yield each distinct block with its bytes, in offset order, reading the data once."""
    blocks = read_index(index_path)
    buf = b""
    buf_start = 0
    with _open_dict(Path(dict_path)) as fh:
        for block in blocks:
            if block.offset > buf_start + len(buf):  # skip forward without keeping bytes
                fh.seek(block.offset)
                buf, buf_start = b"", block.offset
            elif block.offset > buf_start:
                buf = buf[block.offset - buf_start :]
                buf_start = block.offset
            need = block.offset + block.length - (buf_start + len(buf))
            if need > 0:
                buf += fh.read(need)
            start = block.offset - buf_start
            block.raw = buf[start : start + block.length]
            yield block


def decode_bytes(raw: bytes) -> str:
    """UTF-8, falling back to Windows-1252 for the few legacy bytes some entries carry."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def is_metadata(keys: list[str]) -> bool:
    """dictd's own ``00-database-*`` (and GCIDE's ``00-gcide-*``) information blocks."""
    return all(re.match(r"^00-?(database|gcide|foldoc|jargon)", k) for k in keys)


_BRACES = re.compile(r"\{\s*([^{}]*?)\s*\}", re.S)


def unbrace(text: str) -> str:
    """Remove dictd cross-reference braces: ``{bit bucket}`` -> ``bit bucket``."""
    prev = None
    while prev != text:
        prev, text = text, _BRACES.sub(r"\1", text)
    return text


# --------------------------------------------------------------------------- GCIDE

#: GCIDE's ASCII codes for accented and special characters (the frequent ones).
GCIDE_ACCENTS: dict[str, str] = {
    "[a^]": "ă", "[e^]": "ĕ", "[i^]": "ĭ", "[o^]": "ŏ", "[u^]": "ŭ", "[y^]": "y̆", "[oo^]": "o͝o",
    "[=a]": "ā", "[=e]": "ē", "[imac]": "ī", "[=i]": "ī", "[=o]": "ō", "[=u]": "ū",
    "[=y]": "ȳ", "[=oo]": "o͞o", "[=ae]": "ǣ", "['a]": "á", "['e]": "é", "['i]": "í",
    "['o]": "ó", "['u]": "ú", "['E]": "É", "[`a]": "à", "[`e]": "è", "[^a]": "â", "[^e]": "ê",
    "[^i]": "î", "[^o]": "ô", "[^u]": "û", '["a]': "ä", '["e]': "ë", '["i]': "ï", '["o]': "ö",
    '["u]': "ü", "[aum]": "ä", "[.a]": "ȧ", "[.u]": "u̇", "[.r]": "ṙ", "[.t]": "ṫ", "[.n]": "ṅ",
    "[~e]": "ẽ", "[~n]": "ñ", "[,c]": "ç", "[ae]": "æ", "[AE]": "Æ", "[oe]": "œ", "[OE]": "Œ",
    "[eth]": "ð", "[thorn]": "þ", "[yogh]": "ȝ", "[ng]": "ŋ", "[add]": "ạ", "[udd]": "ụ",
    "[dsdot]": "ḍ", "[asl]": "a", "[-a]": "a", "[-e]": "e", "[-i]": "i", "[-o]": "o",
    "[-u]": "u", "[*a]": "a", "[th]": "th", "[deg]": "°", "[root]": "√", "[sect]": "§",
    "[pounds]": "£", "[bprime]": "″", "[prime]": "′", "[bar]": "|", "[frac12]": "½",
    "[frac14]": "¼", "[frac34]": "¾", "[times]": "×", "[divide]": "÷",
    "[alpha]": "α", "[beta]": "β", "[gamma]": "γ", "[delta]": "δ", "[epsilon]": "ε",
    "[zeta]": "ζ", "[eta]": "η", "[theta]": "θ", "[iota]": "ι", "[kappa]": "κ",
    "[lambda]": "λ", "[mu]": "μ", "[nu]": "ν", "[xi]": "ξ", "[omicron]": "ο", "[pi]": "π",
    "[rho]": "ρ", "[sigma]": "σ", "[tau]": "τ", "[upsilon]": "υ", "[phi]": "φ", "[chi]": "χ",
    "[psi]": "ψ", "[omega]": "ω", "[Delta]": "Δ", "[Sigma]": "Σ", "[Omega]": "Ω",
}  # fmt: skip
_ACCENT_RE = re.compile(
    "|".join(re.escape(k) for k in sorted(GCIDE_ACCENTS, key=len, reverse=True))
)
_SOURCE_NAMES = (
    r"1913 Webster|Webster 1913 Suppl\.|WordNet(?: \d\.\d| sense \d+)?|PJC\.?|AS|RDH|RHUD"
    r"|GG|RP|Century Dict\. 1906|MW10|CD"
)
_SOURCE_LINE = re.compile(rf"^\s*\[((?:\s*\+?\s*(?:{_SOURCE_NAMES}))+)\s*\]\s*$", re.M)
_SOURCE_INLINE = re.compile(rf"[ \t]*\[((?:\s*\+?\s*(?:{_SOURCE_NAMES}))+)\s*\]")
_HEADWORD_FORM = re.compile(r"[ \t]*\\[^\\\n]{1,80}\\(?:[ \t]*\([^()\n]*\))?")
_GCIDE_ITEM = re.compile(r"^\s*(?:\d+\.\s|\([a-z0-9]{1,3}\)\s|(?:Syn|Note|Usage)\s*:)")
_POS = re.compile(r"^\s*,?\s*((?:(?:[a-z]{1,6}|p\. ?p|vb\. ?n|p\. ?pr)\.\s*(?:&\s*)?)+)")


def gcide_accents(text: str) -> str:
    """Replace GCIDE accent codes (``[=a]``, ``["o]``, ``[deg]``, ...) by Unicode."""
    return _ACCENT_RE.sub(lambda m: GCIDE_ACCENTS[m.group(0)], text)


def clean_gcide(raw: str) -> tuple[str, dict[str, object]]:
    """Clean one GCIDE block; return ``(text, meta)`` with ``headwords``, ``pos``, ``sources``."""
    sources = sorted(
        {
            name.strip()
            for m in _SOURCE_INLINE.finditer(raw)
            for name in re.split(r"\s*\+\s*", m.group(1))
            if name.strip()
        }
    )
    text = _SOURCE_INLINE.sub("", _SOURCE_LINE.sub("\n", raw))
    headwords: list[str] = []
    pos = ""
    for line in text.split("\n"):
        if "\\" in line:
            forms = list(_HEADWORD_FORM.finditer(line))
            if forms:
                prefix = line[: forms[0].start()]
                headwords = [
                    normalize_inline(h)
                    for h in re.split(r",\s*", _HEADWORD_FORM.sub("", line[: forms[-1].end()]))
                    if h.strip()
                ]
                if not headwords and prefix.strip():
                    headwords = [prefix.strip()]
                m = _POS.match(line[forms[-1].end() :])
                if m:
                    pos = " ".join(m.group(1).split()).rstrip("&").strip()
            break
    text = _HEADWORD_FORM.sub("", text)  # in every entry of the block, not only the first
    text = gcide_accents(unbrace(text))
    text = normalize_text(reflow_paragraphs(normalize_text(text), item=_GCIDE_ITEM))
    return text, {"headwords": headwords, "pos": pos, "sources": sources}


# --------------------------------------------------------------------------- FOLDOC

_DOMAIN_TAG = re.compile(r"(^|\n)(\s*(?:\d+\.\s*)?)<([^<>\n]{1,80})>\s*")
_DATE = re.compile(r"\n\s*\((\d{4}-\d{2}-\d{2})\)\s*$")


def clean_foldoc(raw: str) -> tuple[str, str, dict[str, object]]:
    """Clean one FOLDOC block; return ``(title, text, meta)``."""
    raw = raw.strip("\n")
    head, _, body = raw.partition("\n\n")
    names = [ln.strip() for ln in head.split("\n") if ln.strip()]
    title = names[0] if names else ""
    date = ""
    m = _DATE.search("\n" + body)
    if m:
        date = m.group(1)
        body = _DATE.sub("", "\n" + body)
    domains: list[str] = []

    def _domain(mt: re.Match[str]) -> str:
        for d in mt.group(3).split(","):
            if d.strip() and d.strip() not in domains:
                domains.append(d.strip())
        return mt.group(1) + mt.group(2)

    body = _DOMAIN_TAG.sub(_domain, body)
    body = re.sub(r"__([^_\n]+)__", r"\1", unbrace(body))
    text = normalize_text(reflow_paragraphs(normalize_text(body), verbatim_indent=2))
    meta: dict[str, object] = {"aliases": names[1:], "domains": domains, "date": date}
    return title, text, meta


# --------------------------------------------------------------------------- Jargon File


def clean_jargon(raw: str) -> tuple[str, str, dict[str, object]]:
    """Clean one Jargon File block; return ``(title, text, meta)``."""
    lines = raw.strip("\n").split("\n")
    title = lines[0].strip() if lines else ""
    pron, pos = "", ""
    rest = lines[1:]
    if rest and rest[0].startswith(" ") and not rest[0].startswith("    "):
        info = rest[0].strip()
        rest = rest[1:]
        m = re.match(r"^(/[^/]*/)?,?\s*(.*)$", info)
        if m:
            pron = (m.group(1) or "").strip("/").strip()
            pos = m.group(2).strip().rstrip(",").strip()
    body = normalize_text(unbrace("\n".join(rest)))
    text = normalize_text(reflow_paragraphs(body, verbatim_indent=2))
    return title, text, {"pronunciation": pron, "pos": pos}


# --------------------------------------------------------------------------- extraction

Cleaner = Callable[[str, list[str]], tuple[str, str, dict[str, object]]]


def _gcide(raw: str, keys: list[str]) -> tuple[str, str, dict[str, object]]:
    text, meta = clean_gcide(raw)
    headwords = meta["headwords"]
    assert isinstance(headwords, list)
    title = gcide_accents(headwords[0]) if headwords else keys[0]
    meta["headwords"] = [gcide_accents(h) for h in headwords]
    return title, text, meta


def _foldoc(raw: str, keys: list[str]) -> tuple[str, str, dict[str, object]]:
    title, text, meta = clean_foldoc(raw)
    return title or keys[0], text, meta


def _jargon(raw: str, keys: list[str]) -> tuple[str, str, dict[str, object]]:
    title, text, meta = clean_jargon(raw)
    return title or keys[0], text, meta


CLEANERS: dict[str, Cleaner] = {"gcide": _gcide, "foldoc": _foldoc, "jargon": _jargon}


def extract_dictd(
    index_path: str | Path,
    dict_path: str | Path,
    name: str,
    source: str | None = None,
    cleaner: Cleaner | None = None,
) -> Iterator[Document]:
    """Yield one document per distinct block of a dictd database.

    ``name`` picks the cleaner (``gcide``, ``foldoc``, ``jargon``; anything else gets a plain
    one) and is the id namespace; ``source`` defaults to ``name``.
    """
    cleaner = cleaner or CLEANERS.get(name, _plain_cleaner)
    seen: dict[str, int] = {}
    for block in iter_blocks(index_path, dict_path):
        if is_metadata(block.keys):
            continue
        raw = decode_bytes(block.raw)
        if raw.lstrip().startswith("00-database"):
            continue
        title, text, meta = cleaner(raw, block.keys)
        title = normalize_inline(title)
        if not text.strip() or not title:
            continue
        meta["index_keys"] = sorted(set(block.keys))
        n = seen.get(title, 0) + 1
        seen[title] = n
        doc_id = f"{name}:{title}" if n == 1 else f"{name}:{title}.{n}"
        yield Document(id=doc_id, source=source or name, title=title, text=text, meta=meta)


def _plain_cleaner(raw: str, keys: list[str]) -> tuple[str, str, dict[str, object]]:
    lines = raw.strip("\n").split("\n")
    text = normalize_text(reflow_paragraphs(normalize_text(unbrace("\n".join(lines[1:])))))
    return lines[0].strip() if lines else keys[0], text, {}
