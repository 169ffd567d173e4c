"""Evaluation: metrics and p-MRR by hand, exact top-k vs brute force, faiss, retrievers, CLI."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fixed_retriever import FixedVectors

from diffembed.cli.eval import add_eval_parser
from diffembed.eval import ranking
from diffembed.eval.evaluate import evaluate_task, with_instruction
from diffembed.eval.metrics import (
    classification_metrics,
    correlation_metrics,
    knn_classify,
    p_mrr,
    rank_change_score,
    retrieval_metrics,
)
from diffembed.eval.models import EmbedderRetriever
from diffembed.eval.ranking import blocked_top_k, ranks_in_run, ranks_of, tiebreak_keys
from diffembed.eval.retrievers import BM25Retriever
from diffembed.formats.task_writer import write_task
from diffembed.formats.tasks import TaskFormatError, hash_task, load_task
from diffembed.model.embedder import Embedder

L3, L5 = math.log2(3), math.log2(5)


# ------------------------------------------------------------------------------ metrics
def test_retrieval_metrics_by_hand():
    qrels = {
        "q1": {"d1": 1, "d3": 1, "d2": 0},
        "q2": {"x11": 1},
        "q3": {"dA": 1, "dB": 2},
        "q4": {"d1": 0},  # nothing relevant: not scored
    }
    q2_run = {f"y{i:02d}": 1.0 - i / 100 for i in range(1, 11)}
    q2_run.update({"x11": 0.5, "y12": 0.4})  # the relevant document is 11th
    run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d4": 0.7, "d3": 0.6},
        "q2": q2_run,
        "q3": {"dA": 0.9, "dB": 0.8},
        "q4": {"d1": 0.5},
    }
    means, per_query = retrieval_metrics(qrels, run)
    want = {
        "q1": {
            "ndcg_at_1": 0.0,
            "ndcg_at_10": (1 / L3 + 1 / L5) / (1 + 1 / L3),
            "recall_at_10": 1.0,
            "recall_at_100": 1.0,
            "mrr_at_10": 0.5,
            "map": (1 / 2 + 2 / 4) / 2,
        },
        # trec_eval's recip_rank would give 1/11 here: MRR@10 must be 0.
        "q2": {
            "ndcg_at_1": 0.0,
            "ndcg_at_10": 0.0,
            "recall_at_10": 0.0,
            "recall_at_100": 1.0,
            "mrr_at_10": 0.0,
            "map": 1 / 11,
        },
        # graded relevance, linear gain (trec_eval): ideal order is dB (2), dA (1).
        "q3": {
            "ndcg_at_1": 1 / 2,
            "ndcg_at_10": (1 + 2 / L3) / (2 + 1 / L3),
            "recall_at_10": 1.0,
            "recall_at_100": 1.0,
            "mrr_at_10": 1.0,
            "map": 1.0,
        },
    }
    assert sorted(per_query) == ["q1", "q2", "q3"]
    assert all(set(per_query[q]) == set(want["q1"]) for q in per_query)
    for q, values in want.items():
        for name, value in values.items():
            assert per_query[q][name] == pytest.approx(value, abs=1e-6), (q, name)
    for name in want["q1"]:
        assert means[name] == pytest.approx(np.mean([want[q][name] for q in want]), abs=1e-6)


def test_missing_query_scores_zero_and_recall_cut():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q2": {f"z{i:03d}": 1.0 for i in range(100)} | {"b": 2.0, "c": 0.5}}
    means, per_query = retrieval_metrics(qrels, run)
    assert per_query["q1"] == {k: 0.0 for k in per_query["q1"]}
    # c is 101st of the run: Recall@100 counts only b.
    assert per_query["q2"]["recall_at_100"] == pytest.approx(0.5)
    assert means["recall_at_100"] == pytest.approx(0.25)


def test_recall_at_10_counts_each_relevant_document_in_the_top_10():
    # Recall@10 is the share of a query's relevant documents in its top 10, not "nDCG@10 > 0"
    # (the one-relevant-page shortcut): a query with one of two relevant documents in the top 10
    # scores 0.5, though its nDCG@10 is above 0.
    filler = {f"n{i:02d}": 1.0 - i / 100 for i in range(1, 31)}  # ranks 1..30 before insertion
    qrels = {
        "half": {"a": 1, "b": 1},  # a at rank 1, b at rank 20
        "both": {"c": 1, "d": 1},  # ranks 3 and 10
        "none": {"e": 1},  # rank 11
    }
    run = {
        "half": {**filler, "a": 2.0, "b": filler["n18"] - 0.001},
        "both": {**filler, "c": filler["n02"] - 0.001, "d": filler["n08"] - 0.001},
        "none": {**filler, "e": filler["n10"] - 0.001},
    }
    means, per_query = retrieval_metrics(qrels, run)
    by_hand = {}
    for q, judged in qrels.items():
        top10 = sorted(run[q], key=lambda d: -run[q][d])[:10]
        by_hand[q] = sum(d in top10 for d in judged) / len(judged)
    assert by_hand == {"half": 0.5, "both": 1.0, "none": 0.0}
    for q, value in by_hand.items():
        assert per_query[q]["recall_at_10"] == pytest.approx(value, abs=1e-9), q
    assert means["recall_at_10"] == pytest.approx(0.5, abs=1e-9)  # (0.5 + 1 + 0) / 3
    # The old derivation (nDCG@10 > 0) would call "half" a full hit.
    assert per_query["half"]["ndcg_at_10"] > 0 and per_query["half"]["recall_at_10"] == 0.5
    assert per_query["half"]["recall_at_100"] == 1.0 and per_query["none"]["recall_at_100"] == 1.0


@pytest.mark.parametrize("relevant, rr", [("d00", 0.0), ("d05", 1 / 7), ("d11", 1.0)])
def test_mrr_ties_follow_trec_eval_order(relevant, rr):
    # All scores tie: trec_eval orders by document id descending (d11 first, d00 12th).
    run = {"q": {f"d{i:02d}": 0.0 for i in range(12)}}
    _, per_query = retrieval_metrics({"q": {relevant: 1}}, run)
    assert per_query["q"]["mrr_at_10"] == pytest.approx(rr)


# ------------------------------------------------------------------------------ p-MRR
@pytest.mark.parametrize(
    "og, new, want",
    [
        (4, 1, -0.75),  # moved up although the changed instruction made it non-relevant
        (1, 4, 0.75),  # moved down: instruction followed
        (3, 3, 0.0),  # unchanged
        (2, 4, 0.5),
        (5, 2, -0.6),
        (1, 1, 0.0),
    ],
)
def test_rank_change_score(og, new, want):
    assert rank_change_score(og, new) == pytest.approx(want)


def test_p_mrr_averages_documents_then_queries():
    ranks_og = {"q1": {"a": 2, "b": 3}, "q2": {"c": 5}}
    ranks_new = {"q1": {"a": 4, "b": 3}, "q2": {"c": 2}}
    score, per_query = p_mrr(ranks_og, ranks_new, {"q1": ["a", "b"], "q2": ["c"]})
    assert per_query == pytest.approx({"q1": (0.5 + 0.0) / 2, "q2": -0.6})
    assert score == pytest.approx((0.25 - 0.6) / 2)
    with pytest.raises(KeyError, match="no rank for document 'z'"):
        p_mrr(ranks_og, ranks_new, {"q1": ["z"]})


def test_p_mrr_matches_mteb_examples_on_runs():
    og = {"0": 1, "1": 2, "2": 3, "3": 4}  # doc "0" ranked 4th
    for new, want in (
        ({"0": 1, "1": 2, "2": 3, "3": 4}, 0.0),
        ({"0": 4, "1": 1, "2": 2, "3": 3}, -0.75),
    ):
        score, _ = p_mrr(
            {"a": ranks_in_run(og, ["0"])}, {"a": ranks_in_run(new, ["0"])}, {"a": ["0"]}
        )
        assert score == pytest.approx(want)
    score, _ = p_mrr(
        {"a": ranks_in_run({"0": 4, "1": 1, "2": 2, "3": 3}, ["0"])},
        {"a": ranks_in_run(og, ["0"])},
        {"a": ["0"]},
    )
    assert score == pytest.approx(0.75)
    # Ties: doc id descending, whatever the insertion order; missing -> len(run) + 1.
    assert ranks_in_run({"0": 0.5, "1": 0.5, "2": 0.5}, ["0", "2", "9"]) == {"0": 3, "2": 1, "9": 4}


# ------------------------------------------------------------------------------ ranking
def brute_force(scores: np.ndarray, ids: Sequence[str], k: int) -> list[int]:
    """Full sort in trec_eval order: score descending, then id descending."""
    order = sorted(range(len(ids)), key=lambda j: (float(scores[j]), ids[j]), reverse=True)
    return order[:k]


def test_blocked_top_k_equals_brute_force_with_ties(monkeypatch):
    rng = np.random.default_rng(0)
    ids = [f"doc{j}" for j in rng.permutation(50)]
    scores = rng.integers(0, 5, size=(7, 50)).astype(np.float32)  # many ties
    monkeypatch.setattr(ranking, "SCORE_BLOCK_FLOATS", 120)  # 2 query rows per block
    tb = tiebreak_keys(ids)
    targets = {r: np.arange(50) for r in range(7)}
    indices, values, ranks = blocked_top_k(lambda s, e: scores[s:e], 7, 50, 10, tb, targets=targets)
    for r in range(7):
        want = brute_force(scores[r], ids, 50)
        assert indices[r].tolist() == want[:10]
        np.testing.assert_array_equal(values[r], scores[r][want[:10]])
        position = {j: p + 1 for p, j in enumerate(want)}
        assert ranks[r].tolist() == [position[j] for j in range(50)]
        assert ranks_of(scores[r], np.array([want[3]]), tb).tolist() == [4]


def test_blocked_top_k_leave_one_out():
    scores = np.eye(4, dtype=np.float32) + np.arange(4, dtype=np.float32) / 10
    indices, _, _ = blocked_top_k(
        lambda s, e: scores[s:e], 4, 4, 9, tiebreak_keys(list("abcd")), exclude_self=True
    )
    assert indices.shape == (4, 3)
    assert all(r not in indices[r] for r in range(4))
    assert indices[0].tolist() == [3, 2, 1]


def test_dense_search_equals_brute_force_and_faiss():
    rng = np.random.default_rng(1)
    docs = {f"doc {j}": rng.normal(size=16) for j in range(300)}
    queries = {f"query {i}": rng.normal(size=16) for i in range(20)}
    retriever = FixedVectors(docs | queries)
    ids = [f"d{j}" for j in range(300)]
    retriever.index(ids, list(docs))
    qids = [f"q{i}" for i in range(20)]
    exact = retriever.search(qids, list(queries), top_k=25)
    with_faiss = retriever.search(qids, list(queries), top_k=25, use_faiss=True)
    d = np.stack([retriever.vectors[t] for t in docs]).astype(np.float64)
    for i, qid in enumerate(qids):
        full = d @ retriever.vectors[f"query {i}"]
        want = [ids[j] for j in brute_force(full, ids, 25)]
        assert list(exact.run[qid]) == want
        assert list(with_faiss.run[qid]) == want
        assert list(with_faiss.run[qid].items()) == list(exact.run[qid].items())
        np.testing.assert_allclose(
            list(exact.run[qid].values()), full[[ids.index(x) for x in want]], atol=1e-6
        )


def test_faiss_and_exact_agree_bit_for_bit_on_near_ties(monkeypatch):
    # Near-duplicate documents: their scores differ in the last float32 bits, where a blocked
    # float32 product and faiss round differently. Both paths must still give the same run,
    # namely the full sort of the float64-summed scores rounded to float32.
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 32))
    vecs = np.concatenate([base + rng.normal(scale=1e-7, size=base.shape) for _ in range(8)])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = {f"doc {j}": v for j, v in enumerate(vecs)}
    queries = {f"query {i}": rng.normal(size=32) for i in range(30)}
    retriever = FixedVectors(docs | queries)
    ids = [f"d{j:03d}" for j in rng.permutation(len(docs))]
    retriever.index(ids, list(docs))
    monkeypatch.setattr(ranking, "SCORE_BLOCK_FLOATS", 7 * len(docs))  # blocks of 7 queries
    qids = [f"q{i}" for i in range(30)]
    exact = retriever.search(qids, list(queries), top_k=50)
    with_faiss = retriever.search(qids, list(queries), top_k=50, use_faiss=True)
    d = retriever.doc_vectors.astype(np.float64)
    for i, qid in enumerate(qids):
        q = retriever.vectors[f"query {i}"].astype(np.float32).astype(np.float64)
        canonical = np.sum(d * q, axis=1).astype(np.float32)
        want = [(ids[j], float(canonical[j])) for j in brute_force(canonical, ids, 50)]
        assert list(exact.run[qid].items()) == want
        assert list(with_faiss.run[qid].items()) == want


def test_instruct_p_mrr_ranks_full_candidate_set(tmp_path):
    corpus = [{"_id": f"d{j}", "text": f"doc {j}"} for j in range(4)]
    queries = [{"_id": "q", "text": "q", "instruction_og": "og", "instruction_changed": "new"}]
    task = write_task(
        tmp_path / "i",
        name="i",
        suite="instruct",
        kind="instruct",
        corpus=corpus,
        queries=queries,
        qrels_og={"q": {"d0": 1, "d1": 1, "d3": 1}},
        qrels_changed={"q": {"d0": 0, "d1": 0, "d3": 1}},
    )
    vectors = {
        "doc 0": np.array([1.0, 0.0]),
        "doc 1": np.array([0.8, 0.6]),
        "doc 2": np.array([0.6, 0.8]),
        "doc 3": np.array([0.0, 1.0]),
        with_instruction("q", "og"): np.array([1.0, 0.0]),  # ranks d0 d1 d2 d3
        with_instruction("q", "new"): np.array([0.0, 1.0]),  # ranks d3 d2 d1 d0
    }
    for top_k in (100, 2):  # d0 falls out of the top 2: its full-ranking rank (4) still counts
        record = evaluate_task(FixedVectors(vectors), task, top_k=top_k)
        assert record["metrics"]["p-mrr"] == pytest.approx(((1 - 1 / 4) + (1 - 2 / 3)) / 2)
    assert record["metrics"]["og_ndcg_at_1"] == 1.0
    assert record["metrics"]["changed_ndcg_at_1"] == 1.0
    assert record["per_query"] == {"q": pytest.approx(0.5416667)}


# ------------------------------------------------------------------------------ kNN, STS
def test_knn_and_classification_metrics_by_hand():
    labels = ["a", "a", "b", "b"]
    assert knn_classify(labels, np.array([[2, 0, 1]]), np.array([[0.9, 0.8, 0.7]])) == ["a"]
    # 2 votes each: the larger summed similarity wins (a: 1.5 > b: 1.0), not the nearest (b).
    assert knn_classify(labels, np.array([[2, 0, 1, 3]]), np.array([[0.9, 0.8, 0.7, 0.1]])) == ["a"]
    # 1 vote each, equal sums: the label met first wins.
    assert knn_classify(labels, np.array([[2, 0]]), np.array([[0.5, 0.5]])) == ["b"]
    m = classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
    c = correlation_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert c["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert c["pearson"] == pytest.approx(0.8)


def test_classification_split_and_loo(tmp_path):
    vectors = {"x1": [1, 0.1], "x2": [1, 0.2], "y1": [0.1, 1], "y2": [0.2, 1], "x3": [1, 0]}
    retriever = FixedVectors({k: np.array(v) for k, v in vectors.items()})
    items = [{"_id": t, "text": t, "label": t[0]} for t in ("x1", "x2", "y1", "y2")]
    task = write_task(tmp_path / "c", name="c", suite=None, kind="classification", items=items, k=1)
    record = evaluate_task(retriever, task)
    assert record["metrics"]["accuracy"] == 1.0 and record["n_queries"] == 4
    split = [dict(it, split="train") for it in items] + [
        {"_id": "t", "text": "x3", "label": "y", "split": "test"}
    ]
    task = write_task(tmp_path / "s", name="s", suite=None, kind="classification", items=split, k=1)
    record = evaluate_task(retriever, task)
    assert record["metrics"]["accuracy"] == 0.0 and record["per_query"] == {"t": 0.0}


# ------------------------------------------------------------------------------ retrievers
def test_bm25_ranks_lexical_match_and_ignores_instructions():
    bm25 = BM25Retriever()
    bm25.index(["a", "b", "c"], ["The quick brown fox", "Sleeping cats", "Python programming"])
    plain = bm25.search(["q"], ["quick fox"], top_k=3)
    assert list(plain.run["q"])[0] == "a"
    assert bm25.search(["q"], ["quick fox"], "python python", top_k=3).run == plain.run
    assert bm25.search(["q"], ["zzz unknownword"], top_k=3).run["q"] == {"c": 0, "b": 0, "a": 0}


def test_bm25_uses_pystemmer_when_installed(monkeypatch):
    class FakeStemmer:  # PyStemmer's interface: Stemmer.Stemmer(lang).stemWords(words)
        def __init__(self, language: str) -> None:
            assert language == "english"

        def stemWords(self, words):  # noqa: N802
            return [w.removesuffix("es") for w in words]

    monkeypatch.setitem(sys.modules, "Stemmer", types.SimpleNamespace(Stemmer=FakeStemmer))
    bm25 = BM25Retriever()
    assert bm25.describe()["settings"]["stemmer"] == "snowball-english (PyStemmer)"
    bm25.index(["a", "b"], ["one fox", "two cats"])
    assert list(bm25.search(["q"], ["foxes"], top_k=2).run["q"].values())[0] > 0


def test_embedder_retriever_uses_task_instruction(checkpoints):
    embedder = Embedder.load(checkpoints["qwen2"], precision="fp32")
    retriever = EmbedderRetriever(embedder)
    docs = ["The quick brown fox.", "Cats sleep all day.", "Python is a language."]
    retriever.index(["a", "b", "c"], docs)
    result = retriever.search(["q"], ["fox"], "Find the animal", top_k=3)
    want = embedder.encode(["fox"], prompt="Find the animal") @ embedder.encode(docs).T
    got = [result.run["q"][d] for d in "abc"]
    np.testing.assert_allclose(got, want[0], atol=1e-5)
    plain = retriever.search(["q"], ["fox"], None, top_k=3).run["q"]
    assert not np.allclose([plain[d] for d in "abc"], want[0], atol=1e-5)


def test_hash_model_dir(tmp_path, monkeypatch):
    from diffembed.model import model_dir as md

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(3 << 20))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_text("a")
    first = md.hash_model_dir(tmp_path)
    (tmp_path / "checkpoint" / "state.pt").write_text("b")  # training state does not count
    assert md.hash_model_dir(tmp_path) == first
    monkeypatch.setattr(md, "HASH_FULL_LIMIT", 1 << 20)
    sampled = md.hash_model_dir(tmp_path)
    assert "sampled" in sampled["hash_method"]
    with (tmp_path / "model.safetensors").open("r+b") as f:
        f.write(b"\1")
    assert md.hash_model_dir(tmp_path)["hash"] != sampled["hash"]
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert md.hash_model_dir(tmp_path)["hash"] != first["hash"]


# ------------------------------------------------------------------------------ end to end
DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Cats sleep for most of the day in a warm sunny spot.",
    "Python is a programming language used for scripting and data science.",
    "The river flows into the sea past the old stone bridge.",
    "Dogs bark at strangers and guard the house at night.",
    "A thesaurus lists synonyms and antonyms of many words.",
]


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    write_task(
        root / "traditional" / "qa",
        name="qa",
        suite="traditional",
        instruction="Given a question, retrieve the passage that answers it",
        corpus=corpus,
        queries=[
            {"_id": "q0", "text": "Which animal jumps over the lazy dog?"},
            {"_id": "q1", "text": "What is the Python programming language used for?"},
            {"_id": "q2", "text": "Where does the river flow?"},
        ],
        qrels={"q0": {"d0": 1}, "q1": {"d2": 1}, "q2": {"d3": 1}},
    )
    write_task(
        root / "instruct" / "pets",
        name="pets",
        suite="instruct",
        kind="instruct",
        corpus=corpus,
        queries=[
            {
                "_id": "q0",
                "text": "animal behaviour",
                "instruction_og": "Documents about any animal are relevant.",
                "instruction_changed": "Only documents about cats are relevant.",
            }
        ],
        qrels_og={"q0": {"d0": 1, "d1": 1, "d4": 1}},
        qrels_changed={"q0": {"d0": 0, "d1": 1, "d4": 0}},
    )
    items = [
        {"_id": f"i{i}", "text": t, "label": lab}
        for i, (t, lab) in enumerate(
            [
                ("dog barks loudly", "animal"),
                ("cat purrs softly", "animal"),
                ("horse gallops fast", "animal"),
                ("python code compiles", "code"),
                ("java code runs", "code"),
                ("rust code is safe", "code"),
            ]
        )
    ]
    write_task(
        root / "traditional" / "topics",
        name="topics",
        suite="traditional",
        kind="classification",
        items=items,
        k=1,
    )
    pairs = [
        {"text1": "a dog", "text2": "a puppy", "score": 4.0},
        {"text1": "a dog", "text2": "python code", "score": 0.2},
        {"text1": "the river", "text2": "the sea", "score": 2.5},
        {"text1": "a cat", "text2": "a kitten", "score": 4.4},
    ]
    write_task(
        root / "traditional" / "sts",
        name="sts",
        suite="traditional",
        kind="similarity",
        pairs=pairs,
    )
    return root


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(["eval", *argv])


def run_cli(*argv: str) -> int:
    args = eval_args(*argv)
    return args.func(args)


@pytest.mark.parametrize("model", ["checkpoint", "bm25", "minilm"])
def test_eval_end_to_end(model, tasks_root, checkpoints, tmp_path):
    out = tmp_path / "results.json"
    extra: list[str] = []
    if model == "checkpoint":
        model = str(checkpoints["qwen2"])
        extra = ["--max-length", "12", "--precision", "fp32"]
    if model == "minilm":
        extra = ["--faiss"]
    assert (
        run_cli(
            "--model",
            model,
            "--tasks-root",
            str(tasks_root),
            "--suite",
            "all",
            "--out",
            str(out),
            "--top-k",
            "5",
            "--seed",
            "7",
            "--no-progress",
            *extra,
        )
        == 0
    )
    data = json.loads(out.read_text())
    records = {r["task"]: r for r in data["tasks"]}
    assert list(records) == ["pets", "qa", "sts", "topics"]  # instruct first, then traditional
    assert data["seed"] == 7 and data["model"]["hash"].startswith("sha256:")
    for r in records.values():
        assert set(r["provenance"]) >= {"command", "git_commit", "machine", "wall_time_s"}
        assert r["task_hash"] == hash_task(Path(r["task_dir"]))
        assert r["main_score"] == r["metrics"][r["metric"]]
        assert r["n_queries"] > 0 and r["n_docs"] > 0 and r["avg_doc_tokens"] > 0
        assert set(r["truncated"]) == {"docs", "queries"}
        saved = json.loads(
            (tmp_path / "results.json.tasks" / f"{r['suite']}__{r['task']}.json").read_text()
        )
        assert saved == r
    qa, pets = records["qa"], records["pets"]
    assert set(qa["metrics"]) == {
        "ndcg_at_1",
        "ndcg_at_10",
        "recall_at_10",
        "recall_at_100",
        "mrr_at_10",
        "map",
    }
    assert (qa["n_queries"], qa["n_docs"]) == (3, 6)
    assert -1 <= pets["metrics"]["p-mrr"] <= 1
    assert {"og_ndcg_at_10", "changed_ndcg_at_10"} <= set(pets["metrics"])
    assert {"og_recall_at_10", "changed_recall_at_10"} <= set(pets["metrics"])
    assert set(records["sts"]["metrics"]) == {"pearson", "spearman"}
    assert set(records["topics"]["metrics"]) == {"accuracy", "macro_f1"}
    table = out.with_suffix(".md").read_text()
    assert "| instruct | pets | instruct | p-mrr |" in table
    assert "| traditional | qa | retrieval | ndcg_at_10 |" in table
    if data["model"]["kind"] == "embedder":
        assert qa["truncated"]["docs"] == 6 and qa["token_unit"] == "model tokens"
        assert qa["avg_doc_tokens"] > 12  # untruncated length
    else:  # real retrievers solve the easy task
        assert qa["metrics"]["ndcg_at_10"] == 1.0
        assert qa["truncated"] == {"docs": 0, "queries": 0}
    if data["model"]["kind"] == "minilm":
        assert records["topics"]["metrics"]["accuracy"] == 1.0
        assert records["sts"]["metrics"]["spearman"] > 0.5
        assert data["settings"]["faiss"] is True
    if data["model"]["kind"] == "bm25":
        assert qa["avg_doc_tokens"] == pytest.approx(np.mean([len(t.split()) for t in DOCS]))


def test_eval_cli_errors(tasks_root, tmp_path):
    with pytest.raises(ValueError, match="no tasks"):
        run_cli("--model", "bm25", "--out", str(tmp_path / "r.json"))
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d0", "text": "x"}\n{"_id": "d0", "text": "y"}\n')
    # The task is checked before any model is loaded (the model path does not exist).
    with pytest.raises(TaskFormatError, match=r"corpus.jsonl:2: duplicate _id 'd0'"):
        run_cli(
            "--model",
            str(tmp_path / "nope"),
            "--task-dir",
            str(bad),
            "--out",
            str(tmp_path / "r.json"),
        )
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        run_cli(
            "--model",
            str(tmp_path / "nope"),
            "--task-dir",
            str(tasks_root / "traditional" / "qa"),
            "--out",
            str(tmp_path / "r.json"),
        )
    assert load_task(tasks_root / "traditional" / "qa").kind == "retrieval"


def test_minilm_max_length_is_capped_at_its_positions_and_truncation_counted() -> None:
    from diffembed.eval.models import MiniLMRetriever

    r = MiniLMRetriever(max_length=1024)
    assert r.model.max_seq_length == 512
    vectors, truncated = r._encode(["word " * 2000, "short text"], None, "document")
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    assert truncated == 1
