"""``diffembed eval --dimensions N --quantize int8|binary`` (issue 31) searches as the index does:
the same ``QuantizedVectors`` search over the same cut vectors, recorded in the results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixed_retriever import FixedVectors
from test_evaluate import run_cli, tasks_root  # noqa: F401 (fixture)

from diffembed.errors import ConfigError
from diffembed.eval.evaluate import EvalSettings
from diffembed.eval.quantize import QuantizedVectors
from diffembed.eval.retrievers import BM25Retriever
from diffembed.eval.small import SmallVectorRetriever, shrink_retriever
from diffembed.model.chunking import Chunking
from diffembed.model.dimensions import truncate


def fixed(n_docs: int, n_queries: int, dim: int) -> tuple[FixedVectors, list[str], list[str]]:
    rng = np.random.default_rng(0)
    docs = [f"doc {i}" for i in range(n_docs)]
    queries = [f"query {i}" for i in range(n_queries)]
    vectors = {t: rng.standard_normal(dim) for t in docs + queries}
    return FixedVectors(vectors), docs, queries


@pytest.mark.parametrize("quantize", ["none", "int8", "binary"])
def test_eval_search_is_the_index_search(quantize):
    base, docs, queries = fixed(200, 9, 48)
    small = SmallVectorRetriever(base, dimensions=24, quantize=quantize, rescore_factor=5)
    small.index([f"d{i}" for i in range(len(docs))], docs)
    result = small.search([f"q{i}" for i in range(len(queries))], queries, top_k=10)
    d = truncate(np.stack([base.vectors[t] for t in docs]), 24)
    q = truncate(np.stack([base.vectors[t] for t in queries]), 24)
    if quantize == "none":
        want = np.argsort(-(q.astype(np.float64) @ d.T.astype(np.float64)), axis=1)[:, :10]
    else:
        store = QuantizedVectors(24, quantize, 5)
        store.add(d)
        want = store.search(q, 10)[1]
    for r in range(len(queries)):
        assert list(result.run[f"q{r}"]) == [f"d{i}" for i in want[r]]
    info = small.describe()["settings"]["vectors"]
    assert info["dimensions"] == 24 and info["quantize"] == quantize
    assert info["bytes_per_vector"]["in_memory"] == {"none": 96, "int8": 24, "binary": 3}[quantize]


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--quantize"):
        EvalSettings(quantize="int4")
    with pytest.raises(ConfigError, match="--chunk-tokens"):
        EvalSettings(quantize="int8", chunking=Chunking(16))
    with pytest.raises(ConfigError, match="dense models"):
        shrink_retriever(BM25Retriever(), 8, "none")
    base, docs, _ = fixed(3, 1, 8)
    assert shrink_retriever(base, None, "none") is base
    with pytest.raises(ConfigError, match="--dimensions must be an integer between 1 and 8"):
        SmallVectorRetriever(base, dimensions=9).index(["a", "b", "c"], docs)


def test_eval_cli_records_small_vectors(model_dir, tasks_root, tmp_path):  # noqa: F811
    out = tmp_path / "r.json"
    argv = ["--model", str(model_dir), "--tasks-root", str(tasks_root), "--out", str(out)]
    assert run_cli(*argv, "--dimensions", "32", "--quantize", "binary", "--no-progress") == 0
    result = json.loads(out.read_text())
    assert result["settings"]["vectors"] == {
        "dimensions": 32,
        "quantize": "binary",
        "rescore_factor": 10,
    }
    assert result["model"]["settings"]["vectors"]["bytes_per_vector"]["in_memory"] == 4
    assert "[32 dims, binary]" in result["model"]["name"]
    assert {t["task"] for t in result["tasks"]} >= {"qa", "pets", "topics", "sts"}
    plain = tmp_path / "p.json"
    argv = ["--model", str(model_dir), "--tasks-root", str(tasks_root), "--out", str(plain)]
    assert run_cli(*argv, "--no-progress") == 0
    assert "vectors" not in json.loads(plain.read_text())["settings"]  # unchanged records
    with pytest.raises(ConfigError, match="not --mteb"):
        run_cli(
            "--model",
            str(model_dir),
            "--mteb",
            "X",
            "--out",
            str(tmp_path / "m.json"),
            "--quantize",
            "int8",
        )
