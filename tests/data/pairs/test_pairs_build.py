"""Tests of ``diffembed.data.pairs`` on a small corpus written here in the corpus format."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from diffembed.cli.data import add_pairs_parser
from diffembed.data.pairs.build import PairsBuildError, build_pairs, report_path
from diffembed.data.pairs.cloze import cloze_queries
from diffembed.data.pairs.pools import (
    Candidate,
    Pool,
    cap_tokens,
    merge_duplicate_queries,
    strip_numbering,
)
from diffembed.data.pairs.sources import INSTRUCTIONS, TASKS, pos_fits, split_sections
from diffembed.formats.corpus import Document
from diffembed.formats.pairs import read_pairs

# Words that only documents of the pretrain and eval splits contain.
MARKERS = ("zyzzyva", "quagga", "xylarium")
PROSE = (
    "This paragraph explains the behaviour in detail so that the section is long enough to be "
    "kept as a retrieval target, with several ordinary words about files, data and programs."
)


def rec(doc_id: str, source: str, title: str, text: str, split: str, **meta: Any) -> dict:
    return {"id": doc_id, "source": source, "split": split, "title": title, "text": text,
            "meta": meta}  # fmt: skip


def synset(key: str, lemmas: list[str], gloss: str, hypernyms=(), split="finetune") -> dict:
    pos = key.split(":")[0]
    return rec(
        f"wordnet:{key}", "wordnet", ", ".join(lemmas), gloss, split,
        definition=gloss, examples=[], hypernyms=list(hypernyms), instance_hypernyms=[],
        lemmas=lemmas, lexname="noun.Tops" if pos == "n" else "verb.motion", pos=pos,
    )  # fmt: skip


def gcide(key: str, head: str, pos: str, body: str, split="finetune") -> dict:
    return rec(f"gcide:{key}", "gcide", head, f"{head}, {pos} {body}", split,
               headwords=[head], index_keys=[head], pos=pos, sources=["1913 Webster"])  # fmt: skip


def man(name: str, section: str, description: str, body: str, split="finetune") -> dict:
    text = f"NAME\n{name} - {description}\n\nSYNOPSIS\n{name} [options]\n\nDESCRIPTION\n{body}"
    return rec(
        f"man:{name}.{section}", "manpages", f"{name}({section})", text, split,
        description=description, name_line=f"{name} - {description}", names=[name],
        section=section, sections=["NAME", "SYNOPSIS", "DESCRIPTION"],
    )  # fmt: skip


def python_page(path: str, title: str, sections: list[tuple[str, str]], split="finetune",
                module: str = "", synopsis: str = "") -> dict:  # fmt: skip
    text = "\n\n".join([title, PROSE] + [f"{h}\n\n{b}" for h, b in sections])
    return rec(
        f"python:{path}", "python-doc", title, text, split, doc_path=path,
        headings=[title] + [h for h, _ in sections], module=module, synopsis=synopsis,
    )  # fmt: skip


def finetune_records() -> list[dict]:
    return [
        synset("n:00000001", ["bank"], "sloping land beside a body of water", ["wordnet:n:00000010"]),
        synset("n:00000002", ["river"], "a large natural stream of water emptying into an ocean",
               ["wordnet:n:00000040"]),
        synset("n:00000003", ["shore"], "the land along the edge of a body of water",
               ["wordnet:n:00000010"]),
        synset("n:00000010", ["slope", "incline"], "an elevated geological formation of land",
               ["wordnet:n:00000020"]),
        synset("n:00000011", ["slope", "side"], "the side of a hill or of land that is sloping"),
        synset("n:00000020", ["geological formation"], "the geological features of the earth",
               ["wordnet:n:00000030"]),
        synset("n:00000030", ["object"], "a tangible and visible entity of the earth"),
        synset("n:00000040", ["stream", "watercourse"], "a natural body of running water",
               ["wordnet:n:00000020"]),
        synset("v:00000001", ["run"], "move fast by using one's feet", ["wordnet:v:00000002"]),
        synset("v:00000002", ["travel rapidly", "speed"], "move fast over land or water"),
        synset("a:00000001", ["fast"], "acting or moving or capable of moving quickly"),
        gcide("Bank", "Bank", "n.", "A mound or ridge of earth; the margin of a watercourse; "
              "the rising ground bordering a lake, river, or sea, sloping land beside water."),
        gcide("Bank.2", "Bank", "n.", "An establishment for the custody, loan and exchange of "
              "money; the land and building of such an establishment beside the water."),
        gcide("River", "River", "n.", "A large stream of water flowing in a bed or channel and "
              "emptying into the ocean, a sea, a lake, or another stream."),
        gcide("Shore", "Shore", "n.", "The coast or land adjacent to a large body of water."),
        gcide("Shore.3", "Shore", "n.", "(Geog.) the land along the edge of a body of water."),
        gcide("Run", "Run", "v. i.", "To move, proceed, or go by moving the legs quickly; to "
              "move fast on the feet over land."),
        gcide("Fast", "Fast", "a.", "Moving rapidly; quick in motion; rapid; swift."),
        gcide("Fast.2", "Fast", "n.", "Abstinence from food; a moving act of quickly refusing."),
        gcide("Water", "Water", "n.", "The fluid which descends from the clouds in rain and "
              "forms rivers, lakes, and seas; a body of water."),
        gcide("Slope", "Slope", "n.", "An oblique direction; a declivity or acclivity of land."),
        man("ls", "1", "list directory contents", "List information about the files and "
            "directory entries in the current directory, sorted alphabetically. " + PROSE),
        man("cat", "1", "concatenate files and print on the standard output",
            "Concatenate each file to standard output. " + PROSE),
        man("printf", "1", "format and print data", "Print arguments according to the format "
            "string given on the command line. " + PROSE),
        man("printf", "3", "formatted output conversion", "The functions in the printf family "
            "produce output according to a format string. " + PROSE),
        man("open", "2", "open and possibly create a file", "The open system call opens the file "
            "specified by pathname and returns a file descriptor. " + PROSE),
        python_page("library/glob", "glob — Unix style pathname pattern expansion",
                    [("Pattern matching rules", "Glob patterns match pathnames using the rules "
                      "of the shell: star, question mark and ranges. " + PROSE)],
                    module="glob", synopsis="Unix shell style pathname pattern expansion."),
        python_page("library/fnmatch", "fnmatch — Unix filename pattern matching",
                    [("Case sensitivity of matching", "On case-insensitive file systems the "
                      "comparison ignores the case of the filename. " + PROSE)],
                    module="fnmatch", synopsis="Unix shell style filename pattern matching."),
        python_page("faq/general", "General Python FAQ",
                    [("1.1. What is Python?", "Python is an interpreted, interactive, "
                      "object-oriented programming language with modules and classes. " + PROSE),
                     ("Why is it called Python?", "When he began implementing Python, Guido "
                      "was also reading the published scripts of a comedy series. " + PROSE),
                     ("2.3. Installing the interpreter", "Download an installer for your "
                      "platform and run it; the interpreter is then on the path. " + PROSE)]),
        python_page("library/repeat", "repeat — a page with a repeated heading",
                    [("Return value details", "The first function returns a list of names. "
                      + PROSE),
                     ("Return value details", "The second function returns a mapping. "
                      + PROSE)]),
    ]  # fmt: skip


def other_split_records() -> dict[str, list[dict]]:
    """Documents that would make pairs if the builder read them: all carry a marker word."""
    return {
        "pretrain": [
            synset("n:00000050", ["river"], "a zyzzyva stream of water", ["wordnet:n:00000020"],
                   split="pretrain"),
            gcide("River.2", "River", "n.", "One who rives or splits quagga wood.",
                  split="pretrain"),
            man("zyzzyva", "1", "print zyzzyva quagga data", PROSE, split="pretrain"),
        ],
        "eval": [
            synset("n:00000060", ["shore"], "a xylarium prop placed against a wall",
                   ["wordnet:n:00000010"], split="eval"),
            gcide("Shore.2", "Shore", "n.", "A xylarium prop or beam set against a wall.",
                  split="eval"),
            python_page("library/xylarium", "xylarium — wood collections",
                        [("Xylarium quagga sections", "zyzzyva " + PROSE)], split="eval",
                        module="xylarium", synopsis="Quagga xylarium handling."),
        ],
    }  # fmt: skip


def write_corpus(root: Path, finetune: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    splits = {"finetune": finetune_records() if finetune is None else finetune}
    splits.update(other_split_records())
    for split, records in splits.items():
        with (root / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    report = build_pairs(corpus, out, seed=0, hard_negatives=3)
    return out, report


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_task(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


# ------------------------------------------------------------------------------ unit pieces
def test_cap_tokens_keeps_layout_and_says_when_it_cut():
    assert cap_tokens("a b\n\nc d", 3) == ("a b\n\nc", True)
    assert cap_tokens("a b c", 3) == ("a b c", False)
    assert cap_tokens("a b c  ", 3) == ("a b c  ", False)
    assert cap_tokens("a b c", 0) == ("a b c", False)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("3.1. Coexistence in Heterogeneous Environments", "Coexistence in Heterogeneous Environments"),
        ("Chapter 2. Debian Package Management", "Debian Package Management"),
        ("1-2. Why RDMA controller needed?", "Why RDMA controller needed?"),
        ("A Brief Introduction", "A Brief Introduction"),
        ("A.1. Appendix things", "Appendix things"),
        ("Options:", "Options"),
    ],
)  # fmt: skip
def test_strip_numbering(heading, expected):
    assert strip_numbering(heading) == expected


@pytest.mark.parametrize(
    ("wordnet", "gcide", "fits"),
    [("a", "a.", True), ("a", "adv.", False), ("s", "p. a.", True), ("v", "v. t.", True),
     ("n", "n. pl.", True), ("n", "v. i.", False), ("r", "adv.", True), ("n", "", True)],
)  # fmt: skip
def test_pos_fits(wordnet, gcide, fits):
    assert pos_fits(wordnet, gcide) is fits


def test_split_sections_follows_the_heading_list():
    doc = Document(
        id="python:x", source="python-doc", title="Title",
        text="Title\n\nintro\n\nFirst\n\none\ntwo\n\nSecond\nthree",
        meta={"headings": ["Title", "First", "Second"]},
    )  # fmt: skip
    sections = split_sections(doc)
    assert [(s.heading, s.body) for s in sections] == [("First", "one\ntwo"), ("Second", "three")]


def test_duplicate_queries_are_merged_and_their_positives_excluded():
    pool = Pool("p", 0)
    for i, key in enumerate(["a", "b", "c"]):
        pool.add(f"d{i}", f"document {key}", [key])
    merged = merge_duplicate_queries(
        [Candidate("Same query", pool, 0, "x"), Candidate("same  QUERY", pool, 1, "y"),
         Candidate("other", pool, 2, "z")]
    )  # fmt: skip
    assert [c.origin for c in merged] == ["x", "z"]
    assert merged[0].excluded() == {0, 1}


# ------------------------------------------------------------------------------ the build
def test_every_task_type_produces_valid_pairs(built, caplog):
    out, report = built
    with caplog.at_level(logging.WARNING, logger="diffembed.formats.pairs"):
        pairs = read_pairs(out)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    tasks = {p.task for p in pairs}
    expected = set(TASKS) - {"problem-concept"}
    assert expected <= tasks and "sentence-document" not in tasks  # built on request only
    if "problem-concept" not in tasks:
        assert "problem-concept" in report["notes"]
    for p in pairs:
        assert p.instruction == INSTRUCTIONS[p.task]
        # Pools smaller than K + 1 documents give fewer negatives (the Python pool has 3).
        assert 1 <= len(p.negatives) <= 3
        if p.task in ("definition-entry", "gloss-hypernym"):
            assert len(p.negatives) == 3
        assert p.positive not in p.negatives
        assert len(set(p.negatives)) == len(p.negatives)
    assert report_path(out).name == "pairs.report.json"
    saved = json.loads(report_path(out).read_text())
    assert saved["pairs"] == len(pairs)
    for task in expected:
        entry = saved["tasks"][task]
        assert entry["pairs"] > 0 and entry["mean_query_tokens"] > 0
        assert {"recall@1", "mrr", "random_fill"} <= set(entry["bm25"])


def test_pairs_follow_the_source_structure(built):
    groups = by_task(load(built[0]))
    definition = {r["query"]: r for r in groups["definition-entry"]}
    bank = definition["sloping land beside a body of water"]
    # Documents read as evaluation documents do: "{title} {text}".
    assert bank["positive"].startswith("Bank Bank, n.")
    shore = definition["the land along the edge of a body of water"]["positive"]
    assert shore.startswith("Shore Shore, n. The coast")  # never the entry holding the gloss
    fast = definition["acting or moving or capable of moving quickly"]
    assert fast["positive"].startswith("Fast Fast, a.")  # never the noun homograph
    synopsis = {r["query"]: r["positive"] for r in groups["synopsis-page"]}
    ls_page = synopsis["list directory contents"]
    assert ls_page.startswith("ls(1) SYNOPSIS") and "list directory contents" not in ls_page
    glob_page = synopsis["Unix shell style pathname pattern expansion."]
    assert glob_page.startswith("glob — Unix style") and "shell style" not in glob_page
    questions = {r["query"] for r in groups["question-answer"]}
    assert questions == {"What is Python?", "Why is it called Python?"}
    headings = {r["query"] for r in groups["heading-section"]}
    assert "Installing the interpreter" in headings and "What is Python?" not in headings
    assert "Return value details" not in headings  # occurs twice: names no one section
    hypernym = {r["query"]: r["positive"] for r in groups["gloss-hypernym"]}
    assert hypernym["sloping land beside a body of water"].startswith("slope, incline ")


def test_negatives_exclude_same_headword_and_lemma(built):
    groups = by_task(load(built[0]))
    for r in groups["definition-entry"]:
        head = r["positive"].split(" ")[0]
        assert not [n for n in r["negatives"] if n.split(" ")[0] == head], r
    for r in groups["synopsis-page"]:
        if r["positive"].startswith("printf("):
            assert not [n for n in r["negatives"] if n.startswith("printf(")]
    for r in groups["gloss-hypernym"]:
        lemmas = set(r["positive"].split(" ")[0].rstrip(",").split(", "))
        if "slope" in lemmas:
            assert not [n for n in r["negatives"] if n.startswith("slope, side")]
        # The query's own synset and its ancestors are never negatives.
        assert not [n for n in r["negatives"] if r["query"] in n]
    bank_hyp = next(
        r for r in groups["gloss-hypernym"] if r["query"] == "sloping land beside a body of water"
    )
    assert not [
        n for n in bank_hyp["negatives"] if n.startswith(("geological formation", "object"))
    ]


def test_concept_problems_use_only_the_finetune_side_and_no_eval_query(built):
    from diffembed.data.concepts import concepts_of
    from diffembed.data.pairs.sources import eval_problem_texts

    rows = by_task(load(built[0]))["problem-concept"]
    documents = {f"{c.name} {c.document}" for c in concepts_of("finetune")}
    assert {r["positive"] for r in rows} == documents
    eval_documents = {f"{c.name} {c.document}" for c in concepts_of("eval")}
    for r in rows:  # the reasoning suite's relevant documents are never shown in training
        assert r["positive"] not in eval_documents
        assert not eval_documents.intersection(r["negatives"])
    assert len(rows) == len({r["query"] for r in rows})
    reserved = eval_problem_texts([0])
    assert len(reserved) > 100
    for r in rows:
        query = " ".join(r["query"].split()).lower()
        assert not [t for t in reserved if t in query]
        assert r["positive"] not in r["negatives"]


def test_only_finetune_documents_are_used(built):
    text = built[0].read_text(encoding="utf-8").lower()
    for marker in MARKERS:
        assert marker not in text


def test_a_record_of_another_split_in_finetune_jsonl_is_refused(tmp_path):
    records = finetune_records()
    records[0] = {**records[0], "split": "eval"}
    corpus = write_corpus(tmp_path / "c", records)
    with pytest.raises(PairsBuildError, match="split 'eval'"):
        build_pairs(corpus, tmp_path / "p.jsonl")


def test_deterministic_from_the_seed(corpus, built, tmp_path):
    again = tmp_path / "again.jsonl"
    build_pairs(corpus, again, seed=0, hard_negatives=3)
    assert again.read_bytes() == built[0].read_bytes()


def test_length_cap_and_task_selection(corpus, tmp_path):
    out = tmp_path / "capped.jsonl"
    report = build_pairs(
        corpus, out, hard_negatives=2, max_doc_tokens=12, tasks=["synopsis-page"], max_per_task=3
    )
    rows = load(out)
    assert {r["task"] for r in rows} == {"synopsis-page"} and len(rows) == 3
    for r in rows:
        assert all(len(t.split()) <= 12 for t in [r["positive"], *r["negatives"]])
    assert report["cut"]["positives"] == 3 and report["cut"]["pool_documents"] > 0
    with pytest.raises(ValueError, match="unknown task"):
        build_pairs(corpus, out, tasks=["nope"])


def test_cloze_queries_remove_the_chosen_sentences():
    sentences = [
        f"Sentence number {i} talks about topic {i} in plain words here." for i in range(12)
    ]
    text = " ".join(sentences)
    queries, rest = cloze_queries(text, (0, "t", "doc"))
    assert len(queries) == 1  # 120 words: one query per 300 words, at least one
    assert queries[0] in sentences and queries[0] not in rest
    assert all(s in rest for s in sentences if s != queries[0])
    assert cloze_queries(text, (0, "t", "doc")) == (queries, rest)  # seeded
    many = [f"Sentence number {i} talks about topic {i} in plain words here." for i in range(72)]
    assert len(cloze_queries(" ".join(many), (0, "t", "doc"))[0]) == 3  # 720 words: three
    assert cloze_queries(" ".join(sentences * 2), (0, "t", "doc")) is None  # all repeated
    assert cloze_queries("Too short to hold a query and a rest.", (0, "t", "d")) is None


def test_sentence_document_pairs_on_request(corpus, tmp_path):
    out = tmp_path / "cloze.jsonl"
    build_pairs(corpus, out, hard_negatives=2, tasks=["sentence-document"])
    rows = load(out)
    assert rows and {r["task"] for r in rows} == {"sentence-document"}
    for r in rows:
        assert r["instruction"] == INSTRUCTIONS["sentence-document"]
        assert r["query"] not in r["positive"]  # the sentence is cut from its document
        assert r["positive"] not in r["negatives"]
        assert not any(m in r["positive"] for m in MARKERS)  # finetune split only


def test_miner_remines_with_a_model(corpus, checkpoints, tmp_path):
    from diffembed.model.embedder import Embedder

    model_dir = Embedder.load(checkpoints["llama"]).save(tmp_path / "model")
    out = tmp_path / "mined.jsonl"
    report = build_pairs(
        corpus, out, hard_negatives=2, tasks=["gloss-hypernym", "synopsis-page"], miner=model_dir,
        miner_skip=1,
    )  # fmt: skip
    assert report["miner"]["skip"] == 1
    for task in ("gloss-hypernym", "synopsis-page"):
        assert "overlap_with_bm25" in report["tasks"][task]["model"]
    pairs = read_pairs(out)
    assert pairs and all(p.positive not in p.negatives and p.negatives for p in pairs)


def test_cli_pairs_build(corpus, tmp_path):
    parser = argparse.ArgumentParser(prog="diffembed")
    add_pairs_parser(parser.add_subparsers(dest="verb", required=True))
    out = tmp_path / "cli.jsonl"
    args = parser.parse_args(
        ["pairs", "build", "--corpus", str(corpus), "--out", str(out), "--seed", "3",
         "--hard-negatives", "2", "--tasks", "heading-section,question-answer", "--no-progress"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert {r["task"] for r in load(out)} == {"heading-section", "question-answer"}
    with pytest.raises(SystemExit):
        parser.parse_args(["pairs", "build", "--corpus", "x", "--out", "y", "--tasks", "bad"])


def test_pretrain_split_gives_the_same_task_types_from_its_own_documents(tmp_path):
    root = tmp_path / "c"
    write_corpus(root)
    # the pretrain split holds the finetune documents (relabelled) and the marker documents
    moved = [{**r, "split": "pretrain"} for r in finetune_records()]
    with (root / "pretrain.jsonl").open("w", encoding="utf-8") as f:
        for r in moved + other_split_records()["pretrain"]:
            f.write(json.dumps(r) + "\n")
    (root / "finetune.jsonl").write_text(json.dumps(finetune_records()[0]) + "\n")
    out = tmp_path / "p.jsonl"
    report = build_pairs(root, out, hard_negatives=2, split="pretrain")
    rows = load(out)
    assert report["split"] == "pretrain" and report["split_documents"] == len(moved) + 3
    tasks = {r["task"] for r in rows}
    assert {"definition-entry", "synopsis-page", "heading-section"} <= tasks
    assert "problem-concept" not in tasks  # from the concept catalogue: finetune split only
    text = out.read_text(encoding="utf-8").lower()
    assert "xylarium" not in text  # never an eval document
    with pytest.raises(ValueError, match="finetune split"):
        build_pairs(root, tmp_path / "q.jsonl", split="pretrain", tasks=["problem-concept"])
    with pytest.raises(PairsBuildError, match="split 'eval'"):
        build_pairs(root, tmp_path / "q.jsonl", split="eval")
