"""POD parsing: commands, formatting codes, verbatim blocks and non-POD code."""

from __future__ import annotations

from pathlib import Path

from diffembed.data.corpus.pod import expand_codes, extract_pod_files, pod_to_text

POD = """\
#!/usr/bin/perl
print "code before pod is ignored\\n";

=encoding utf8

=head1 NAME

perlfake - a B<fake> Perl manual page

=head1 DESCRIPTION

Use C<< $a <=> $b >> to compare, see L<perlfunc/"sort"> and
L<the operators|perlop>. X<sort>Write E<lt>tagE<gt> like I<this>.

    my @sorted = sort { $a <=> $b } @list;
    print "@sorted\\n";

=over 4

=item *

First bullet with F</etc/passwd>.

=item 2.

Numbered item.

=item B<-v>

Be verbose.

=back

=begin html

<p>HTML only</p>

=end html

=for comment This is dropped.

=cut

sub not_documentation { 1 }
"""


def test_pod_to_text(tmp_path: Path) -> None:
    text, meta = pod_to_text(POD)
    assert meta["sections"] == ["NAME", "DESCRIPTION"]
    assert meta["name_line"] == "perlfake - a fake Perl manual page"
    assert meta["description"] == "a fake Perl manual page"
    lines = text.split("\n")
    assert (
        'Use $a <=> $b to compare, see "sort" in perlfunc and the operators. Write <tag> like this.'
    ) in lines
    assert "my @sorted = sort { $a <=> $b } @list;" in [ln.strip() for ln in lines]
    assert "- First bullet with /etc/passwd." in lines
    assert "2. Numbered item." in lines
    assert "-v" in lines and "    Be verbose." in lines
    for junk in (
        "=head",
        "=item",
        "=over",
        "B<",
        "C<",
        "L<",
        "E<",
        "HTML only",
        "dropped",
        "not_documentation",
        "code before pod",
        "=cut",
        "encoding",
    ):
        assert junk not in text, junk


def test_expand_codes_edge_cases() -> None:
    assert expand_codes("C<<x>") == "<x"  # C< followed by a literal '<'
    assert expand_codes("I<<< a >> b >>>") == "a >> b"
    assert expand_codes("E<0x41>E<65>E<eacute>Z<>S<a b>") == "AA\u00e9a\u00a0b"
    assert expand_codes("L<https://perl.org>") == "https://perl.org"


def test_extract_pod_files(tmp_path: Path) -> None:
    p = tmp_path / "perlfake.pod"
    p.write_text(POD)
    (doc,) = extract_pod_files([p], "perl-doc", tmp_path)
    assert doc.id == "perl:perlfake"
    assert doc.title == "perlfake"
    assert doc.meta["path"] == "/perlfake.pod"
