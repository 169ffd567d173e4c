"""Vim help format, as plain help text and as vim-doc's HTML rendering."""

from __future__ import annotations

import html
from pathlib import Path

from diffembed.data.corpus.vimhelp import clean_vim_help, extract_vim_help, vimdoc_html_to_help

HELP = """*usr_99.txt*\tFor Vim version 9.0.  Last change: 2019 Nov 21

\t\t     VIM USER MANUAL - by Bram Moolenaar

\t\t\t      About the fixtures

This chapter is a |fixture| with `:help` links.

|99.1|\tTwo manuals

     Next chapter: |usr_02.txt|  The first steps in Vim
Table of contents: |usr_toc.txt|

==============================================================================
*99.1*\tTwo manuals\t\t\t\t*two-manuals* *E999*

Options ~
Try this: >
\t:set number
<
Then press CTRL-] on a tag.

 vim:tw=78:ts=8:noet:ft=help:norl:
"""


def test_clean_vim_help() -> None:
    title, text, meta = clean_vim_help(HELP)
    assert title == "About the fixtures"
    assert meta["help_file"] == "usr_99.txt"
    assert meta["last_change"] == "2019 Nov 21"
    assert meta["tags"] == ["99.1", "two-manuals", "E999"]
    assert meta["headings"] == ["Options"]
    lines = [ln.strip() for ln in text.split("\n")]
    assert "This chapter is a fixture with :help links." in lines
    assert "99.1 Two manuals" in lines
    assert "Options" in lines
    assert "Try this:" in lines and ":set number" in lines
    for junk in (
        "*two-manuals*",
        "|",
        "~",
        "VIM USER MANUAL",
        "Next chapter",
        "vim:tw",
        "====",
        "usr_99.txt",
        "E999",
    ):
        assert junk not in text, junk


def test_vimdoc_html(tmp_path: Path) -> None:
    body = (
        html.escape(HELP)
        .replace("*two-manuals*", '*<A NAME="two-manuals"></A><B>two-manuals</B>*')
        .replace("|fixture|", '|<A HREF="f.html#fixture">fixture</A>|')
    )
    page = (
        "<HTML><HEAD><TITLE>Vim documentation: usr_99</TITLE></HEAD><BODY>"
        '<H1>Vim documentation: usr_99</H1><A HREF="index.html">main help file</A>\n<HR>'
        f"<PRE>\n{body}</PRE></BODY></HTML>"
    )
    assert "*two-manuals*" in vimdoc_html_to_help(page)
    f = tmp_path / "usr_99.html"
    f.write_text(page, encoding="latin-1")
    (doc,) = extract_vim_help([f], "vim-doc", tmp_path)
    assert doc.id == "vim:usr_99" and doc.title == "About the fixtures"
    assert "main help file" not in doc.text
    assert "This chapter is a fixture with :help links." in doc.text
