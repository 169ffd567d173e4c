"""Vector index: build/add/upsert/search parity with Embedder, chunking, model checks, CLI, and
crash safety (a writer killed with SIGKILL leaves the previous generation live and consistent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from diffembed.cli.main import main
from diffembed.formats.corpus import Document
from diffembed.index.build import DuplicateIdError, IndexSettings, add_documents, build_index
from diffembed.index.documents import DocumentsError, read_documents
from diffembed.index.search import Searcher, rank_documents
from diffembed.index.store import (
    CURRENT,
    IndexFormatError,
    ModelMismatchError,
    VectorIndex,
    current_generation,
)
from diffembed.model.chunking import Chunking, chunk_spans
from diffembed.model.embedder import Embedder

WORDS = [
    "fox",
    "dog",
    "river",
    "bank",
    "dictionary",
    "words",
    "synonyms",
    "diffusion",
    "tokens",
    "attention",
    "models",
    "next",
    "retrieval",
    "documents",
    "query",
    "candidates",
    "keys",
    "needles",
    "haystacks",
    "context",
    "encode",
    "list",
]


def make_docs(n: int, seed: int = 0, prefix: str = "d", length: int = 12) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(
            id=f"{prefix}{i}",
            text=" ".join(rng.choice(WORDS, size=length)),
            title=f"title {i}" if i % 3 == 0 else "",
            meta={"n": i},
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def other_model_dir(checkpoints, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("index") / "other"
    Embedder.load(checkpoints["qwen2"], max_length=48, precision="fp32").save(path)
    return path


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir, precision="fp32")


def brute_force(emb: Embedder, docs: list[Document], query: str, k: int) -> list[tuple[str, float]]:
    d = emb.encode_documents([x.full_text for x in docs])
    q = emb.encode([query])[0]
    scores = d @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [(docs[i].id, float(scores[i])) for i in order]


# ----------------------------------------------------------------------------- build and search
def test_build_search_matches_brute_force_and_records_settings(model_dir, embedder, tmp_path):
    docs = make_docs(30)
    with build_index(docs, tmp_path / "ix", model_dir, embedder=embedder) as index:
        assert index.n_documents == index.ntotal == 30
        np.testing.assert_allclose(
            index.vectors(), embedder.encode_documents([d.full_text for d in docs]), atol=1e-5
        )
        meta = index.meta
        assert meta["model"]["hash"].startswith("sha256:")
        assert meta["model"]["path"] == str(model_dir.resolve())
        assert meta["embedding"]["max_length"] == 48 and meta["embedding"]["precision"] == "fp32"
        assert meta["embedding"]["pooling"] == "mean" and meta["embedding"]["dim"] == 64
        assert meta["documents"]["mode"] == "whole" and meta["faiss"]["type"] == "flat"
        assert index.ids() == [d.id for d in docs]
        assert index.document("d3")["meta"] == {"n": 3}

    searcher = Searcher.open(tmp_path / "ix")
    query = docs[7].full_text
    hits = searcher.search(query, k=5, prompt="", mode="dense")  # the doc itself ranks first
    want = brute_force(embedder, docs, query, 5)
    assert [h.id for h in hits] == [w[0] for w in want]
    np.testing.assert_allclose([h.score for h in hits], [w[1] for w in want], atol=1e-5)
    assert hits[0].id == "d7" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].snippet == docs[7].full_text and hits[0].meta == {"n": 7}
    # Default: the model's query prompt is used.
    q = embedder.encode_queries([query])
    top = rank_documents(searcher.index, q, 3)[0]
    assert [h.id for h in searcher.search(query, k=3, mode="dense")] == [h.id for h in top]
    # k larger than the collection returns every document once.
    assert len(searcher.search("fox", k=100)) == 30


def test_build_refuses_existing_index_and_duplicate_ids(model_dir, embedder, tmp_path):
    docs = make_docs(4)
    build_index(docs, tmp_path / "ix", model_dir, embedder=embedder).close()
    with pytest.raises(FileExistsError, match="index add"):
        build_index(docs, tmp_path / "ix", model_dir, embedder=embedder)
    with build_index(
        make_docs(6), tmp_path / "ix", model_dir, embedder=embedder, overwrite=True
    ) as index:
        assert index.n_documents == 6 and index.meta["generation"] == 2
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [".lock", CURRENT, "gen-000002"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an index"):
        build_index(docs, tmp_path / "junk", model_dir, embedder=embedder)
    with pytest.raises(DuplicateIdError, match="'d1'"):
        build_index(docs + docs[1:2], tmp_path / "new", model_dir, embedder=embedder)


def test_add_append_duplicate_and_upsert(model_dir, embedder, tmp_path):
    docs = make_docs(10)
    build_index(docs, tmp_path / "ix", model_dir, embedder=embedder).close()
    extra = make_docs(5, seed=1, prefix="e")
    with add_documents(tmp_path / "ix", extra, embedder=embedder) as index:
        assert index.n_documents == index.ntotal == 15 and index.meta["generation"] == 2
        assert index.ids() == [d.id for d in docs + extra]
    # A duplicate id is an error naming it, and changes nothing.
    clash = [Document(id="d4", text="a new text about fox", source="new.jsonl:1")]
    with pytest.raises(DuplicateIdError, match=r"new.jsonl:1: id 'd4' is already"):
        add_documents(tmp_path / "ix", clash, embedder=embedder)
    with VectorIndex.open(tmp_path / "ix") as index:
        assert index.meta["generation"] == 2 and index.document("d4")["text"] == docs[4].text
    # Upsert replaces the document and its vector; rows are renumbered consistently.
    with add_documents(tmp_path / "ix", clash, embedder=embedder, upsert=True) as index:
        assert index.n_documents == index.ntotal == 15
        assert index.document("d4")["text"] == "a new text about fox"
        final = [d for d in docs + extra if d.id != "d4"] + clash
        assert index.ids() == [d.id for d in final]
        np.testing.assert_allclose(
            index.vectors(), embedder.encode_documents([d.full_text for d in final]), atol=1e-5
        )
        assert [h["op"] for h in index.meta["history"]] == ["build", "add", "upsert"]
    hits = Searcher.open(tmp_path / "ix").search("a new text about fox", 1, "", mode="dense")
    assert hits[0].id == "d4" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_refuses_to_mix_models(model_dir, other_model_dir, embedder, tmp_path):
    build_index(make_docs(3), tmp_path / "ix", model_dir, embedder=embedder).close()
    with pytest.raises(ModelMismatchError, match="never mixes models"):
        add_documents(tmp_path / "ix", make_docs(2, prefix="x"), model_dir=other_model_dir)
    with pytest.raises(ModelMismatchError):
        Searcher.open(tmp_path / "ix", other_model_dir)
    with VectorIndex.open(tmp_path / "ix") as index:
        assert index.n_documents == 3


def test_chunked_long_documents(model_dir, embedder, tmp_path):
    long_doc = Document(id="long", text=make_docs(1, seed=5, length=150)[0].text)  # >> 48 tokens
    docs = [long_doc, *make_docs(5)]
    with build_index(
        docs, tmp_path / "ix", model_dir, IndexSettings(Chunking(20, 5)), embedder=embedder
    ) as index:
        assert index.meta["documents"] == {
            "mode": "chunked",
            "chunk_tokens": 20,
            "chunk_overlap": 5,
            "chunking": "plain",
            "truncated": 0,
        }
        assert index.ntotal > index.n_documents == 6
        assert index.document("long")["n_chunks"] > 3
        assert "chunked" in index.describe_mode()
    searcher = Searcher.open(tmp_path / "ix")
    # A query equal to a middle chunk finds that chunk of the long document.
    tok = embedder.tokenizer
    offsets = tok(long_doc.text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    start, end, _ = chunk_spans(offsets, 20, 5)[3]
    hits = searcher.search(long_doc.text[start:end], k=6, prompt="", mode="dense")
    assert hits[0].id == "long" and hits[0].chunk == 3
    assert (hits[0].char_start, hits[0].char_end) == (start, end)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted(h.id for h in hits) == sorted(d.id for d in docs)  # each document once


def test_whole_documents_truncated_are_reported(model_dir, embedder, tmp_path, capsys):
    docs = [Document(id="long", text=" ".join(WORDS * 6)), *make_docs(3)]
    with build_index(docs, tmp_path / "ix", model_dir, embedder=embedder) as index:
        assert index.meta["documents"]["mode"] == "whole"
        assert index.meta["documents"]["truncated"] == 1
        assert index.document("long")["truncated"] and index.document("long")["tokens"] > 48
        assert "1 of 4 truncated" in index.describe_mode()
    hits = Searcher.open(tmp_path / "ix").search(docs[0].text, k=4, prompt="")
    assert hits[0].id == "long" and hits[0].truncated
    assert main(["search", str(tmp_path / "ix"), docs[0].text, "-k", "2", "--prompt", ""]) == 0
    out = capsys.readouterr().out
    assert "whole documents up to max_length=48" in out and "long [truncated]" in out


def test_chunk_spans_cover_all_tokens_with_overlap():
    offsets = [(i * 2, i * 2 + 1) for i in range(23)]
    spans = chunk_spans(offsets, 10, 3)
    assert [s[2] for s in spans] == [10, 10, 9]
    assert spans[0][:2] == (0, 19) and spans[1][0] == 14 and spans[-1][1] == 45
    assert chunk_spans(offsets[:5], 10, 3) == [(0, 9, 5)]
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_spans(offsets, 10, 10)


def test_hnsw_agrees_with_flat(model_dir, embedder, tmp_path):
    docs = make_docs(40)
    flat = build_index(docs, tmp_path / "flat", model_dir, embedder=embedder)
    hnsw_settings = IndexSettings(faiss_type="hnsw")
    hnsw = build_index(docs, tmp_path / "hnsw", model_dir, hnsw_settings, embedder=embedder)
    assert hnsw.meta["faiss"]["type"] == "hnsw"
    q = embedder.encode_queries(["fox river", "diffusion tokens", "keys needles"])
    for a, b in zip(rank_documents(flat, q, 5), rank_documents(hnsw, q, 5), strict=True):
        assert [h.id for h in a] == [h.id for h in b]
    add_documents(tmp_path / "hnsw", make_docs(3, prefix="h"), embedder=embedder).close()
    with VectorIndex.open(tmp_path / "hnsw") as index:
        assert index.ntotal == 43


# ----------------------------------------------------------------------------- input files
def test_read_documents_jsonl_folder_and_errors(tmp_path):
    good = tmp_path / "docs.jsonl"
    good.write_text(
        '{"_id": "a", "title": "T", "text": "alpha", "source": "x"}\n\n{"id": 7, "text": "b"}\n'
    )
    docs = read_documents(good)
    assert [(d.id, d.full_text, d.meta) for d in docs] == [
        ("a", "T alpha", {"source": "x"}),
        ("7", "b", {}),
    ]
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text("first doc")
    (folder / "sub" / "two.md").write_text("second doc")
    (folder / ".hidden").write_text("skip me")
    assert [(d.id, d.text) for d in read_documents(folder)] == [
        ("one.txt", "first doc"),
        ("sub/two.md", "second doc"),
    ]
    cases = {
        '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n': r":2: duplicate id 'a'.*line 1",
        '{"_id": "a", "text": "x"}\nnot json\n': r":2: invalid JSON",
        '{"_id": "a"}\n': r":1: missing field 'text'",
        '{"_id": "a", "text": 3}\n': r":1: field 'text' is int",
        '{"text": "x"}\n': r":1: missing field '_id'",
        '{"_id": "a", "text": "  "}\n': r":1: document 'a' has no text",
        "[1]\n": r":1: expected a JSON object",
        "": r"no documents",
    }
    for content, pattern in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(content)
        with pytest.raises(DocumentsError, match=pattern):
            read_documents(bad)
    with pytest.raises(DocumentsError, match="no such file"):
        read_documents(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------------- CLI
def test_cli_build_add_search_json(model_dir, tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    docs = make_docs(8)
    src.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs))
    ix = str(tmp_path / "ix")
    assert main(["index", "build", "--model", str(model_dir), "--docs", str(src), "--out", ix]) == 0
    more = tmp_path / "more"
    more.mkdir()
    (more / "n1.txt").write_text("needles in haystacks")
    assert main(["index", "add", ix, "--docs", str(more), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["index", "add", ix, "--docs", str(more)]) == 2
    assert "'n1.txt' is already in" in capsys.readouterr().err
    assert main(["search", ix, "needles in haystacks", "-k", "3", "--json", "--prompt", ""]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chunking"]["mode"] == "whole" and out["documents"] == 9 and "mode" not in out
    assert out["hits"][0]["id"] == "n1.txt" and out["hits"][0]["rank"] == 1
    assert len(out["hits"]) == 3
    assert main(["index", "info", ix]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == {"documents": 9, "vectors": 9}
    assert main(["search", str(tmp_path / "nope"), "q"]) == 2
    assert "not an index" in capsys.readouterr().err


def test_open_detects_inconsistent_generation(model_dir, embedder, tmp_path):
    build_index(make_docs(3), tmp_path / "ix", model_dir, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    meta = json.loads((gen / "meta.json").read_text())
    meta["count"]["vectors"] = 4
    (gen / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        VectorIndex.open(tmp_path / "ix")
    (tmp_path / "ix" / CURRENT).write_text("gen-000009\n")
    with pytest.raises(IndexFormatError, match="does not exist"):
        VectorIndex.open(tmp_path / "ix")


# ----------------------------------------------------------------------------- crash safety
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import diffembed.index.store as store
    from diffembed.formats.corpus import Document
    from diffembed.index.build import add_documents
    from diffembed.model.embedder import Embedder
    where, index_dir, model_dir = sys.argv[1:4]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "swap":  # new generation complete, pointer not yet replaced
        store.swap_current = die
    elif where == "faiss":  # SQLite written, faiss file not
        store.fsync_path = die
    docs = [Document(id=f"k{i}", text=f"killed writer text {i} fox") for i in range(6)]
    add_documents(index_dir, docs, embedder=Embedder.load(model_dir))
    """
)

LOOPER = textwrap.dedent(
    """
    import sys
    from diffembed.formats.corpus import Document
    from diffembed.index.build import add_documents
    from diffembed.model.embedder import Embedder
    index_dir, model_dir = sys.argv[1:3]
    emb = Embedder.load(model_dir)
    print("ready", flush=True)
    for n in range(10_000):
        docs = [Document(id=f"loop{n}-{i}", text=f"loop text {n} {i} river") for i in range(20)]
        add_documents(index_dir, docs, embedder=emb)
        print("added", n, flush=True)
    """
)


def _check_consistent(index_dir: Path, expect_ids: list[str] | None = None) -> VectorIndex:
    index = VectorIndex.open(index_dir)  # raises when counts disagree
    assert index.ntotal == index.n_documents == len(index.ids())
    if expect_ids is not None:
        assert index.ids() == expect_ids
    return index


@pytest.mark.slow
@pytest.mark.parametrize("where", ["swap", "faiss"])
def test_kill_9_during_add_leaves_previous_index(model_dir, embedder, tmp_path, where):
    docs = make_docs(5)
    build_index(docs, tmp_path / "ix", model_dir, embedder=embedder).close()
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, where, str(tmp_path / "ix"), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith((".gen", "gen"))]
    assert len(leftovers) == 2  # the live generation and the killed writer's
    with _check_consistent(tmp_path / "ix", [d.id for d in docs]) as index:
        assert index.meta["generation"] == 1
    searcher = Searcher.open(tmp_path / "ix")
    assert searcher.search(docs[2].text, k=1, prompt="")[0].id == "d2"
    # The next writer succeeds and removes the debris.
    with add_documents(tmp_path / "ix", make_docs(2, prefix="z"), embedder=embedder) as index:
        assert index.n_documents == 7
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert names == [".lock", CURRENT, index.generation.name]


@pytest.mark.slow
def test_kill_9_at_random_moments_keeps_index_consistent(model_dir, embedder, tmp_path):
    base = make_docs(5)
    build_index(base, tmp_path / "ix", model_dir, embedder=embedder).close()
    rng = np.random.default_rng(0)
    for _ in range(1):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOPER, str(tmp_path / "ix"), str(model_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        # Wait for two whole adds instead of a fixed time (a loaded machine may not finish
        # one in a second), then kill at a random moment of the next one: one add's duration,
        # measured, scaled by a random fraction in [0, 1.5).
        assert proc.stdout.readline().split()[:2] == ["added", "0"]
        start = time.monotonic()
        assert proc.stdout.readline().split()[:2] == ["added", "1"]
        time.sleep((time.monotonic() - start) * float(rng.uniform(0.0, 1.5)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with _check_consistent(tmp_path / "ix") as index:
            ids = index.ids()
            assert ids[:5] == [d.id for d in base]
            assert (len(ids) - 5) % 20 == 0  # whole adds only, never half of one
            gen = index.meta["generation"]
    assert gen > 2  # the writer really got through some adds before the kill
