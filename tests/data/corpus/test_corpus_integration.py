"""Integration: build from the real installed Debian packages wordnet-base and manpages.

`make test` installs them (scripts/corpus_packages.txt); a missing package FAILS this test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from diffembed.data.corpus import SPLITS, build_corpus
from diffembed.data.corpus.sources import package_files

REQUIRED = ("wordnet-base", "manpages", "man-db", "groff-base")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    missing = [p for p in REQUIRED if package_files(p) is None]
    if missing or shutil.which("man") is None:
        pytest.fail(
            f"Debian package(s) {', '.join(missing) or 'man-db'} not installed; run "
            f"`apt-get install -y {' '.join(REQUIRED)}` (done by `make test`)"
        )
    out = tmp_path_factory.mktemp("corpus")
    report = build_corpus(out, ["wordnet", "manpages"], min_docs=100_000)
    return out, report


def _load(out: Path) -> dict[str, dict]:
    docs = {}
    for split in SPLITS:
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert rec["id"] not in docs
            docs[rec["id"]] = rec
    return docs


def test_real_wordnet_and_manpages(corpus: tuple[Path, dict]) -> None:
    out, report = corpus
    docs = _load(out)
    wn = report["sources"]["wordnet"]
    assert wn["docs"] == 117659  # WordNet 3.0 synsets
    assert report["sources"]["manpages"]["docs"] > 150
    assert len(docs) == report["total"]["docs"]

    dog = docs["wordnet:n:02084071"]
    assert dog["title"] == "dog, domestic dog, Canis familiaris"
    assert dog["text"].startswith("a member of the genus Canis")
    assert dog["meta"]["lexname"] == "noun.animal"
    assert dog["meta"]["hypernyms"] == ["wordnet:n:02083346", "wordnet:n:01317541"]
    assert docs["wordnet:n:02083346"]["meta"]["lemmas"][0] == "canine"

    intro = docs["man:intro.1"]
    assert intro["title"] == "intro(1)"
    assert intro["meta"]["description"] == "introduction to user commands"
    assert intro["meta"]["sections"][:2] == ["NAME", "DESCRIPTION"]
    assert intro["text"].startswith("NAME\nintro - introduction to user commands\n")
    signal = docs["man:signal.7"]
    assert "Signal dispositions" in signal["text"].split("\n")
    with_requests = set()
    for rec in docs.values():
        if rec["source"] == "manpages":
            if any(ln.startswith((".TH", ".SH", ".B ")) for ln in rec["text"].split("\n")):
                with_requests.add(rec["id"])
            assert not re.search(r"\\f[BIRP]\w", rec["text"]), rec["id"]  # roff font escapes
            assert "\x08" not in rec["text"], rec["id"]  # overstrike
            assert "\u2500" not in rec["text"], rec["id"]  # table rules removed
            assert len(rec["text"]) < 30 * len(rec["text"].split()) + 200, rec["id"]
    # only the pages that document the man macros themselves may show roff requests as text
    assert with_requests <= {"man:man.7", "man:man-pages.7", "man:groff_man.7"}
