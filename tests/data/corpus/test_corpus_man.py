"""roff man pages rendered with `man -l` (man-db): fixture page, .so and symlink aliases."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from diffembed.data.corpus.man import extract_man_pages, page_name, parse_rendered, so_target

PAGE = r""".\" Copyright: a comment that must not appear
.TH FROB 1 2024-01-01 "fixture 1.0" "User Commands"
.SH NAME
frob, frobnicate \- frobnicate the widgets
.SH SYNOPSIS
.B frob
[\fB\-v\fR]
.I file
.SH DESCRIPTION
.B frob
reads
.I file
and frobnicates every widget in it.
This sentence is on a new source line.
.SS Options
.TP
.B \-v
Be verbose.
.SH "SEE ALSO"
.BR ls (1)
"""


@pytest.fixture
def man_tree(tmp_path: Path) -> Path:
    d = tmp_path / "usr/share/man/man1"
    d.mkdir(parents=True)
    with gzip.open(d / "frob.1.gz", "wt") as fh:
        fh.write(PAGE)
    with gzip.open(d / "frobnicate.1.gz", "wt") as fh:
        fh.write('.\\" alias page\n.so man1/frob.1\n')
    os.symlink("frob.1.gz", d / "frb.1.gz")
    return tmp_path


def test_page_name() -> None:
    assert page_name("/usr/share/man/man8/ld.so.8.gz") == ("ld.so", "8")
    assert page_name("warnings::register.3perl.gz") == ("warnings::register", "3perl")


def test_so_target(man_tree: Path) -> None:
    d = man_tree / "usr/share/man/man1"
    assert so_target(d / "frobnicate.1.gz") == "man1/frob.1"
    assert so_target(d / "frob.1.gz") is None


def test_render_fixture_page(man_tree: Path) -> None:
    assert shutil.which("man"), "`man` is missing: apt-get install man-db groff-base"
    paths = sorted((man_tree / "usr/share/man/man1").iterdir())
    (doc,) = extract_man_pages(paths, "manpages", man_tree, workers=2)
    assert doc.id == "man:frob.1"
    assert doc.title == "frob(1)"
    assert doc.source == "manpages"
    m = doc.meta
    assert m["names"] == ["frob", "frobnicate"]
    assert m["description"] == "frobnicate the widgets"
    assert m["sections"] == ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"]
    assert m["aliases"] == ["frb(1)", "frobnicate(1)"]
    assert m["manual"] == "User Commands"
    assert m["footer"] == "fixture 1.0 2024-01-01"
    assert m["path"] == "/usr/share/man/man1/frob.1.gz"
    lines = doc.text.split("\n")
    assert lines[:2] == ["NAME", "frob, frobnicate - frobnicate the widgets"]
    assert (
        "frob reads file and frobnicates every widget in it. This sentence is on a new source line."
        in lines
    )
    assert "Options" in lines
    assert "-v Be verbose." in lines  # a short .TP tag shares the line with its text
    for junk in ("\\f", ".TH", ".B ", ".SH", "Copyright", "FROB(1)", "\x08"):
        assert junk not in doc.text, junk


def test_parse_rendered_tables_and_header() -> None:
    wide = " " * 5000
    rendered = (
        "LS(1)" + " " * 40 + "User Commands" + " " * 40 + "LS(1)\n\n"
        "NAME\n       ls - list directory contents\n\n"
        "DESCRIPTION\n       List information about the FILEs.\n"
        "       \u250c\u2500\u2500\u2500\u2500\u252c\u2500\u2500\u2510\n"
        "       \u2502Interface \u2502 Value \u2502\n"
        "       +-----+------+\n"
        f"{wide}centred table row\n\n"
        "GNU coreutils 9.1" + " " * 30 + "2022-09" + " " * 30 + "LS(1)\n"
    )
    text, meta = parse_rendered(rendered)
    assert meta["manual"] == "User Commands"
    assert meta["footer"] == "GNU coreutils 9.1 2022-09"
    assert meta["names"] == ["ls"] and meta["description"] == "list directory contents"
    assert text == (
        "NAME\nls - list directory contents\n\nDESCRIPTION\nList information about the FILEs.\n"
        "Interface Value\ncentred table row"
    )
