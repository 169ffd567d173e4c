"""Plain text: the Bible dump format and generic text files."""

from __future__ import annotations

import gzip
from pathlib import Path

from diffembed.data.corpus.plaintext import extract_text_files, parse_bible

BIBLE = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void; and darkness was upon
the face of the deep.

Genesis 2

  1 Thus the heavens and the earth were finished, and all the host of them.

Revelation 22

  21 The grace of our Lord Jesus Christ be with you all. Amen.
"""


def test_parse_bible() -> None:
    docs = list(parse_bible(BIBLE))
    assert [d.id for d in docs] == ["bible:Genesis.1", "bible:Genesis.2", "bible:Revelation.22"]
    g1 = docs[0]
    assert g1.title == "Genesis 1"
    assert g1.text == (
        "In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep."
    )
    assert g1.meta == {
        "book": "Genesis",
        "chapter": 1,
        "book_number": 1,
        "testament": "old",
        "verses": 2,
    }
    assert docs[2].meta["book_number"] == 2  # second distinct book in this fixture


def test_extract_text_files(tmp_path: Path) -> None:
    base = tmp_path / "Documentation"
    (base / "sub").mkdir(parents=True)
    with gzip.open(base / "sub" / "notes.txt.gz", "wt") as fh:
        fh.write("-*- mode: text -*-\nMemory   barriers\n\f\n\tIndented\tline   \n\n\n\nEnd.\n")
    (doc,) = extract_text_files([base / "sub" / "notes.txt.gz"], "linux-doc", "linux", base)
    assert doc.id == "linux:sub/notes.txt"
    assert doc.title == "Memory barriers"
    assert doc.text == "Memory barriers\n\n        Indented line\n\nEnd."
