"""HTML to text: furniture dropped, entities decoded, <pre> kept, headings collected."""

from __future__ import annotations

import re

from diffembed.data.corpus.htmltext import html_to_text

PAGE = """<!DOCTYPE html>
<html><head><title>9.3. Mathematical &amp; Bitwise Functions</title>
<style>body { color: red; }</style><script>var x = "<p>no</p>";</script></head>
<body>
<div class="navheader"><a href="prev.html">Prev</a> Up Next</div>
<div class="toc"><a href="#s1">1. Overview</a></div>
<h1>9.3. Mathematical &amp; Bitwise Functions</h1>
<p>Operators are   provided for
many <code>numeric</code> types &mdash; caf&eacute; &lt;b&gt; &#8470;5.</p>
<ul><li><p>first item</p></li><li>second <em>item</em></li></ul>
<pre class="programlisting">SELECT 2 + 3;
  -- indented line
</pre>
<table><tr><th>Operator</th><th>Description</th></tr>
<tr><td><p>+</p></td><td><p>Addition</p></td></tr></table>
<h2 id="s1">Details</h2>
<p>Line one<br>line two</p>
<p><b><a href="syntax/expr.html">expr:</a></b><button>hide</button></p>
<div class="navfooter">Prev Home Next</div>
</body></html>
"""


def test_html_to_text() -> None:
    page = html_to_text(PAGE, {"navheader", "navfooter", "toc"}, re.compile(r"^[a-z-]+:$"))
    assert page.title == "9.3. Mathematical & Bitwise Functions"
    assert page.headings == ["9.3. Mathematical & Bitwise Functions", "Details"]
    lines = page.text.split("\n")
    assert lines[0] == "9.3. Mathematical & Bitwise Functions"
    assert "Operators are provided for many numeric types \u2014 caf\u00e9 <b> \u21165." in lines
    assert "- first item" in lines and "- second item" in lines
    assert "SELECT 2 + 3;" in lines and "  -- indented line" in lines
    assert "Operator Description" in lines and "+ Addition" in lines
    assert "Line one" in lines and "line two" in lines
    for junk in ("Prev", "Next", "color", "var x", "<p>", "&amp;", "expr:", "hide", "Overview"):
        assert junk not in page.text, junk
