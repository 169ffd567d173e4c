"""``diffembed demo``: the stdlib collection, the synopsis task, and a full run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from diffembed.demo import run_demo, stdlib_documents, write_synopsis_task
from diffembed.formats.tasks import load_task
from diffembed.model.backbone import load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import load_tokenizer


def test_stdlib_documents_are_real_pages_with_synopses() -> None:
    docs = stdlib_documents(limit=15)
    assert len(docs) == 15
    assert len({d["_id"] for d in docs}) == 15
    assert all(len(d["text"]) > 200 for d in docs)
    assert sum(1 for d in docs if len(d["synopsis"].split()) >= 3) >= 5


def test_synopsis_task_is_a_valid_beir_folder_without_the_answer_line(tmp_path: Path) -> None:
    docs = stdlib_documents(limit=15)
    task = load_task(write_synopsis_task(docs, tmp_path / "longdoc" / "stdlib-synopsis"))
    assert task.metric == "ndcg_at_10" and len(task.corpus) == 15
    by_id = {d.id: d.text for d in task.corpus}
    for q in task.queries:
        (doc_id,) = task.qrels[q.id]
        assert q.text not in by_id[doc_id]


def test_demo_runs_end_to_end(checkpoints, tmp_path: Path, capsys) -> None:
    path = checkpoints["qwen2"]
    model = Embedder(load_backbone(path), load_tokenizer(path), max_length=128)
    model.save(tmp_path / "model")
    assert run_demo(tmp_path / "model", tmp_path / "out", limit=12, show_progress=False) == 0
    printed = capsys.readouterr().out
    assert "query: regular expression matching" in printed
    assert "stdlib-synopsis" in printed and "bm25" in printed
    result = json.loads((tmp_path / "out" / "eval-bm25.json").read_text())
    assert result["tasks"][0]["n_docs"] == 12
