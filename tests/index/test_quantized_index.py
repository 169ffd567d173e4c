"""Small vectors in the index (issue 31): int8 and binary quantisation and ``--dimensions``,
checked against brute-force numpy references; old (format 1) indexes still open and grow;
damaged or mismatched quantised files are refused with the index's usual error."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_index import make_docs

from diffembed.cli.main import main
from diffembed.errors import ConfigError
from diffembed.eval.quantize import QuantizedVectors, bytes_per_vector
from diffembed.formats.corpus import Document
from diffembed.index.build import IndexSettings, add_documents, build_index
from diffembed.index.generations import FILES, META, RESCORE, VECTORS, file_checksums
from diffembed.index.quantize import read_quantized, write_quantized
from diffembed.index.search import Searcher, rank_documents
from diffembed.index.store import IndexFormatError, VectorIndex, current_generation
from diffembed.model.dimensions import truncate
from diffembed.model.embedder import Embedder


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def int8_reference(vectors: np.ndarray, queries: np.ndarray, store: QuantizedVectors, k: int):
    """Top ``k`` by float64 inner product with the int8 codes decoded by numpy from the
    quantizer's learned ranges (faiss QT_8bit: ``vmin + (code + 0.5) / 255 * vdiff``)."""
    import faiss

    trained = faiss.vector_to_array(store.sq.sq.trained).reshape(2, -1)
    vmin, vdiff = trained[0], trained[1]
    # encode in float32 as faiss does (a value on a step boundary rounds alike)
    codes = np.floor(np.clip((vectors - vmin) / vdiff, 0, 1).astype(np.float32) * np.float32(255))
    decoded = vmin.astype(np.float64) + (codes + 0.5) / 255 * vdiff.astype(np.float64)
    scores = queries.astype(np.float64) @ decoded.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1), decoded


def test_int8_search_equals_numpy_reference():
    x, q = unit(300, 32, 0), unit(7, 32, 1)
    store = QuantizedVectors(32, "int8")
    store.add(x[:200])  # learns the ranges
    store.add(x[200:])
    scores, rows = store.search(q, 10)
    want_rows, want_scores, decoded = int8_reference(x, q, store, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(store.reconstruct_n(0, 300), decoded, atol=1e-6)
    full = store.scores(q, 10)
    np.testing.assert_array_equal(np.argsort(-full, axis=1, kind="stable")[:, :10], want_rows)


def test_binary_search_rescores_hamming_candidates_like_numpy():
    x, q = unit(400, 40, 2), unit(6, 40, 3)  # 40 bits: codes of 5 bytes
    store = QuantizedVectors(40, "binary", rescore_factor=4)
    store.add(x)
    k = 5
    scores, rows = store.search(q, k)
    _, _, decoded = int8_reference(x, q, store, k)
    hamming = ((q[:, None, :] > 0) != (x[None, :, :] > 0)).sum(-1)
    for r in range(len(q)):
        # candidates: the 20 nearest by Hamming distance (ties at the cut: as faiss kept them)
        cut = np.sort(hamming[r])[k * 4 - 1]
        surely = set(np.flatnonzero(hamming[r] < cut).tolist())
        maybe = set(np.flatnonzero(hamming[r] <= cut).tolist())
        exact = decoded @ q[r].astype(np.float64)
        cand = [c for c in np.argsort(-exact, kind="stable") if c in maybe]
        got = rows[r].tolist()
        assert surely <= maybe and set(got) <= maybe
        # every sure candidate that scores above the k-th result is among the results
        assert all(c in got for c in surely if exact[c] > scores[r, -1] + 1e-5)
        np.testing.assert_allclose(scores[r], exact[got], atol=1e-5)
        assert list(scores[r]) == sorted(scores[r], reverse=True)
        assert cand[0] in got or exact[cand[0]] <= scores[r, 0] + 1e-5
    full = store.scores(q, k)
    np.testing.assert_array_equal(np.argsort(-full, axis=1, kind="stable")[:, :k], rows)
    # rows outside the candidates keep their Hamming order, below every candidate
    assert (full.max(1) == scores[:, 0]).all() and (np.sort(full, 1)[:, 0] < -2).all()


def test_select_keeps_codes(tmp_path):
    x = unit(50, 24, 4)
    for kind in ("int8", "binary"):
        store = QuantizedVectors(24, kind)
        store.add(x)
        kept = store.select([3, 1, 40])
        np.testing.assert_array_equal(
            kept.reconstruct_n(0, 3), store.reconstruct_n(0, 50)[[3, 1, 40]]
        )
        (tmp_path / kind).mkdir()
        write_quantized(kept, tmp_path / kind)
        back = read_quantized(tmp_path / kind, {"dim": 24, "quantize": kind})
        np.testing.assert_array_equal(back.reconstruct_n(0, 3), kept.reconstruct_n(0, 3))


def test_bytes_per_vector_targets():
    full = bytes_per_vector(128, "none")["in_memory"]
    assert bytes_per_vector(128, "int8")["in_memory"] / full == 0.25
    assert bytes_per_vector(128, "binary") == {"in_memory": 16, "on_disk": 16 + 128}
    assert bytes_per_vector(128, "binary")["in_memory"] / full <= 0.1


# ----------------------------------------------------------------------------- whole indexes
@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir, precision="fp32")


@pytest.mark.parametrize("quantize", ["int8", "binary"])
def test_quantized_index_build_add_upsert_search(model_dir, embedder, tmp_path, quantize):
    docs = make_docs(40)
    settings = IndexSettings(quantize=quantize, dimensions=32, rescore_factor=40)
    with build_index(docs[:30], tmp_path / "ix", model_dir, settings, embedder=embedder) as ix:
        assert ix.quantize == quantize and ix.dim == 32 and ix.model_dim == 64
        assert ix.meta["format_version"] == 2
        assert ix.meta["vectors"]["bytes_per_vector"] == bytes_per_vector(32, quantize)
        assert "32 of 64 dimensions" in ix.describe_vectors()
    edited = [Document(id="d3", text="river bank fox")]
    add_documents(tmp_path / "ix", docs[30:], embedder=embedder, model_dir=model_dir).close()
    add_documents(tmp_path / "ix", edited, embedder=embedder, model_dir=model_dir, upsert=True)
    final = [d for d in docs if d.id != "d3"] + edited
    vectors = truncate(embedder.encode_documents([d.full_text for d in final]), 32)
    queries = embedder.encode_queries(["fox river", "dictionary words", "attention models"])
    with VectorIndex.open(tmp_path / "ix") as ix:
        assert ix.ntotal == 40 and sorted(ix.ids()) == sorted(d.id for d in final)
        order = {doc_id: r for r, doc_id in enumerate(ix.ids())}
        ref = QuantizedVectors(32, quantize, 40)  # 40 x 10 candidates: every row re-scored
        ref.sq = faiss.clone_index(ix.faiss_index.sq)  # the index's learned ranges
        ref.sq.reset()
        ref.add(vectors)  # codes made afresh from the floats, in ``final`` order
        want = ref.scores(truncate(queries, 32), 10)
        for q, hits in enumerate(rank_documents(ix, queries, 10)):
            best = np.argsort(-want[q], kind="stable")[:10]
            assert [h.id for h in hits] == [final[i].id for i in best]
            np.testing.assert_allclose([h.score for h in hits], want[q][best], atol=1e-5)
        assert [doc_id for doc_id, _ in sorted(order.items(), key=lambda x: x[1])] == [
            d.id for d in final
        ]
        np.testing.assert_allclose(ix.vectors()[:29], vectors[:29], atol=0.01)
    # Text search through the index's model works unchanged.
    hits = Searcher.open(tmp_path / "ix").search("fox river", k=3, mode="dense")
    assert len(hits) == 3


def test_quantize_settings_are_checked():
    with pytest.raises(ConfigError, match="--quantize"):
        IndexSettings(quantize="int4")
    with pytest.raises(ConfigError, match="faiss hnsw"):
        IndexSettings(quantize="int8", faiss_type="hnsw")
    with pytest.raises(ConfigError, match="--dimensions"):
        IndexSettings(dimensions=0)


def test_dimensions_beyond_the_model_are_refused(model_dir, embedder, tmp_path):
    with pytest.raises(ConfigError, match="--dimensions must be an integer between 1 and 64"):
        build_index(
            make_docs(3),
            tmp_path / "ix",
            model_dir,
            IndexSettings(dimensions=65),
            embedder=embedder,
        )
    assert not (tmp_path / "ix").exists()


def _rechecksum(gen: Path, **changes) -> None:
    meta = json.loads((gen / META).read_text())
    meta.update(changes)
    meta[FILES] = file_checksums(gen)
    (gen / META).write_text(json.dumps(meta))


def test_format_1_index_still_opens_searches_and_grows(model_dir, embedder, tmp_path):
    docs = make_docs(12)
    build_index(docs[:10], tmp_path / "ix", model_dir, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    meta = json.loads((gen / META).read_text())
    del meta["vectors"]  # what version 1 wrote
    meta["format_version"] = 1
    (gen / META).write_text(json.dumps(meta))
    with VectorIndex.open(tmp_path / "ix") as ix:
        assert ix.quantize == "none" and ix.dim == ix.model_dim == 64
        q = embedder.encode_queries(["fox"])
        want = np.argsort(-(embedder.encode_documents([d.full_text for d in docs[:10]]) @ q[0]))
        assert [h.id for h in rank_documents(ix, q, 3)[0]] == [docs[i].id for i in want[:3]]
    with add_documents(tmp_path / "ix", docs[10:], embedder=embedder, model_dir=model_dir) as ix:
        assert ix.ntotal == 12 and ix.meta["format_version"] == 1


def test_unknown_format_version_is_refused(model_dir, embedder, tmp_path):
    build_index(make_docs(3), tmp_path / "ix", model_dir, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    _rechecksum(gen, format_version=3)
    with pytest.raises(IndexFormatError, match="unsupported format_version 3"):
        VectorIndex.open(tmp_path / "ix")


def test_corrupt_rescore_file_is_refused(model_dir, embedder, tmp_path):
    settings = IndexSettings(quantize="binary")
    build_index(make_docs(8), tmp_path / "ix", model_dir, settings, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    data = bytearray((gen / RESCORE).read_bytes())
    data[-3] ^= 0xFF
    (gen / RESCORE).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"rescore\.safetensors.*truncated or corrupt"):
        VectorIndex.open(tmp_path / "ix")
    # Cut short, with checksums that agree: the format check names the file.
    (gen / RESCORE).write_bytes(bytes(data[:40]))
    _rechecksum(gen)
    with pytest.raises(IndexFormatError, match=r"rescore\.safetensors.*rebuild the index"):
        VectorIndex.open(tmp_path / "ix")


@pytest.mark.parametrize(
    ("built", "claimed"),
    [("int8", "binary"), ("binary", "int8"), ("none", "int8"), ("int8", "none")],
)
def test_mismatched_vectors_file_is_refused(model_dir, embedder, tmp_path, built, claimed):
    settings = IndexSettings(quantize=built)
    build_index(make_docs(8), tmp_path / "ix", model_dir, settings, embedder=embedder).close()
    gen = current_generation(tmp_path / "ix")
    meta = json.loads((gen / META).read_text())
    vectors = dict(meta["vectors"], quantize=claimed, rescore_factor=10)
    if claimed == "binary":
        (gen / RESCORE).write_bytes(b"")  # the file exists, empty
    _rechecksum(gen, vectors=vectors)
    with pytest.raises(IndexFormatError, match=rf"{VECTORS}|{RESCORE}") as e:
        VectorIndex.open(tmp_path / "ix")
    assert "rebuild the index" in str(e.value)


def test_cli_build_quantized_and_info(model_dir, tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in make_docs(6)))
    out = tmp_path / "ix"
    assert (
        main(
            [
                "index",
                "build",
                "--model",
                str(model_dir),
                "--docs",
                str(docs),
                "--out",
                str(out),
                "--quantize",
                "binary",
                "--dimensions",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["index", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vectors"]["quantize"] == "binary" and info["vectors"]["dim"] == 32
    assert info["vectors"]["rescore"] == "int8"
    assert main(["search", str(out), "fox", "-k", "2", "--mode", "dense", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got["hits"]) == 2 and got["vectors_stored"].startswith("binary")
