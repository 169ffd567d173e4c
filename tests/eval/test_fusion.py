"""Hybrid retrieval's fusion (diffembed.eval.fusion) by hand, and the evaluated hybrid retriever:
on a fixture where dense and BM25 each find a different relevant document, hybrid finds both."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixed_retriever import FixedVectors

from diffembed.cli.main import main
from diffembed.eval.composed import compose_retriever
from diffembed.eval.fusion import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    FUSIONS,
    candidate_depth,
    check_alpha,
    convex_scores,
    describe_fusion,
    describe_search,
    fuse,
    fusion_label,
    minmax,
    resolve_fusion,
    rrf_scores,
    top_candidates,
)
from diffembed.eval.metrics import retrieval_metrics
from diffembed.eval.retrievers import BM25Retriever, HybridRetriever
from diffembed.formats.task_writer import write_task
from diffembed.model.chunking import Chunking

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
SPARSE = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_rrf_by_hand():
    got = rrf_scores([["a", "b", "c"], ["c", "d", "a"]], k=60)
    assert got == pytest.approx(
        {"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    )
    assert got["a"] == pytest.approx(0.0322664585)
    # a and c tie (1/61 + 1/63), b and d tie (1/62): ties go to the document seen first.
    assert [key for key, _ in fuse(DENSE, SPARSE, alpha=None)] == ["a", "c", "b", "d"]
    assert rrf_scores([["x"]], k=0) == {"x": 1.0}


def test_convex_combination_by_hand():
    assert minmax({"a": 0.9, "b": 0.8, "c": 0.1}) == pytest.approx({"a": 1, "b": 0.875, "c": 0})
    assert minmax({"x": 2.0, "y": 2.0}) == {"x": 1.0, "y": 1.0}
    assert minmax({}) == {}
    half = convex_scores(dict(DENSE), dict(SPARSE), 0.5)
    # dense' a 1, b 0.875, c 0; bm25' c 1, d (6 - 3) / 9, a 0; missing counts 0.
    assert half == pytest.approx({"a": 0.5, "b": 0.4375, "c": 0.5, "d": 1 / 6})
    assert [key for key, _ in fuse(DENSE, SPARSE, alpha=0.5)] == ["a", "c", "b", "d"]
    assert [key for key, _ in fuse(DENSE, SPARSE, alpha=1.0)][:2] == ["a", "b"]
    assert [key for key, _ in fuse(DENSE, SPARSE, alpha=0.0)][:2] == ["c", "d"]
    assert fuse([], []) == []


def test_fuse_defaults_to_convex_with_the_default_alpha():
    # dense' a 1, b 0.875, c 0; bm25' c 1, d 1/3, a 0: with alpha 0.1 BM25 leads.
    assert DEFAULT_ALPHA == 0.1 and DEFAULT_FUSION == "convex" and FUSIONS == ("convex", "rrf")
    assert fuse(DENSE, SPARSE) == fuse(DENSE, SPARSE, alpha=0.1)
    assert [key for key, _ in fuse(DENSE, SPARSE)] == ["c", "d", "a", "b"]
    assert fuse(DENSE, SPARSE) != fuse(DENSE, SPARSE, alpha=None)


def test_resolve_fusion_is_the_one_place_user_choices_become_alpha():
    assert resolve_fusion(None, None) == DEFAULT_ALPHA == 0.1
    assert resolve_fusion("convex", None) == 0.1
    assert resolve_fusion("convex", 0.3) == resolve_fusion(None, 0.3) == 0.3
    assert resolve_fusion("rrf", None) is None
    with pytest.raises(ValueError, match="--alpha applies to --fusion convex"):
        resolve_fusion("rrf", 0.3)
    with pytest.raises(ValueError, match="^alpha applies to fusion convex"):
        resolve_fusion("rrf", 0.3, flag="alpha")
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="--alpha must be a number between 0 and 1"):
            resolve_fusion(None, bad)
    with pytest.raises(ValueError, match="--fusion must be one of convex, rrf"):
        resolve_fusion("max", None)


def test_describe_fusion_and_search():
    assert describe_fusion(None) == {"method": "rrf", "k": 60}
    assert describe_fusion(0.1) == {"method": "convex", "alpha": 0.1}
    assert fusion_label(describe_fusion(None)) == "RRF k=60"
    assert fusion_label(describe_fusion(0.25)) == "convex alpha=0.25"
    assert describe_search("hybrid", 0.1) == {"mode": "hybrid", "fusion": "convex", "alpha": 0.1}
    assert describe_search("hybrid", None) == {"mode": "hybrid", "fusion": "rrf", "alpha": None}
    assert describe_search("dense", 0.1) == {"mode": "dense", "fusion": None, "alpha": None}


def test_alpha_depth_and_candidates():
    assert check_alpha(None) is None and check_alpha(1) == 1.0
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="--alpha must be a number between 0 and 1"):
            check_alpha(bad)
    assert candidate_depth(10) == 100 and candidate_depth(500) == 500
    scores = np.array([0.0, 3.0, 1.0, 3.0, -1.0])
    assert top_candidates(scores, 3) == [(1, 3.0), (3, 3.0), (2, 1.0)]
    assert top_candidates(scores, 9, positive=True) == [(1, 3.0), (3, 3.0), (2, 1.0)]
    tiebreak = np.array([0, 4, 1, 2, 3])  # document 3 before document 1 on ties
    assert top_candidates(scores, 2, tiebreak) == [(3, 3.0), (1, 3.0)]


# ----------------------------------------------------------------------------- hybrid recall


def complementary_fixture() -> tuple[list[str], list[str], dict[str, np.ndarray], dict]:
    """Per query: one relevant document only BM25 finds (it shares the query's rare word, its
    vector points away, below the dense candidates) and one only dense finds (no shared word,
    its vector is the query's); plus dense look-alikes and BM25 look-alikes that are not
    relevant, and 110 background documents (more than the 100 candidates of each side)."""
    rng = np.random.default_rng(0)
    docs = [f"background note {i}" for i in range(110)]
    vectors = {d: rng.normal(size=16) for d in docs}
    queries, qrels = [], {}
    for t, (rare, common) in enumerate([("gzip", "archive"), ("sqlite", "database")]):
        axis = np.zeros(16)
        axis[t] = 1.0
        away = -axis + 0.05 * rng.normal(size=16)
        query = f"{rare} {common}"
        queries.append(query)
        vectors[query] = axis
        lexical = f"{rare}: the {rare} module reads {rare} files {t}"  # relevant, BM25 only
        semantic = f"compress streams of bytes {t}"  # relevant, dense only
        lookalikes = [f"an {common} of unrelated notes {t}", f"{common} backup plans {t}"]
        vectors[lexical], vectors[semantic] = away, axis + 0.01 * rng.normal(size=16)
        for text in lookalikes:  # BM25 hits, not relevant
            vectors[text] = away + 0.3 * rng.normal(size=16)
        docs += [lexical, semantic, *lookalikes]
        qrels[f"q{t}"] = {f"d{len(docs) - 4}": 1, f"d{len(docs) - 3}": 1}
        for j in range(4):  # dense look-alikes, not relevant
            text = f"filler text {t} {j}"
            vectors[text] = axis + (0.3 + 0.1 * j) * rng.normal(size=16)
            docs.append(text)
    return docs, queries, vectors, qrels


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_hybrid_recall_at_least_the_best_of_dense_and_bm25(alpha):
    docs, queries, vectors, qrels = complementary_fixture()
    ids = [f"d{i}" for i in range(len(docs))]
    qids = [f"q{i}" for i in range(len(queries))]
    recall = {}
    for name in ("dense", "bm25", "hybrid"):
        if name == "dense":
            retriever = FixedVectors(vectors)
        elif name == "bm25":
            retriever = BM25Retriever()
        else:
            retriever = HybridRetriever(FixedVectors(vectors), BM25Retriever(), alpha)
        retriever.index(ids, docs)
        run = retriever.search(qids, queries, top_k=3).run
        per_query = retrieval_metrics(qrels, run)[1]
        recall[name] = float(np.mean([len(set(run[q]) & set(qrels[q])) / 2 for q in qids]))
        assert per_query  # the metric code accepts the run
    # Each alone finds one of the two relevant documents per query; fused, both.
    assert recall["dense"] == recall["bm25"] == 0.5
    assert recall["hybrid"] >= max(recall["dense"], recall["bm25"])
    assert recall["hybrid"] == 1.0


def test_hybrid_records_its_fusion_and_pairs_fuse_rankings():
    docs, queries, vectors, _ = complementary_fixture()
    hybrid = HybridRetriever(FixedVectors(vectors), BM25Retriever(), alpha=0.25)
    info = hybrid.describe()
    assert info["kind"] == "hybrid" and info["settings"]["fusion"]["alpha"] == 0.25
    assert info["bm25"]["kind"] == "bm25" and info["hash"].startswith("sha256:")
    scores, _ = hybrid.pair_scores(queries, docs[111:112] + docs[120:121], None)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    default = HybridRetriever(FixedVectors(vectors), BM25Retriever()).describe()
    assert default["settings"]["fusion"] == {"method": "convex", "alpha": 0.1, "candidates": 100}
    rrf = HybridRetriever(FixedVectors(vectors), BM25Retriever(), alpha=None).fusion()
    assert rrf == {"method": "rrf", "k": 60, "candidates": 100}


def test_compose_retriever_checks_its_options():
    dense = FixedVectors({})
    assert isinstance(compose_retriever(dense, "bm25"), BM25Retriever)
    assert isinstance(compose_retriever(dense, "hybrid"), HybridRetriever)
    assert compose_retriever(dense, "dense") is dense
    assert compose_retriever(dense, "hybrid").alpha == DEFAULT_ALPHA
    assert compose_retriever(dense, "hybrid", alpha=None).alpha is None
    with pytest.raises(ValueError, match="need a model directory"):
        compose_retriever(BM25Retriever(), "hybrid")
    with pytest.raises(ValueError, match="--chunking needs --chunk-tokens"):
        compose_retriever(dense, "dense", chunking=Chunking())
    with pytest.raises(ValueError, match="diffembed model directory"):
        compose_retriever(dense, "dense", chunking=Chunking(8))


def test_eval_cli_records_the_fusion_used(model_dir, tmp_path, capsys):
    """``diffembed eval --retriever hybrid``: convex alpha 0.1 unless ``--fusion rrf``; the
    fusion flags need ``--retriever hybrid`` and do not mix (rrf has no alpha)."""
    task = write_task(
        tmp_path / "task",
        name="t",
        suite="longdoc",
        corpus=[{"_id": f"d{i}", "title": "", "text": f"fox river note {i}"} for i in range(4)],
        queries=[{"_id": "q0", "text": "fox note"}],
        qrels={"q0": {"d1": 1}},
    )
    argv = ["eval", "--model", str(model_dir), "--task-dir", str(task.path), "--no-progress"]
    for extra, fusion, alpha in (
        ([], {"method": "convex", "alpha": 0.1}, 0.1),
        (["--fusion", "rrf"], {"method": "rrf", "k": 60}, None),
        (["--fusion", "convex", "--alpha", "0.3"], {"method": "convex", "alpha": 0.3}, 0.3),
    ):
        out = tmp_path / f"r{len(extra)}.json"
        assert main([*argv, "--out", str(out), "--retriever", "hybrid", *extra]) == 0
        result = json.loads(out.read_text())
        assert result["model"]["settings"]["fusion"] == {**fusion, "candidates": 100}
        assert result["settings"]["fusion"] == fusion["method"]
        assert result["settings"]["alpha"] == alpha
    out = tmp_path / "dense.json"
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["fusion"] is None
    capsys.readouterr()
    for extra, message in (
        (["--retriever", "hybrid", "--fusion", "rrf", "--alpha", "0.3"], "--alpha applies to"),
        (["--fusion", "rrf"], "--fusion"),
        (["--alpha", "0.5"], "--alpha"),
        (["--retriever", "bm25", "--fusion", "convex"], "--fusion"),
    ):
        assert main([*argv, "--out", str(tmp_path / "x.json"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    mteb = ["eval", "--model", str(model_dir), "--mteb", "NFCorpus", "--fusion", "rrf"]
    assert main([*mteb, "--out", str(tmp_path / "m.json")]) == 2
    assert "--fusion" in capsys.readouterr().err
