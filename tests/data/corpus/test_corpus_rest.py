"""reST (Sphinx flavour) to plain text: markup must vanish, text and structure must stay."""

from __future__ import annotations

from diffembed.data.corpus.rest import clean_inline, rst_to_text

DOC = """\
.. SPDX-License-Identifier: GPL-2.0
.. _os-module:

:mod:`os` --- Miscellaneous operating system interfaces
=======================================================

.. module:: os
   :synopsis: Miscellaneous operating system interfaces.

.. moduleauthor:: Someone <a@b.c>
.. index:: single: os

**Source code:** :source:`Lib/os.py`

This module provides a *portable* way of using operating system
dependent functionality; see :func:`open`, :func:`~os.path.join`,
:ref:`the path docs <os-path>`, :pep:`8`, ``os.stat(path)`` and
`Python <https://www.python.org>`_ or Python_ [#]_.

.. toctree::
   :maxdepth: 2

   library/hidden_in_toctree

.. note::

   All functions raise :exc:`OSError` on failure.

.. function:: open(path, flags, mode=0o777, *, dir_fd=None)

   Open the file *path*.

   .. versionadded:: 3.3
      The *dir_fd* argument.

Example::

    fd = os.open("x", os.O_RDONLY)
    os.close(fd)

.. code-block:: python

   print("hello")

.. This is a comment that must vanish
   including this line.

+--------+---------+
| Name   | Meaning |
+========+=========+
| ``a``  | first   |
+--------+---------+

=====  =====
Col1   Col2
=====  =====
x      y
=====  =====

* first item
  continues here
* second item

:Author: Jane Doe

Sub section
-----------

Final paragraph.

.. [#] A footnote text.
"""


def test_rst_to_text_structure_and_meta() -> None:
    text, meta = rst_to_text(DOC)
    assert meta["title"] == "os \u2014 Miscellaneous operating system interfaces"
    assert meta["module"] == "os"
    assert meta["synopsis"] == "Miscellaneous operating system interfaces."
    assert meta["headings"] == [meta["title"], "Sub section"]
    lines = text.split("\n")
    assert lines[0] == meta["title"]
    assert (
        "This module provides a portable way of using operating system dependent functionality; "
        "see open(), join(), the path docs, PEP 8, os.stat(path) and Python or Python."
    ) in lines
    assert "open(path, flags, mode=0o777, *, dir_fd=None)" in lines
    assert "    Open the file path." in lines
    assert "    New in version 3.3: The dir_fd argument." in lines
    assert "All functions raise OSError on failure." in lines
    assert "Example:" in lines
    assert '    fd = os.open("x", os.O_RDONLY)' in lines
    assert '    print("hello")' in lines
    assert "Name Meaning" in lines and "a first" in lines
    assert "Col1 Col2" in lines and "x y" in lines
    assert "* first item continues here" in lines
    assert "Author: Jane Doe" in lines
    assert "A footnote text." in lines
    assert "Source code: Lib/os.py" in lines


def test_rst_markup_is_gone() -> None:
    text, _ = rst_to_text(DOC)
    for markup in (
        "..",
        "::",
        ":func:",
        ":ref:",
        "`",
        "**",
        "*portable*",
        "toctree",
        "hidden_in_toctree",
        "maxdepth",
        "comment",
        "SPDX",
        "=====",
        "+---",
        "|",
        "[#]",
        "moduleauthor",
        "single: os",
    ):
        assert markup not in text, markup


def test_clean_inline_roles() -> None:
    assert clean_inline(":meth:`str.format`") == "str.format()"
    assert clean_inline(":class:`~collections.OrderedDict`") == "OrderedDict"
    assert clean_inline(":term:`file object <file-like>`") == "file object"
    assert clean_inline(":c:func:`kmalloc`") == "kmalloc()"
    assert clean_inline(":rfc:`2822`") == "RFC 2822"
    assert clean_inline("``*args`` and *emph* and **bold**") == "*args and emph and bold"
    assert clean_inline("see `docs`__ and |version|") == "see docs and version"
    assert (
        clean_inline(r"a\*b and snake_case_name and __init__")
        == "a*b and snake_case_name and __init__"
    )


def test_title_with_overline() -> None:
    text, meta = rst_to_text("=====\nTitle\n=====\n\nBody text\nwrapped.\n")
    assert meta["title"] == "Title"
    assert text == "Title\n\nBody text wrapped."


def test_version_directives() -> None:
    text, _ = rst_to_text(
        ".. deprecated-removed:: 3.9 3.11\n   Use foo instead.\n\n"
        ".. versionchanged:: 3.2\n\n   Something changed.\n"
    )
    assert text == (
        "Deprecated since version 3.9, will be removed in version 3.11: Use foo instead.\n\n"
        "Changed in version 3.2.\n\nSomething changed."
    )
