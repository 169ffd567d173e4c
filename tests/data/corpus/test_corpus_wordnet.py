"""WordNet data-file parsing on a small fixture written in the real wndb(5WN) layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffembed.data.corpus.wordnet import LEXNAMES, extract_wordnet, parse_data_line, split_gloss

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUN = (
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 003 @ 02083346 n 0000 "
    "@ 01317541 n 0000 ~ 01322604 n 0000 | a member of the genus Canis (probably descended "
    'from the common wolf) that has been domesticated by man since prehistoric times; "the dog '
    'barked all night"  \n'
    "09044862 15 n 02 United_States 0 USA 0 001 @i 08544813 n 0000 | North American republic  \n"
)
VERB = (
    "00002325 29 v 01 respire 1 002 $ 00001740 v 0000 @ 02108395 v 0000 02 + 02 00 + 08 00 | "
    "undergo the biomedical and metabolic processes of respiration  \n"
)
ADJ = (
    "00020103 00 s 02 outback(a) 0 remote 0 001 & 00019874 a 0000 | inaccessible and "
    'sparsely populated; "hiking in the remote bush"  \n'
)


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    (tmp_path / "data.noun").write_text(LICENCE + NOUN)
    (tmp_path / "data.verb").write_text(LICENCE + VERB)
    (tmp_path / "data.adj").write_text(LICENCE + ADJ)
    (tmp_path / "data.adv").write_text(LICENCE)
    return tmp_path


def test_lexnames_table() -> None:
    assert len(LEXNAMES) == 45
    assert LEXNAMES[5] == "noun.animal" and LEXNAMES[29] == "verb.body"
    assert LEXNAMES[44] == "adj.ppl"


def test_extract_synsets(wordnet_dir: Path) -> None:
    docs = {d.id: d for d in extract_wordnet(wordnet_dir)}
    assert sorted(docs) == [
        "wordnet:a:00020103",
        "wordnet:n:02084071",
        "wordnet:n:09044862",
        "wordnet:v:00002325",
    ]
    dog = docs["wordnet:n:02084071"]
    assert dog.source == "wordnet"
    assert dog.title == "dog, domestic dog, Canis familiaris"
    assert dog.text.startswith("a member of the genus Canis")
    assert dog.meta["lexname"] == "noun.animal"
    assert dog.meta["pos"] == "n"
    assert dog.meta["lemmas"] == ["dog", "domestic dog", "Canis familiaris"]
    assert dog.meta["hypernyms"] == ["wordnet:n:02083346", "wordnet:n:01317541"]
    assert dog.meta["examples"] == ["the dog barked all night"]
    assert dog.meta["definition"].endswith("since prehistoric times")
    usa = docs["wordnet:n:09044862"]
    assert usa.meta["instance_hypernyms"] == ["wordnet:n:08544813"]
    assert usa.meta["hypernyms"] == []
    assert usa.meta["lexname"] == "noun.location"
    verb = docs["wordnet:v:00002325"]
    assert verb.meta["verb_frames"] == [2, 8]
    assert verb.meta["lexname"] == "verb.body"
    adj = docs["wordnet:a:00020103"]
    assert adj.meta["pos"] == "s"  # satellite, but the id uses the file's "a"
    assert adj.meta["lemmas"] == ["outback", "remote"]  # "(a)" marker stripped
    assert adj.meta["examples"] == ["hiking in the remote bush"]


def test_licence_lines_are_not_documents() -> None:
    assert parse_data_line(LICENCE.rstrip("\n"), "n") is None


def test_split_gloss() -> None:
    d, ex = split_gloss('move fast; "he ran to the store"; "the car runs"')
    assert d == "move fast"
    assert ex == ["he ran to the store", "the car runs"]


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(extract_wordnet(tmp_path))
