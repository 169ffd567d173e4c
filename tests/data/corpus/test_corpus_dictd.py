"""dictd databases (GCIDE, FOLDOC, Jargon) from fixture .index + .dict(.dz) files."""

from __future__ import annotations

import gzip
from pathlib import Path

from diffembed.data.corpus.dictd import (
    clean_foldoc,
    clean_gcide,
    clean_jargon,
    decode_b64_number,
    extract_dictd,
    gcide_accents,
    unbrace,
)

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    out = ""
    while True:
        out = B64[n % 64] + out
        n //= 64
        if n == 0:
            return out


def write_dict(
    tmp_path: Path, name: str, entries: list[tuple[list[str], str]], dz: bool
) -> tuple[Path, Path]:
    """Write NAME.dict(.dz) and NAME.index; each entry is (headwords, body)."""
    data = b""
    index = []
    for keys, body in entries:
        raw = body.encode("utf-8")
        for k in keys:
            index.append(f"{k}\t{b64(len(data))}\t{b64(len(raw))}")
        data += raw
    index.sort(key=str.lower)
    idx = tmp_path / f"{name}.index"
    idx.write_text("\n".join(index) + "\n")
    dic = tmp_path / (f"{name}.dict.dz" if dz else f"{name}.dict")
    if dz:
        with gzip.open(dic, "wb") as fh:
            fh.write(data)
    else:
        dic.write_bytes(data)
    return idx, dic


GCIDE_BANK = """Bank \\Bank\\ (b[a^][ng]k), n. [OE. banke; akin to E. bench. See
   {Bench}.]
   1. A mound, pile, or ridge of earth, raised above the
      surrounding level; as, a bank of clouds.
      [1913 Webster]

            They cast up a bank against the city. --2 Sam. xx.
                                                  15.
      [1913 Webster]

   2. The tilt of a roadway at a curve.
      [PJC]

"""
GCIDE_BANK_V = """Bank \\Bank\\, v. i.
   To deposit money in a bank; to keep a bank.
   [1913 Webster +PJC]

"""
GCIDE_DB = """00-database-info
   This file was converted from the original database.

"""


def test_b64_roundtrip() -> None:
    assert decode_b64_number("A") == 0
    assert decode_b64_number("BA") == 64
    assert decode_b64_number("CDxmQ") == 34544016
    for n in (0, 1, 63, 64, 4095, 123456789):
        assert decode_b64_number(b64(n)) == n


def test_gcide_entries(tmp_path: Path) -> None:
    idx, dic = write_dict(
        tmp_path,
        "gcide",
        [
            (["00-database-info"], GCIDE_DB),
            (["Bank", "Bank swallow"], GCIDE_BANK),
            (["Bank"], GCIDE_BANK_V),
        ],
        dz=True,
    )
    docs = list(extract_dictd(idx, dic, "gcide"))
    assert [d.id for d in docs] == ["gcide:Bank", "gcide:Bank.2"]
    bank, bank_v = docs
    assert bank.title == "Bank" and bank.source == "gcide"
    assert bank.meta["pos"] == "n."
    assert bank.meta["headwords"] == ["Bank"]
    assert bank.meta["sources"] == ["1913 Webster", "PJC"]
    assert bank.meta["index_keys"] == ["Bank", "Bank swallow"]
    for markup in ("\\", "{", "}", "[1913 Webster]", "[PJC]", "[a^]", "(b"):
        assert markup not in bank.text, markup
    assert bank.text.startswith("Bank, n. [OE. banke; akin to E. bench. See Bench.]")
    # hard-wrapped senses are joined into one line each
    assert "1. A mound, pile, or ridge of earth, raised above the surrounding level;" in bank.text
    assert "They cast up a bank against the city. --2 Sam. xx. 15." in bank.text
    assert bank_v.meta["pos"] == "v. i."
    assert bank_v.meta["sources"] == ["1913 Webster", "PJC"]
    assert bank_v.text == "Bank, v. i. To deposit money in a bank; to keep a bank."


def test_gcide_plain_dict_and_accents(tmp_path: Path) -> None:
    idx, dic = write_dict(tmp_path, "gcide", [(["Bank"], GCIDE_BANK)], dz=False)
    (doc,) = extract_dictd(idx, dic, "gcide")
    assert "Bench" in doc.text
    assert gcide_accents("caf['e] at 45[deg] [=a]") == "café at 45° ā"
    text, meta = clean_gcide('Abacus \\Ab"a*cus\\, n.; pl. L. {Abaci}.\n   A table.\n')
    assert meta["headwords"] == ["Abacus"]
    assert meta["pos"] == "n."
    assert text == "Abacus, n.; pl. L. Abaci. A table."
    # a block holding two entries: inline source tags and the second headword form go too
    text, meta = clean_gcide("-'s [AS. -es.] Possessive suffix. [1913 Webster] 's \\'s\\ Is.\n")
    assert text == "-'s [AS. -es.] Possessive suffix. 's Is."
    assert meta["sources"] == ["1913 Webster"]


FOLDOC_ENTRY = """exclamation mark
!
bang

   <character, jargon> The character "!" with {ASCII} code 33.
   Common names: {bang}; pling.

   See also __shriek__.

   (1998-09-17)

"""


def test_foldoc_entry(tmp_path: Path) -> None:
    title, text, meta = clean_foldoc(FOLDOC_ENTRY)
    assert title == "exclamation mark"
    assert meta["aliases"] == ["!", "bang"]
    assert meta["domains"] == ["character", "jargon"]
    assert meta["date"] == "1998-09-17"
    assert text == (
        'The character "!" with ASCII code 33. Common names: bang; pling.\n\nSee also shriek.'
    )
    idx, dic = write_dict(tmp_path, "foldoc", [(["!", "exclamation mark"], FOLDOC_ENTRY)], True)
    (doc,) = extract_dictd(idx, dic, "foldoc")
    assert doc.id == "foldoc:exclamation mark" and doc.source == "foldoc"


JARGON_ENTRY = """thinko
 /thing'koh/, n.

    [by analogy with 'typo'] A momentary, correctable glitch in mental
    processing. Syn. {braino}; see also {brain
    fart}.

"""


def test_jargon_entry() -> None:
    title, text, meta = clean_jargon(JARGON_ENTRY)
    assert title == "thinko"
    assert meta == {"pronunciation": "thing'koh", "pos": "n."}
    assert text == (
        "[by analogy with 'typo'] A momentary, correctable glitch in mental processing. "
        "Syn. braino; see also brain fart."
    )


def test_unbrace_nested() -> None:
    assert unbrace("see {a {b}} and {c\n d}") == "see a b and c\n d"
