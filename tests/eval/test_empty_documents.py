"""Real collections load: documents with empty text and title (BEIR's Cranfield has two) are
kept out of the index with a counted warning, recorded in the result, and a relevant empty
document counts as not retrieved; ``index build`` skips them with a count or refuses them with
``--strict``. Other malformations still name file and line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from diffembed.cli.main import main
from diffembed.eval.evaluate import evaluate_model
from diffembed.formats.tasks import TaskFormatError, load_task


def write_beir(folder: Path, corpus: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "alpha"}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\te1\t1\n")
    return folder


CRANFIELD_LIKE = [
    {"_id": "d1", "title": "", "text": "alpha river"},
    {"_id": "e1", "title": "", "text": ""},
    {"_id": "d2", "title": "", "text": "beta gamma"},
    {"_id": "e2", "text": "   "},
]


def test_beir_empty_documents_are_left_out_counted_and_never_retrieved(tmp_path, caplog):
    task_dir = write_beir(tmp_path / "cran", CRANFIELD_LIKE)
    task = load_task(task_dir)
    assert [d.id for d in task.corpus] == ["d1", "d2"] and task.empty_docs == ["e1", "e2"]
    out = tmp_path / "res.json"
    with caplog.at_level(logging.WARNING):
        summary = evaluate_model("bm25", [task_dir], out, show_progress=False)
    record = summary["tasks"][0]
    assert record["empty_docs_skipped"] == 2 and record["n_docs"] == 2
    assert "2 document(s) with empty text and title left out" in caplog.text
    # d1 at rank 1; the relevant empty e1 is never retrieved: nDCG@10 = 1 / (1 + 1/log2 3).
    assert record["metrics"]["ndcg_at_10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert record["metrics"]["recall_at_100"] == pytest.approx(0.5)
    assert json.loads(out.read_text())["tasks"][0]["empty_docs_skipped"] == 2


def test_other_corpus_malformations_still_name_file_and_line(tmp_path):
    bad = [*CRANFIELD_LIKE, {"_id": "d3", "text": 7}]
    task_dir = write_beir(tmp_path / "bad", bad)
    with pytest.raises(TaskFormatError, match=r"corpus\.jsonl:5: field 'text' is int"):
        load_task(task_dir)
    only_empty = write_beir(tmp_path / "empty", [{"_id": "d1", "text": ""}])
    with pytest.raises(TaskFormatError, match="no documents with text"):
        load_task(only_empty)


def test_index_build_skips_empty_documents_or_refuses_with_strict(model_dir, tmp_path, caplog):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in CRANFIELD_LIKE))
    base = ["index", "build", "--model", str(model_dir), "--docs", str(docs), "--no-progress"]
    with caplog.at_level(logging.WARNING):
        assert main([*base, "--out", str(tmp_path / "ix")]) == 0
    assert "left out 2 document(s) with no text" in caplog.text
    assert f"{docs}:2 'e1'" in caplog.text  # the first one, by file and line
    from diffembed.index.store import VectorIndex

    with VectorIndex.open(tmp_path / "ix") as index:
        assert index.n_documents == 2
    assert main([*base, "--out", str(tmp_path / "ix2"), "--strict"]) == 2
    assert not (tmp_path / "ix2" / "meta.json").exists()


def test_index_strict_error_names_file_and_line(tmp_path, capsys, model_dir):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in CRANFIELD_LIKE))
    code = main(
        ["index", "build", "--model", str(model_dir), "--docs", str(docs), "--strict",
         "--out", str(tmp_path / "ix")]
    )  # fmt: skip
    assert code == 2
    assert f"{docs}:2: document 'e1' has no text" in capsys.readouterr().err


def test_instruct_task_with_an_empty_changed_document(tmp_path):
    task_dir = tmp_path / "fir"
    (task_dir / "qrels").mkdir(parents=True)
    (task_dir / "task.json").write_text(json.dumps({"kind": "instruct", "suite": "instruct"}))
    corpus = [
        {"_id": "d1", "text": "alpha river"},
        {"_id": "d2", "text": "beta gamma"},
        {"_id": "e1", "text": ""},
    ]
    (task_dir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    query = {"_id": "q1", "text": "alpha", "instruction_og": "river", "instruction_changed": "x"}
    (task_dir / "queries.jsonl").write_text(json.dumps(query) + "\n")
    head = "query-id\tcorpus-id\tscore\n"
    (task_dir / "qrels" / "og.tsv").write_text(head + "q1\td1\t1\nq1\te1\t1\n")
    (task_dir / "qrels" / "changed.tsv").write_text(head + "q1\td1\t0\nq1\te1\t0\nq1\td2\t1\n")
    summary = evaluate_model("bm25", [task_dir], tmp_path / "r.json", show_progress=False)
    record = summary["tasks"][0]
    # e1 has no rank on either side and is left out of p-MRR; d1 stays at rank 1 (BM25 ignores
    # the instruction only where it does not match: "river" lifts d1, "x" changes nothing).
    assert record["empty_docs_skipped"] == 1
    assert record["metrics"]["p-mrr"] == pytest.approx(0.0)
