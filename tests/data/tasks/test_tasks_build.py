"""Task builders on a small synthetic corpus: every folder validates, builds are reproducible
byte for byte, only eval-split documents are used, and each suite's invariants hold."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from diffembed.cli.data import add_tasks_parser
from diffembed.data.concepts import concepts_of
from diffembed.data.tasks import SUITES, build_suite
from diffembed.data.tasks.traditional import gensim_test_data
from diffembed.formats.tasks import find_tasks, load_task

EXPECTED = {
    "longdoc": {
        "passkey-256",
        "passkey-512",
        "needle-256",
        "needle-512",
        "python-synopsis",
        "man-page",
        "section-heading",
        "position-start",
        "position-middle",
        "position-end",
    },
    "reasoning": {"wordnet-hypernym", "reverse-dictionary", "concept-problems"},
    "instruct": {"wordnet-pos", "wordnet-lexname", "man-section"},
    "traditional": {
        "headword-definition",
        "faq",
        "man-description",
        "gloss-webster",
        "wordnet-lexname",
    },
}
SIMILARITY = {"lee50", "simlex999", "wordsim353"}
MAX_LENGTH = 512  # as built by the built_tasks fixture


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _split_ids(corpus: Path, split: str) -> set[str]:
    return {r["id"] for r in _rows(corpus / f"{split}.jsonl")}


def test_every_task_validates(built_tasks: Path) -> None:
    for suite in SUITES:
        names = {p.name for p in find_tasks(built_tasks, suite)}
        expected = EXPECTED[suite] | (SIMILARITY if suite == "traditional" else set())
        if suite == "traditional" and gensim_test_data() is None:
            expected -= SIMILARITY
        assert names == expected, suite
        for path in find_tasks(built_tasks, suite):
            task = load_task(path)
            assert task.suite == suite and task.name == path.name
            meta = task.meta
            assert meta["seed"] == 3 and meta["corpus"]["eval_sha256"].startswith("sha256:")
            assert meta["bm25"] is not None and meta["bm25"]["metric"] == task.metric
            if task.kind == "retrieval":
                assert 0.0 <= meta["bm25"]["main_score"] <= 1.0
                assert len(task.queries) <= 1000 and len(task.corpus) <= 10000
        summary = json.loads((built_tasks / suite / "summary.json").read_text())
        assert {t["name"] for t in summary["tasks"]} == names


def test_builds_are_byte_identical(built_tasks: Path, fixture_corpus: Path, tmp_path: Path) -> None:
    for suite in ("reasoning", "instruct"):
        build_suite(suite, fixture_corpus, tmp_path, seed=3, max_length_tokens=MAX_LENGTH)
        first = sorted(p for p in (built_tasks / suite).rglob("*") if p.is_file())
        second = sorted(p for p in (tmp_path / suite).rglob("*") if p.is_file())
        assert [p.relative_to(built_tasks) for p in first] == [
            p.relative_to(tmp_path) for p in second
        ]
        for a, b in zip(first, second, strict=True):
            assert a.read_bytes() == b.read_bytes(), a


def test_longdoc_is_byte_identical_and_seed_matters(
    built_tasks: Path, fixture_corpus: Path, tmp_path: Path
) -> None:
    build_suite("longdoc", fixture_corpus, tmp_path / "a", seed=3, max_length_tokens=256)
    build_suite("longdoc", fixture_corpus, tmp_path / "b", seed=4, max_length_tokens=256)
    same = tmp_path / "a" / "longdoc" / "passkey-256" / "corpus.jsonl"
    assert same.read_bytes() == (built_tasks / "longdoc/passkey-256/corpus.jsonl").read_bytes()
    assert same.read_bytes() != (tmp_path / "b/longdoc/passkey-256/corpus.jsonl").read_bytes()
    assert not (tmp_path / "a" / "longdoc" / "passkey-512").exists()


def test_only_eval_documents_are_used(built_tasks: Path, fixture_corpus: Path) -> None:
    forbidden = _split_ids(fixture_corpus, "pretrain") | _split_ids(fixture_corpus, "finetune")
    forbidden.add("perl:leaky")  # an eval id whose text is also in pretrain (man:leaky.1)
    eval_ids = _split_ids(fixture_corpus, "eval")
    seen: set[str] = set()
    for path in find_tasks(built_tasks):
        text = "\n".join(p.read_text("utf-8") for p in sorted(path.rglob("*")) if p.is_file())
        for doc_id in forbidden:
            assert json.dumps(doc_id) not in text, (path, doc_id)
        for name in ("corpus.jsonl", "items.jsonl"):
            if (path / name).exists():
                for row in _rows(path / name):
                    ids = [row["_id"].split("#")[0], *row.get("source_ids", [])]
                    ids += [row[k] for k in ("source_id", "evidence_id") if k in row]
                    for i in ids:
                        if ":" in i and not i.startswith("concept:"):
                            assert i in eval_ids, (path, i)
                            seen.add(i)
    assert seen  # the check above looked at real ids
    assert "gcide:Wncopy" not in seen  # WordNet-derived GCIDE copies are never used


@pytest.mark.parametrize("length", [256, 512])
def test_passkey_documents(built_tasks: Path, length: int) -> None:
    task = load_task(built_tasks / "longdoc" / f"passkey-{length}")
    assert len(task.corpus) == 100 and len(task.queries) == 50 and task.metric == "ndcg_at_1"
    for doc in task.corpus:
        assert abs(len(doc.text.split()) - length) <= 0.05 * length
        assert len(re.findall(r"pass key is \d+\. Remember it\.", doc.text)) == 1
    texts = {d.id: d.text for d in task.corpus}
    for q in task.queries:
        (relevant,) = task.qrels[q.id]
        name = re.fullmatch(r"What is the pass key for (.+)\?", q.text).group(1)
        holders = [d for d, t in texts.items() if q.meta["answer"] in t or name in t]
        assert holders == [relevant]


def test_needle_answer_only_in_relevant_document(built_tasks: Path) -> None:
    task = load_task(built_tasks / "longdoc" / "needle-512")
    texts = {d.id: d.text.lower() for d in task.corpus}
    for q in task.queries:
        (relevant,) = task.qrels[q.id]
        holders = [d for d, t in texts.items() if q.meta["answer"].lower() in t]
        assert holders == [relevant]
        words = set(re.findall(r"[a-z]+", q.text.lower()))
        lemma = max(words - {"what", "does", "the", "word", "mean", "how", "would", "you"}, key=len)
        assert [d for d, t in texts.items() if re.search(rf"\b{lemma}\b", t)] == [relevant]


def test_position_tasks_differ_only_in_position(built_tasks: Path) -> None:
    tasks = {b: load_task(built_tasks / "longdoc" / f"position-{b}") for b in ("start", "end")}
    assert [q.text for q in tasks["start"].queries] == [q.text for q in tasks["end"].queries]
    for a, b in zip(tasks["start"].corpus, tasks["end"].corpus, strict=True):
        assert a.id == b.id and sorted(a.text.split()) == sorted(b.text.split())
        fact = next(p for p in a.text.split("\n\n") if re.match(r"An? \w+ is ", p))
        assert a.text.index(fact) < 0.15 * len(a.text) < 0.85 * len(b.text) < b.text.index(fact)


def test_real_long_documents_hide_the_query(built_tasks: Path) -> None:
    task = load_task(built_tasks / "longdoc" / "python-synopsis")
    docs = {d.id: d.text for d in task.corpus}
    for q in task.queries:
        for d in task.qrels[q.id]:
            assert q.text not in docs[d]
    man = load_task(built_tasks / "longdoc" / "man-page")
    docs = {d.id: d.text for d in man.corpus}
    for q in man.queries:
        for d in man.qrels[q.id]:
            assert not docs[d].startswith("NAME") and f" - {q.text}" not in docs[d]


def test_instruct_changed_relevance_is_a_strict_subset(built_tasks: Path) -> None:
    for name in EXPECTED["instruct"]:
        task = load_task(built_tasks / "instruct" / name)
        assert task.kind == "instruct" and task.metric == "p-mrr"
        for q in task.queries:
            og = {d for d, s in task.qrels_og[q.id].items() if s > 0}
            changed = {d for d, s in task.qrels_changed.get(q.id, {}).items() if s > 0}
            assert changed and changed < og, (name, q.id)
            assert q.instruction_og != q.instruction_changed
        # a bag-of-words retriever sees the same content words in both instructions
        assert task.meta["bm25"]["metrics"]["p-mrr"] == pytest.approx(0.0, abs=1e-9)


def test_reasoning_queries_hide_their_answers(built_tasks: Path) -> None:
    task = load_task(built_tasks / "reasoning" / "wordnet-hypernym")
    titles = {d.id: d.title for d in task.corpus}
    for q in task.queries:
        assert q.id.removeprefix("wordnet-hypernym-") not in titles  # the hyponym is not a doc
        for d in task.qrels[q.id]:
            for lemma in titles[d].split(", "):
                assert not re.search(rf"\b{re.escape(lemma)}\b", q.text, re.IGNORECASE)
    concepts = load_task(built_tasks / "reasoning" / "concept-problems")
    eval_side = {c.id for c in concepts_of("eval")}
    assert concepts.meta["external"]["n_concepts"] == len(eval_side) >= 15
    assert {q.meta["concept"] for q in concepts.queries} == eval_side
    # no finetune-side concept document is in the evaluation corpus
    assert {d.id for d in concepts.corpus if d.id.startswith("concept:")} == {
        f"concept:{c}" for c in eval_side
    }


def test_traditional_tasks(built_tasks: Path) -> None:
    cls = load_task(built_tasks / "traditional" / "wordnet-lexname")
    assert cls.kind == "classification" and len({it.label for it in cls.items}) == 3
    faq = load_task(built_tasks / "traditional" / "faq")
    assert all(q.text.endswith("?") for q in faq.queries) and len(faq.queries) == 6
    if gensim_test_data() is not None:
        lee = load_task(built_tasks / "traditional" / "lee50")
        assert lee.kind == "similarity" and len(lee.pairs) == 1225 and lee.metric == "pearson"


def test_tokenizer_length_unit(fixture_corpus: Path, tmp_path: Path, tokenizer) -> None:
    from diffembed.data.tasks.common import BuildContext, TokenizerMeter
    from diffembed.data.tasks.eval_corpus import EvalCorpus
    from diffembed.data.tasks.haystack import Filler
    from diffembed.data.tasks.longdoc import FILLER_SOURCES, build_synthetic

    corpus = EvalCorpus.load(fixture_corpus)
    ctx = BuildContext(corpus=corpus, meter=TokenizerMeter(tokenizer), measure_bm25=False)
    filler = Filler.from_corpus(corpus.sources(FILLER_SOURCES))
    build_synthetic(ctx, tmp_path, "passkey", 256, filler)
    task = load_task(tmp_path / "passkey-256")
    assert task.meta["length_unit"].startswith("tokens of")
    for doc in task.corpus[:10]:
        n = len(tokenizer.encode(doc.text, add_special_tokens=False))
        assert 0.95 * 256 <= n <= 256


def test_cli(fixture_corpus: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_tasks_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(
        [
            "tasks",
            "build",
            "--corpus",
            str(fixture_corpus),
            "--out",
            str(tmp_path),
            "--suite",
            "instruct",
            "--seed",
            "1",
            "--no-bm25",
        ]
    )
    assert args.func(args) == 0
    assert {p.name for p in find_tasks(tmp_path)} == EXPECTED["instruct"]
    assert load_task(tmp_path / "instruct" / "man-section").meta["bm25"] is None
    with pytest.raises(SystemExit):
        parser.parse_args(["tasks", "build", "--corpus", "x", "--out", "y", "--suite", "nope"])
