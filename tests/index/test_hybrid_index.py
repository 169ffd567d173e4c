"""An index's BM25 (diffembed.index.lexical): built in the same generation as the vectors, kept in
step by add, upsert and writers killed with SIGKILL, searched by ``--mode dense|bm25|hybrid``
with the fusion evaluation measures."""

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

from checkpoints import TOY_WORDS
from diffembed.cli.main import main
from diffembed.eval.fusion import fuse
from diffembed.eval.models import EmbedderRetriever
from diffembed.eval.ranking import sort_run
from diffembed.eval.retrievers import BM25Retriever, HybridRetriever
from diffembed.formats.corpus import Document
from diffembed.index.build import IndexSettings, add_documents, build_index
from diffembed.index.search import Searcher, rank_documents, retrieve
from diffembed.index.store import IndexFormatError, VectorIndex, current_generation
from diffembed.model.embedder import Embedder

WORDS = TOY_WORDS


def make_docs(n: int, seed: int = 0, prefix: str = "d") -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(id=f"{prefix}{i}", text=" ".join(rng.choice(WORDS, size=10)), title=f"t{i}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir, precision="fp32")


def check_in_step(index_dir: Path, expect: list[str] | None = None) -> VectorIndex:
    """Open the index (which checks the counts) and check that faiss rows, documents and BM25
    hold the same document set."""
    index = VectorIndex.open(index_dir)
    rows = {r[0] for r in index.db.execute("SELECT doc_id FROM vectors")}
    assert index.lexical is not None
    assert set(index.lexical.ids) == set(index.ids()) == rows
    assert index.lexical.ids == index.ids()  # BM25 row i is the i-th document
    assert index.meta["bm25"]["documents"] == index.n_documents
    if expect is not None:
        assert index.ids() == expect
    return index


# ----------------------------------------------------------------------------- build and modes
def test_build_keeps_bm25_and_search_modes(model_dir, embedder, tmp_path):
    docs = [*make_docs(12), Document(id="rare", text="zebra crossing manual for zebra keepers")]
    with build_index(docs, tmp_path / "ix", model_dir, embedder=embedder) as index:
        gen = current_generation(tmp_path / "ix")
        assert (gen / "bm25" / "ids.json").is_file()
        assert index.meta["bm25"]["stemmer"] and index.meta["bm25"]["k1"] == 1.5
        assert "BM25" in index.describe_mode()
    searcher = Searcher.open(tmp_path / "ix")
    index = searcher.index
    check_in_step(tmp_path / "ix", [d.id for d in docs]).close()
    # bm25: the one document with the word, and only documents sharing a term.
    hits = searcher.search("zebras", k=5, mode="bm25")
    assert [h.id for h in hits] == ["rare"] and hits[0].score > 0
    # dense: what the vectors say.
    q = searcher.encode_query("fox river")[None]
    dense = searcher.search("fox river", k=4, mode="dense")
    assert [h.id for h in dense] == [h.id for h in rank_documents(index, q, 4)[0]]
    # hybrid (the default): the fusion of the two candidate lists, by the one fuse function;
    # convex with alpha 0.1 unless asked otherwise (None: RRF).
    default = searcher.search("fox river", k=5)
    assert default == searcher.search("fox river", k=5, alpha=0.1)
    assert default != searcher.search("fox river", k=5, alpha=None)
    for alpha in (None, 0.3):
        want = fuse(
            [(h.id, h.score) for h in rank_documents(index, q, 100)[0]],
            index.lexical.top("fox river", 100),
            alpha,
        )
        got = searcher.search("fox river", k=5, alpha=alpha)
        assert [(h.id, round(h.score, 6)) for h in got] == [
            (d, round(s, 6)) for d, s in sort_run(dict(want))[:5]
        ]
    assert [h.id for h in searcher.search("zebra keepers", k=1)] == ["rare"]
    searcher.index.close()


def test_index_without_bm25_is_dense_only(model_dir, embedder, tmp_path):
    dense_only = IndexSettings(bm25=False)
    build_index(make_docs(4), tmp_path / "ix", model_dir, dense_only, embedder=embedder).close()
    assert not (current_generation(tmp_path / "ix") / "bm25").exists()
    with VectorIndex.open(tmp_path / "ix") as index:
        assert index.lexical is None and "bm25" not in index.meta
        q = embedder.encode_queries(["fox"])
        assert [h.id for h in retrieve(index, q, ["fox"], 3)[0]] == [
            h.id for h in rank_documents(index, q, 3)[0]
        ]
        with pytest.raises(ValueError, match="built without BM25"):
            retrieve(index, q, ["fox"], 3, mode="hybrid")
    # an add keeps it without BM25
    with add_documents(tmp_path / "ix", make_docs(2, prefix="z"), embedder=embedder) as index:
        assert index.lexical is None and index.n_documents == 6


def test_add_and_upsert_keep_bm25_in_step(model_dir, embedder, tmp_path):
    docs = make_docs(6)
    build_index(docs, tmp_path / "ix", model_dir, embedder=embedder).close()
    more = [Document(id="new", text="walrus habitat notes")]
    add_documents(tmp_path / "ix", more, embedder=embedder).close()
    changed = [Document(id="d2", text="ostrich eggs are large")]
    with add_documents(tmp_path / "ix", changed, embedder=embedder, upsert=True) as index:
        assert index.meta["bm25"]["documents"] == 7
    with check_in_step(tmp_path / "ix") as index:
        assert sorted(index.ids()) == sorted([d.id for d in docs] + ["new"])
        assert [d for d, _ in index.lexical.top("ostrich", 10)] == ["d2"]
        assert [d for d, _ in index.lexical.top("walrus", 10)] == ["new"]
        old_words = set(docs[2].text.split()) - {
            w for d in docs if d.id != "d2" for w in d.text.split()
        }
        for word in old_words:  # the replaced text is gone from BM25 too
            assert "d2" not in [d for d, _ in index.lexical.top(word, 10)]


def test_open_refuses_bm25_out_of_step(model_dir, embedder, tmp_path):
    build_index(make_docs(3), tmp_path / "ix", model_dir, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    ids = gen / "bm25" / "ids.json"
    ids.write_text(json.dumps(["d0", "d1"]))
    with pytest.raises(IndexFormatError, match="ids.json: .* when the generation was written"):
        VectorIndex.open(tmp_path / "ix")
    meta = json.loads((gen / "meta.json").read_text())
    del meta["files"]  # as written before checksums were recorded: the counts still check
    (gen / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="inconsistent: BM25 of 2 documents"):
        VectorIndex.open(tmp_path / "ix")
    ids.unlink()
    with pytest.raises(IndexFormatError, match="ids.json: unreadable"):
        VectorIndex.open(tmp_path / "ix")


# ----------------------------------------------------------------------------- one mechanism
def test_index_hybrid_equals_evaluated_hybrid(model_dir, embedder, tmp_path):
    """``diffembed eval --retriever hybrid`` scores exactly what index search returns."""
    docs = make_docs(15, seed=3)
    queries = ["fox river bank", "attention models"]
    alphas = ("default", None, 0.5)  # the default (convex 0.1) on both sides, RRF, convex 0.5
    with build_index(docs, tmp_path / "ix", model_dir, embedder=embedder) as index:
        vectors = embedder.encode_queries(queries)
        served = {
            a: retrieve(
                index, vectors, queries, len(docs), "hybrid", *([] if a == "default" else [a])
            )
            for a in alphas
        }
    for alpha in alphas:
        hybrid = HybridRetriever(
            EmbedderRetriever(embedder), BM25Retriever(), *([] if alpha == "default" else [alpha])
        )
        hybrid.index([d.id for d in docs], [d.full_text for d in docs])
        run = hybrid.search(["q0", "q1"], queries, top_k=len(docs)).run
        for qid, hits in zip(["q0", "q1"], served[alpha], strict=True):
            got = {h.id: h.score for h in hits}
            assert set(got) == set(run[qid])
            np.testing.assert_allclose(
                [got[d] for d in run[qid]], list(run[qid].values()), atol=1e-6
            )
            assert [h.id for h in hits] == [d for d, _ in sort_run(run[qid])]


# ----------------------------------------------------------------------------- crash safety
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import diffembed.eval.bm25 as bm25
    import diffembed.index.store as store
    from diffembed.formats.corpus import Document
    from diffembed.index.build import add_documents
    from diffembed.model.embedder import Embedder
    where, index_dir, model_dir, upsert = sys.argv[1:5]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "bm25":  # vectors and SQLite written, BM25 half written
        save = bm25.Bm25Index.save
        def half(self, directory):
            save(self, directory)
            (directory / "params.index.json").unlink()
            die()
        bm25.Bm25Index.save = half
    elif where == "swap":  # new generation complete, pointer not yet replaced
        store.swap_current = die
    docs = [Document(id=f"d{i}" if upsert == "1" else f"k{i}", text=f"killed text {i} walrus")
            for i in range(3)]
    add_documents(index_dir, docs, embedder=Embedder.load(model_dir), upsert=upsert == "1")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["bm25", "swap"])
@pytest.mark.parametrize("upsert", ["0", "1"])
def test_kill_9_keeps_bm25_and_faiss_in_step(model_dir, embedder, tmp_path, where, upsert):
    docs = make_docs(5)
    build_index(docs, tmp_path / "ix", model_dir, embedder=embedder).close()
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, where, str(tmp_path / "ix"), str(model_dir), upsert],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with check_in_step(tmp_path / "ix", [d.id for d in docs]) as index:
        assert index.meta["generation"] == 1
        assert index.lexical.top("walrus", 10) == []  # the killed writer's text is not there
    with add_documents(tmp_path / "ix", make_docs(2, prefix="z"), embedder=embedder) as index:
        assert index.n_documents == 7
    check_in_step(tmp_path / "ix").close()


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
        docs = [Document(id=f"d{i}", text=f"loop step{n} text {i} river") for i in range(3)]
        docs += [Document(id=f"loop{n}-{i}", text=f"loop text {n} {i} river") for i in range(10)]
        add_documents(index_dir, docs, embedder=emb, upsert=True)
        print("added", n, flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_at_a_random_moment_keeps_bm25_in_step(model_dir, embedder, tmp_path):
    build_index(make_docs(5), tmp_path / "ix", model_dir, embedder=embedder).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOPER, str(tmp_path / "ix"), str(model_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    assert proc.stdout.readline().split()[:2] == ["added", "0"]
    start = time.monotonic()
    assert proc.stdout.readline().split()[:2] == ["added", "1"]
    rng = np.random.default_rng(1)
    time.sleep((time.monotonic() - start) * float(rng.uniform(0.0, 1.5)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with check_in_step(tmp_path / "ix") as index:
        assert (index.n_documents - 5) % 10 == 0  # whole upserts only
        n = index.meta["generation"] - 2  # the last complete add
        texts = {index.document(f"d{i}")["text"] for i in range(3)}
        assert texts == {f"loop step{n} text {i} river" for i in range(3)}
        assert {d for d, _ in index.lexical.top(f"step{n}", 50)} == {"d0", "d1", "d2"}


# ----------------------------------------------------------------------------- CLI
def test_cli_modes(model_dir, tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    docs = [*make_docs(6), Document(id="rare", text="zebra manual")]
    src.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs))
    ix = str(tmp_path / "ix")
    assert main(["index", "build", "--model", str(model_dir), "--docs", str(src), "--out", ix]) == 0
    capsys.readouterr()
    for mode, extra, fusion, alpha in (
        ("bm25", [], None, None),
        ("hybrid", ["--alpha", "0.4"], "convex", 0.4),
        (None, [], "convex", 0.1),
        ("hybrid", ["--fusion", "rrf"], "rrf", None),
    ):
        argv = ["search", ix, "zebra", "-k", "3", "--json", *extra]
        assert main(argv + (["--mode", mode] if mode else [])) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["search"] == {"mode": mode or "hybrid", "fusion": fusion, "alpha": alpha}
        assert out["hits"][0]["id"] == "rare"
    # The rankings are those of the one fuse function on the same candidates: convex 0.1 by
    # default, RRF with --fusion rrf.
    searcher = Searcher.open(ix)
    q = searcher.encode_query("fox river")[None]
    dense = [(h.id, h.score) for h in rank_documents(searcher.index, q, 100)[0]]
    sparse = searcher.index.lexical.top("fox river", 100)
    searcher.index.close()
    for extra, alpha in (([], 0.1), (["--fusion", "rrf"], None), (["--fusion", "convex"], 0.1)):
        assert main(["search", ix, "fox river", "-k", "5", "--json", *extra]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        want = sort_run(dict(fuse(dense, sparse, alpha)))[:5]
        assert [(h["id"], round(h["score"], 6)) for h in hits] == [
            (d, round(s, 6)) for d, s in want
        ]
    assert main(["search", ix, "zebra", "-k", "1"]) == 0
    assert "search: hybrid (convex alpha=0.1)" in capsys.readouterr().out
    assert main(["search", ix, "zebra", "-k", "1", "--fusion", "rrf"]) == 0
    assert "search: hybrid (RRF k=60)" in capsys.readouterr().out
    for bad, message in (
        (["--mode", "dense", "--alpha", "0.5"], "--alpha"),
        (["--mode", "bm25", "--fusion", "rrf"], "--fusion"),
        (["--fusion", "rrf", "--alpha", "0.3"], "--alpha applies to --fusion convex"),
        (["--alpha", "2"], "between 0 and 1"),
    ):
        assert main(["search", ix, "zebra", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    plain = str(tmp_path / "plain")
    argv = ["index", "build", "--model", str(model_dir), "--docs", str(src), "--out", plain]
    assert main([*argv, "--no-bm25"]) == 0
    capsys.readouterr()
    assert main(["search", plain, "zebra", "--mode", "bm25"]) == 2
    assert "built without BM25" in capsys.readouterr().err
    assert main(["search", plain, "zebra", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["search"]["mode"] == "dense"


def test_bm25_matching_nothing_is_said(model_dir, embedder, tmp_path, capsys):
    """Issue 26: a BM25 query of only stop words, or of terms no document holds, returned
    nothing (or the model's ranking alone) without a word."""
    ix = tmp_path / "ix"
    build_index(make_docs(6), ix, model_dir, embedder=embedder).close()
    with VectorIndex.open(ix) as index:
        assert "stop words" in index.lexical.no_match("the of and")
        assert "'xylophon'" in index.lexical.no_match("xylophones")
        assert index.lexical.no_match("xylophones and foxes") is None  # 'fox' is known
    assert main(["search", str(ix), "the of and", "--mode", "bm25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("note: BM25 matched no document") and len(lines) == 2
    assert main(["search", str(ix), "xylophones", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "the ranking is the model's" in out["note"] and len(out["hits"]) == 2
    assert main(["search", str(ix), "fox", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] is None
