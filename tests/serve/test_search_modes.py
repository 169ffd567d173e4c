"""``POST /v1/search`` with ``mode`` (dense, bm25, hybrid), ``fusion`` and ``alpha``: the same
results as ``Searcher.search`` (the code ``diffembed search`` and ``diffembed eval --retriever``
share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_serve import ServerThread, assert_error, request

from diffembed.formats.corpus import Document
from diffembed.index.build import IndexSettings, build_index
from diffembed.index.search import Searcher
from diffembed.index.store import VectorIndex
from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig, create_app

WORDS = ["fox", "river", "bank", "tokens", "keys", "needles", "haystacks", "query", "words"]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir)


def make_index(path: Path, model_dir: Path, embedder: Embedder, bm25: bool) -> Path:
    rng = np.random.default_rng(0)
    docs = [Document(id=f"d{i}", text=" ".join(rng.choice(WORDS, 8))) for i in range(12)]
    docs.append(Document(id="rare", text="zebra stripes field guide"))
    build_index(docs, path, model_dir, IndexSettings(bm25=bm25), embedder=embedder).close()
    return path


@pytest.fixture(scope="module")
def index_dir(model_dir, embedder, tmp_path_factory) -> Path:
    return make_index(tmp_path_factory.mktemp("modes") / "ix", model_dir, embedder, True)


@pytest.fixture(scope="module")
def server(embedder, index_dir):
    config = ServeConfig(model_name="tiny")
    with ServerThread(create_app(embedder, config, VectorIndex.open(index_dir))) as s:
        yield s


@pytest.mark.parametrize(
    "body",
    [
        {"query": "fox river", "k": 5},
        {"query": "fox river", "k": 5, "mode": "hybrid", "alpha": 0.7},
        {"query": "fox river", "k": 5, "mode": "hybrid", "fusion": "rrf"},
        {"query": "fox river", "k": 5, "fusion": "convex", "alpha": 0.3},
        {"query": "zebra keys", "k": 4, "mode": "bm25"},
        {"query": "keys needles", "k": 3, "mode": "dense", "instruction": "Q"},
    ],
)
def test_search_modes_match_searcher(server, index_dir, body):
    status, _, out = request(server.port, "POST", "/v1/search", body)
    assert status == 200, out
    mode = body.get("mode", "hybrid")
    # What was used: convex alpha 0.1 by default, rrf on request; nothing for dense / bm25.
    alpha = None if body.get("fusion") == "rrf" else body.get("alpha", 0.1)
    fusion = "rrf" if alpha is None else "convex"
    want_search = {"mode": mode, "fusion": fusion, "alpha": alpha}
    if mode != "hybrid":
        want_search = {"mode": mode, "fusion": None, "alpha": None}
    assert out["search"] == want_search
    searcher = Searcher.open(index_dir)
    want = searcher.search(
        body["query"], body["k"], prompt=body.get("instruction"), mode=mode, alpha=alpha
    )
    searcher.index.close()
    assert [h["id"] for h in out["data"]] == [h.id for h in want]
    np.testing.assert_allclose([h["score"] for h in out["data"]], [h.score for h in want], 1e-5)
    assert out["index"]["bm25"] is True
    if body.get("mode") == "bm25":  # nothing embedded
        assert out["usage"]["prompt_tokens"] == 0 and out["data"][0]["id"] == "rare"
    else:
        assert out["usage"]["prompt_tokens"] > 0


def test_search_mode_errors(server):
    def post(body: dict):
        return request(server.port, "POST", "/v1/search", body)

    assert_error(post({"query": "fox", "mode": "sparse"}), 400, "mode")
    assert_error(post({"query": "fox", "alpha": 1.5}), 400, "alpha")
    assert_error(post({"query": "fox", "mode": "dense", "alpha": 0.5}), 400, "mode hybrid")
    err = assert_error(post({"query": "fox", "fusion": "rrf", "alpha": 0.3}), 400, "alpha")
    assert err["param"] == "alpha" and "fusion convex" in err["message"]
    err = assert_error(post({"query": "fox", "mode": "bm25", "fusion": "rrf"}), 400, "mode hybrid")
    assert err["param"] == "fusion"
    assert_error(post({"query": "fox", "fusion": "max"}), 400, "fusion")


def test_long_query_names_the_query_field(server):
    # issue 26: a query over max_length was reported as param "input"
    err = assert_error(
        request(server.port, "POST", "/v1/search", {"query": "fox " * 100}), 400, "query has"
    )
    assert err["param"] == "query" and "max_length=48" in err["message"]
    assert "input" not in err["message"] and '"truncate": true' in err["message"]


def test_bm25_matching_nothing_is_said(server):
    # issue 26: a BM25 query of only stop words, or of unknown terms, returned nothing silently
    def post(body: dict) -> dict:
        status, _, out = request(server.port, "POST", "/v1/search", body)
        assert status == 200, out
        return out

    out = post({"query": "the of and", "mode": "bm25"})
    assert out["data"] == [] and "BM25 matched no document" in out["note"]
    assert "stop words" in out["note"]
    out = post({"query": "xylophones", "k": 3})  # hybrid: the model's ranking alone
    assert len(out["data"]) == 3 and "'xylophon'" in out["note"]
    assert "the ranking is the model's" in out["note"]
    assert post({"query": "fox", "k": 3})["note"] is None
    assert post({"query": "the of and", "k": 3, "mode": "dense"})["note"] is None


def test_default_search_is_convex_not_rrf(server, index_dir):
    """The default hybrid ranking is the convex one, and differs from RRF on this index."""
    body = {"query": "fox river zebra", "k": 13}
    default = request(server.port, "POST", "/v1/search", body)[2]
    rrf = request(server.port, "POST", "/v1/search", {**body, "fusion": "rrf"})[2]
    assert default["search"] == {"mode": "hybrid", "fusion": "convex", "alpha": 0.1}
    assert rrf["search"] == {"mode": "hybrid", "fusion": "rrf", "alpha": None}
    scores = {h["id"]: h["score"] for h in rrf["data"]}
    assert max(scores.values()) <= 2 / 61 + 1e-6  # RRF scores, not min-max ones
    assert [h["score"] for h in default["data"]][0] > 2 / 61


def test_index_without_bm25_serves_dense_and_refuses_bm25(model_dir, embedder, tmp_path):
    path = make_index(tmp_path / "ix", model_dir, embedder, False)
    with ServerThread(
        create_app(embedder, ServeConfig(model_name="m"), VectorIndex.open(path))
    ) as s:
        status, _, out = request(s.port, "POST", "/v1/search", {"query": "fox", "k": 3})
        assert status == 200 and out["search"]["mode"] == "dense"
        assert out["index"]["bm25"] is False
        body = {"query": "fox", "mode": "hybrid"}
        err = assert_error(request(s.port, "POST", "/v1/search", body), 400, "without BM25")
        assert err["param"] == "mode"


def test_non_finite_scores_are_a_server_error_not_results(model_dir, embedder, tmp_path):
    # issue 26, item 3: damaged vectors gave scores around 4e37 or inf; never answer them
    import faiss

    index = VectorIndex.open(make_index(tmp_path / "ix", model_dir, embedder, True))
    vectors = index.vectors()
    vectors[:] = np.inf
    broken = faiss.IndexFlatIP(index.dim)
    broken.add(vectors)
    index.faiss_index = broken
    with ServerThread(create_app(embedder, ServeConfig(model_name="m"), index)) as s:
        for mode in ("dense", "hybrid"):
            body = {"query": "fox", "k": 3, "mode": mode}
            err = assert_error(request(s.port, "POST", "/v1/search", body), 500, "not finite")
            assert err["code"] == "index_corrupt" and "vectors.faiss" in err["message"]
        status, _, out = request(s.port, "POST", "/v1/search", {**body, "mode": "bm25"})
        assert status == 200 and out["data"]
