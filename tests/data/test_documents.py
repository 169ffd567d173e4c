"""The corpus-document helpers shared by the task suites and the training pairs: a man page's
NAME line is hidden the same way in the ``synopsis-page`` training pairs and in the ``man-page``
evaluation task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffembed.data.documents import document_from_record, is_wordnet_copy, strip_name_section
from diffembed.data.pairs.context import PairsContext
from diffembed.data.pairs.sources import build_synopsis_page
from diffembed.data.tasks.common import BuildContext
from diffembed.data.tasks.eval_corpus import EvalCorpus
from diffembed.data.tasks.longdoc import build_man_page
from diffembed.formats.corpus import Document

BODY = (
    "List information about the files and directory entries in the current directory, sorted "
    "alphabetically, with several ordinary words about files, data and programs."
)


def man_page(name: str, description: str, text: str | None = None) -> Document:
    name_line = f"{name} - {description}"
    return Document(
        id=f"man:{name}.1",
        source="manpages",
        title=f"{name}(1)",
        text=text or f"NAME\n{name_line}\n\nSYNOPSIS\n{name} [options]\n\nDESCRIPTION\n{BODY}",
        meta={"description": description, "name_line": name_line, "names": [name]},
    )


PAGES = [
    man_page("ls", "list directory contents"),
    man_page("cat", "concatenate files and print on the standard output"),
    # a page whose NAME section does not open the text (like the POD pages perlcn and perlko)
    man_page(
        "perlcn",
        "simplified Chinese Perl guide",
        "A preamble paragraph before the name.\n\nNAME\n\nperlcn - simplified Chinese Perl "
        f"guide\n\nDESCRIPTION\n\n{BODY}",
    ),
]


def training_pages(pages: list[Document]) -> dict[str, str]:
    """Page id -> the positive text of its synopsis-page training pair."""
    ctx = PairsContext(docs=pages, seed=0, max_tokens=0)
    return {c.pool.ids[c.positive]: c.pool.texts[c.positive] for c in build_synopsis_page(ctx)}


def evaluation_pages(pages: list[Document], tmp_path: Path) -> dict[str, str]:
    """Page id -> its document in the man-page evaluation task, as retrievers see it."""
    ctx = BuildContext(corpus=EvalCorpus(pages, [], "sha256:0"), measure_bm25=False)
    summary = build_man_page(ctx, tmp_path)
    assert summary is not None
    rows = (tmp_path / "man-page" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [json.loads(r) for r in rows]
    return {
        d["_id"]: Document(id=d["_id"], text=d["text"], title=d["title"]).full_text for d in docs
    }


def test_training_pairs_and_evaluation_tasks_strip_the_name_section_alike(tmp_path: Path) -> None:
    train = training_pages(PAGES)
    evaluation = evaluation_pages(PAGES, tmp_path)
    assert set(train) == set(evaluation) == {d.id for d in PAGES}
    for page in PAGES:
        assert train[page.id] == evaluation[page.id]
        assert page.meta["name_line"] not in train[page.id]
        assert page.meta["description"] not in train[page.id]
        assert train[page.id] == f"{page.title} {strip_name_section(page).strip()}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NAME\nls - list directory contents\n\nSYNOPSIS\nls", "SYNOPSIS\nls"),
        ("NAME\n\nls - list directory contents\n\nSYNOPSIS\nls", "SYNOPSIS\nls"),
        ("Preamble.\n\nNAME\n\nls - list directory contents\n\nX", "Preamble.\n\nNAME\n\n\nX"),
        ("SYNOPSIS\nls", "SYNOPSIS\nls"),
    ],
)
def test_strip_name_section_cases(text: str, expected: str) -> None:
    doc = Document(id="man:ls.1", text=text, meta={"name_line": "ls - list directory contents"})
    assert strip_name_section(doc) == expected
    assert strip_name_section(Document(id="man:x.1", text=text)) == text  # no NAME line known


def test_document_from_record_and_wordnet_copies() -> None:
    rec = {"id": "gcide:Bank", "source": "gcide", "split": "eval", "title": None, "text": "t",
           "meta": {"sources": ["WordNet 1.5"]}}  # fmt: skip
    doc = document_from_record(rec)
    assert (doc.id, doc.source, doc.title, doc.text) == ("gcide:Bank", "gcide", "", "t")
    assert is_wordnet_copy(doc)
    assert not is_wordnet_copy(Document(id="gcide:Run", text="t", meta={"sources": ["1913"]}))
