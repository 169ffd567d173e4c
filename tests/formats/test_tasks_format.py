"""Task folders: writing, loading, strict validation with file and line, discovery, hashing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diffembed.formats.task_writer import write_task
from diffembed.formats.tasks import (
    QRELS_HEADER,
    TaskFormatError,
    find_tasks,
    hash_task,
    load_task,
)

CORPUS = [
    {"_id": "d0", "title": "Fox", "text": "The quick brown fox.", "position": "start"},
    {"_id": "d1", "text": "Cats sleep all day."},
    {"_id": "d2", "title": "", "text": "Python is a language."},
]
QUERIES = [{"_id": "q0", "text": "fox"}, {"_id": "q1", "text": "python"}]
QRELS = {"q0": {"d0": 1, "d1": 0}, "q1": {"d2": 2}}


def retrieval_task(path: Path, **kw) -> Path:
    args = dict(
        name="demo",
        suite="traditional",
        instruction="Retrieve the passage",
        corpus=CORPUS,
        queries=QUERIES,
        qrels=QRELS,
        extra={"source": "test", "seed": 3},
    )
    args.update(kw)
    write_task(path, **args)
    return path


def test_write_then_load_round_trip(tmp_path):
    task = load_task(retrieval_task(tmp_path / "t"))
    assert (task.name, task.suite, task.kind, task.metric) == (
        "demo",
        "traditional",
        "retrieval",
        "ndcg_at_10",
    )
    assert task.instruction == "Retrieve the passage"
    assert [d.id for d in task.corpus] == ["d0", "d1", "d2"]
    assert task.corpus[0].full_text == "Fox The quick brown fox."
    assert task.corpus[1].full_text == "Cats sleep all day."
    assert task.corpus[0].meta == {"position": "start"}
    assert task.qrels == QRELS
    assert task.meta == {"source": "test", "seed": 3}
    assert task.key == "traditional/demo"
    lines = (tmp_path / "t" / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == QRELS_HEADER and lines[1] == "q0\td0\t1"
    first = json.loads((tmp_path / "t" / "corpus.jsonl").read_text().splitlines()[0])
    assert list(first) == ["_id", "title", "text", "position"]


def test_write_is_byte_reproducible_and_replaces(tmp_path):
    a = retrieval_task(tmp_path / "a")
    b = retrieval_task(tmp_path / "b")
    assert hash_task(a) == hash_task(b)
    retrieval_task(tmp_path / "b", instruction="Another instruction")
    assert hash_task(a) != hash_task(b)
    assert load_task(b).instruction == "Another instruction"
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no temporary folders left


def test_write_invalid_task_leaves_old_folder(tmp_path):
    path = retrieval_task(tmp_path / "t")
    before = hash_task(path)
    with pytest.raises(TaskFormatError, match=r"t/qrels/test.tsv:\d+: unknown corpus id 'dX'"):
        retrieval_task(path, qrels={"q0": {"dX": 1}})
    assert hash_task(path) == before
    assert sorted(os.listdir(tmp_path)) == ["t"]


def test_write_task_checks_arguments(tmp_path):
    with pytest.raises(TypeError, match="missing"):
        write_task(tmp_path / "x", name="x", suite=None, corpus=CORPUS, queries=QUERIES)
    with pytest.raises(TypeError, match="not applicable"):
        write_task(
            tmp_path / "x",
            name="x",
            suite=None,
            corpus=CORPUS,
            queries=QUERIES,
            qrels=QRELS,
            items=[],
        )
    with pytest.raises(TypeError, match="extra must not set"):
        retrieval_task(tmp_path / "x", extra={"metric": "map"})


def test_plain_beir_folder_defaults(tmp_path):
    path = retrieval_task(tmp_path / "plain-beir")
    (path / "task.json").unlink()
    task = load_task(path)
    assert (task.name, task.suite, task.kind, task.metric, task.instruction) == (
        "plain-beir",
        None,
        "retrieval",
        "ndcg_at_10",
        None,
    )


def _edit(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _corpus_lines(path: Path) -> list[str]:
    return (path / "corpus.jsonl").read_text().splitlines()


@pytest.mark.parametrize(
    "breaker, message",
    [
        (lambda p: (p / "corpus.jsonl").unlink(), r"corpus.jsonl: no such file"),
        (lambda p: (p / "qrels" / "test.tsv").unlink(), r"qrels/test.tsv: no such file"),
        (
            lambda p: _edit(p / "corpus.jsonl", [*_corpus_lines(p)[:1], "{not json", "{}"]),
            r"corpus.jsonl:2: invalid JSON",
        ),
        (
            lambda p: _edit(p / "queries.jsonl", ['{"text": "fox"}']),
            r"queries.jsonl:1: missing field '_id'",
        ),
        (
            lambda p: _edit(p / "corpus.jsonl", [*_corpus_lines(p)[:2], '{"_id": "d2"}']),
            r"corpus.jsonl:3: missing field 'text'",
        ),
        (
            lambda p: _edit(p / "queries.jsonl", ['{"_id": "q0", "text": "  "}']),
            r"queries.jsonl:1: field 'text' is empty",
        ),
        (
            lambda p: _edit(p / "corpus.jsonl", [*_corpus_lines(p), _corpus_lines(p)[0]]),
            r"corpus.jsonl:4: duplicate _id 'd0' \(first on line 1\)",
        ),
        (
            lambda p: _edit(p / "corpus.jsonl", [*_corpus_lines(p), "", '{"_id":"d9","text":"x"}']),
            r"corpus.jsonl:4: empty line",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", ["query-id\tdoc-id\tscore", "q0\td0\t1"]),
            r"qrels/test.tsv:1: bad header",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0\td0\t1", "q7\td0\t1"]),
            r"qrels/test.tsv:3: unknown query id 'q7'",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0\td7\t1"]),
            r"qrels/test.tsv:2: unknown corpus id 'd7'",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0\td0\t1.5"]),
            r"qrels/test.tsv:2: score '1.5' is not an integer",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0 d0 1"]),
            r"qrels/test.tsv:2: expected 3 tab-separated fields",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0\td0\t1", "q0\td0\t0"]),
            r"qrels/test.tsv:3: duplicate pair",
        ),
        (
            lambda p: _edit(p / "qrels" / "test.tsv", [QRELS_HEADER, "q0\td0\t0"]),
            r"qrels/test.tsv: no relevant",
        ),
        (
            lambda p: (p / "task.json").write_text('{"suite": "misc"}'),
            r"task.json: suite 'misc' is not one of",
        ),
        (
            lambda p: (p / "task.json").write_text('{"metric": "p-mrr"}'),
            r"task.json: metric 'p-mrr' is not one of",
        ),
        (
            lambda p: (p / "task.json").write_text('{"name": "x",\n "suite": }'),
            r"task.json:2: invalid JSON",
        ),
        (
            lambda p: (p / "corpus.jsonl").write_bytes(b'{"_id": "d0", "text": "\xff"}\n'),
            r"corpus.jsonl:1: not valid UTF-8",
        ),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path, breaker, message):
    path = retrieval_task(tmp_path / "t")
    breaker(path)
    with pytest.raises(TaskFormatError, match=message):
        load_task(path)


INSTRUCT_QUERIES = [
    {
        "_id": "q0",
        "text": "animals",
        "instruction_og": "Any animal is relevant.",
        "instruction_changed": "Only cats are relevant.",
    }
]


def instruct_task(path: Path, **kw) -> Path:
    args = dict(
        name="follow",
        suite="instruct",
        kind="instruct",
        corpus=CORPUS,
        queries=INSTRUCT_QUERIES,
        qrels_og={"q0": {"d0": 1, "d1": 1}},
        qrels_changed={"q0": {"d0": 0, "d1": 1}},
    )
    args.update(kw)
    write_task(path, **args)
    return path


def test_instruct_task_schema(tmp_path):
    task = load_task(instruct_task(tmp_path / "i"))
    assert task.kind == "instruct" and task.metric == "p-mrr"
    assert task.queries[0].instruction_og == "Any animal is relevant."
    assert task.queries[0].instruction_changed == "Only cats are relevant."
    assert task.changed_docs() == {"q0": ["d0"]}
    assert sorted(os.listdir(tmp_path / "i" / "qrels")) == ["changed.tsv", "og.tsv"]


def test_instruct_task_errors(tmp_path):
    with pytest.raises(TaskFormatError, match=r"queries.jsonl:1: missing field 'instruction_og'"):
        instruct_task(tmp_path / "a", queries=QUERIES[:1])
    with pytest.raises(TaskFormatError, match="p-MRR is undefined"):
        instruct_task(tmp_path / "b", qrels_changed={"q0": {"d0": 1, "d1": 1}})
    path = instruct_task(tmp_path / "c")
    (path / "qrels" / "test.tsv").write_text(QRELS_HEADER + "\nq0\td0\t1\n")
    with pytest.raises(TaskFormatError, match="not test.tsv"):
        load_task(path)


def test_classification_and_similarity_tasks(tmp_path):
    items = [
        {"_id": "a", "text": "dog", "label": "animal", "split": "train"},
        {"_id": "b", "text": "cat", "label": "animal", "split": "test"},
        {"_id": "c", "text": "java", "label": 3, "split": "train"},
    ]
    task = write_task(
        tmp_path / "c", name="c", suite="traditional", kind="classification", items=items, k=1
    )
    assert [(it.id, it.label, it.split) for it in task.items] == [
        ("a", "animal", "train"),
        ("b", "animal", "test"),
        ("c", "3", "train"),
    ]
    assert task.k == 1 and task.metric == "accuracy"
    items[1] = {"_id": "b", "text": "cat", "label": "animal"}
    with pytest.raises(TaskFormatError, match=r"items.jsonl:2: 'split' must be on every line"):
        write_task(tmp_path / "c2", name="c", suite=None, kind="classification", items=items)
    with pytest.raises(TaskFormatError, match="k=9 exceeds"):
        loo = [{k: v for k, v in it.items() if k != "split"} for it in items]
        write_task(tmp_path / "c3", name="c", suite=None, kind="classification", items=loo, k=9)

    pairs = [{"text1": "a", "text2": "b", "score": s} for s in (1, 2.5, 4)]
    task = write_task(tmp_path / "s", name="s", suite="traditional", kind="similarity", pairs=pairs)
    assert [p.score for p in task.pairs] == [1.0, 2.5, 4.0] and task.metric == "spearman"
    with pytest.raises(TaskFormatError, match=r"pairs.jsonl:2: score 'x' is not a finite number"):
        write_task(
            tmp_path / "s2",
            name="s",
            suite=None,
            kind="similarity",
            pairs=[pairs[0], {"text1": "a", "text2": "b", "score": "x"}, pairs[2]],
        )


def test_find_tasks(tmp_path):
    retrieval_task(tmp_path / "traditional" / "b")
    retrieval_task(tmp_path / "traditional" / "a")
    instruct_task(tmp_path / "instruct" / "f")
    (tmp_path / "reasoning" / "not-a-task").mkdir(parents=True)
    assert [p.name for p in find_tasks(tmp_path)] == ["f", "a", "b"]
    assert [p.name for p in find_tasks(tmp_path, "traditional")] == ["a", "b"]
    assert find_tasks(tmp_path, "longdoc") == []
    with pytest.raises(ValueError, match="suite must be one of"):
        find_tasks(tmp_path, "nope")
