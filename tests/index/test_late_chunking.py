"""Late chunking (diffembed.model.chunking): span pooling, chunk spans that tile the document's
tokens, the plain vector for a one-chunk document, windows past the model's positions, and the
same chunk vectors in ``index build --chunking late`` and ``eval --chunking late``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import diffembed.model.pooling as pooling
from checkpoints import TOY_WORDS
from diffembed.cli.main import main
from diffembed.eval.composed import ChunkedRetriever
from diffembed.eval.models import EmbedderRetriever
from diffembed.formats.corpus import Document
from diffembed.formats.task_writer import write_task
from diffembed.index.build import IndexSettings, add_documents, build_index
from diffembed.index.search import rank_documents
from diffembed.model.chunking import Chunking, chunk_token_spans, late_chunk, plan_windows
from diffembed.model.embedder import Embedder
from diffembed.model.pooling import mean_pool, span_mean_pool

WORDS = TOY_WORDS


def text_of(n_words: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, size=n_words))


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir, precision="fp32")  # max_length 48


def n_tokens(emb: Embedder, text: str) -> int:
    return len(emb.tokenizer(text, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------- pure functions
def test_span_mean_pool_is_mean_pool_of_the_span():
    hidden = torch.randn(2, 7, 5)
    got = span_mean_pool(hidden, [(0, 0, 7), (1, 2, 5), (0, 3, 4)])
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 0, 0]])
    torch.testing.assert_close(got[:2], mean_pool(hidden, mask))
    torch.testing.assert_close(got[2], hidden[0, 3])
    assert span_mean_pool(hidden, []).shape == (0, 5)
    for bad in ([(0, 3, 3)], [(2, 0, 1)], [(0, 5, 9)]):
        with pytest.raises(ValueError, match="empty or outside"):
            span_mean_pool(hidden, bad)


@pytest.mark.parametrize("n,chunk,overlap", [(1, 4, 0), (10, 4, 0), (10, 4, 2), (37, 5, 1)])
def test_chunk_token_spans_tile_the_tokens(n, chunk, overlap):
    spans = chunk_token_spans(n, chunk, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(e - s <= chunk for s, e in spans)
    for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        assert e1 - s2 == overlap  # neighbours share exactly `overlap` tokens
    assert chunk_token_spans(0, 4, 0) == []


@pytest.mark.parametrize("n,capacity", [(30, 40), (100, 20), (257, 64), (64, 63)])
def test_windows_hold_each_chunk_whole_and_overlap(n, capacity):
    spans = chunk_token_spans(n, 8, 2)
    windows = plan_windows(spans, n, capacity)
    assigned = [c for _, _, chunks in windows for c in chunks]
    assert assigned == list(range(len(spans)))  # each chunk in exactly one window, in order
    for ws, we, chunks in windows:
        assert 0 <= ws < we <= n and we - ws <= capacity
        assert all(ws <= spans[c][0] and spans[c][1] <= we for c in chunks)
    if n <= capacity:
        assert windows == [(0, n, list(range(len(spans))))]
    else:
        assert len(windows) > 1
        for (_, e1, _), (s2, _, _) in zip(windows, windows[1:], strict=False):
            assert s2 < e1  # neighbouring windows overlap


# ----------------------------------------------------------------------------- late_chunk
def test_one_chunk_document_gets_the_plain_vector(embedder, model_dir):
    texts = [text_of(6, s) for s in range(3)]
    late = late_chunk(embedder, texts, chunk_tokens=40)
    assert late.doc_chunks == [1, 1, 1] and late.windows == [1, 1, 1]
    np.testing.assert_allclose(late.vectors, embedder.encode_documents(texts), atol=1e-5)
    # also with a document prompt left out of pooling
    emb = Embedder.load(model_dir, precision="fp32")
    emb.prompts["document"] = "Doc"
    emb.prompt_template, emb.include_instruction = "{instruction}:{text}", False
    late = late_chunk(emb, texts, chunk_tokens=40)
    np.testing.assert_allclose(late.vectors, emb.encode_documents(texts), atol=1e-5)


def test_chunk_spans_cover_the_document_tokens_exactly(embedder, monkeypatch):
    seen: list[list[tuple[int, int, int]]] = []
    real = pooling.span_mean_pool
    monkeypatch.setattr(pooling, "span_mean_pool", lambda h, s: seen.append(s) or real(h, s))
    text = text_of(17, 1)
    ids = embedder.tokenizer(text)["input_ids"]
    assert len(ids) <= embedder.max_length
    late = late_chunk(embedder, [text], chunk_tokens=6)
    spans = sorted((s, e) for _, s, e in seen[0])
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)  # specials included at both ends
    assert all(e1 == s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))
    assert late.doc_chunks == [len(spans)] and [r[4] for r in late.rows][0] == 6
    # the chunks' characters tile the text too
    assert late.rows[0][2] == 0 and late.rows[-1][3] == len(text)


def test_documents_past_the_positions_are_split_into_windows(embedder, model_dir, tmp_path, caplog):
    long = text_of(400, 2)
    assert n_tokens(embedder, long) > 3 * embedder.max_length
    late = late_chunk(embedder, [long, text_of(5, 3)], chunk_tokens=16, chunk_overlap=4)
    assert late.windows[0] > 1 and late.windows[1] == 1 and late.windowed == 1
    assert late.doc_chunks[0] == len(chunk_token_spans(n_tokens(embedder, long), 16, 4))
    assert np.isfinite(late.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(late.vectors, axis=1), 1.0, atol=1e-5)
    # in a window a chunk sees other context than alone: late differs from plain chunking
    plain = embedder.encode_documents([long[late.rows[3][2] : late.rows[3][3]]])[0]
    assert not np.allclose(late.vectors[3], plain, atol=1e-4)
    # the index says so
    docs = [Document(id="long", text=long), Document(id="short", text=text_of(5, 3))]
    with caplog.at_level(logging.WARNING):
        late_16 = IndexSettings(Chunking(16, mode="late"))
        build_index(docs, tmp_path / "ix", model_dir, late_16, embedder=embedder).close()
    assert "1 of 2 document(s) exceed max_length=48" in caplog.text
    assert "overlapping windows" in caplog.text


def test_late_index_build_add_and_eval_agree(embedder, model_dir, tmp_path):
    docs = [Document(id=f"d{i}", text=text_of(30 + 10 * i, i)) for i in range(4)]
    late_12 = IndexSettings(Chunking(12, mode="late"))
    with build_index(docs[:3], tmp_path / "ix", model_dir, late_12, embedder=embedder) as index:
        assert index.mode["chunking"] == "late" and "late-chunked" in index.describe_mode()
    with add_documents(tmp_path / "ix", docs[3:], embedder=embedder) as index:
        late = late_chunk(embedder, [d.full_text for d in docs], 12)
        np.testing.assert_allclose(index.vectors(), late.vectors, atol=1e-5)
        q = embedder.encode_queries(["fox river"])
        served = rank_documents(index, q, 4)[0]
    chunked = ChunkedRetriever(EmbedderRetriever(embedder), Chunking(12, mode="late"))
    chunked.index([d.id for d in docs], [d.full_text for d in docs])
    run = chunked.search(["q"], ["fox river"], top_k=4).run["q"]
    assert [h.id for h in served] == list(run)
    np.testing.assert_allclose([h.score for h in served], list(run.values()), atol=1e-5)


def test_late_chunking_refusals(embedder, model_dir, tmp_path):
    with pytest.raises(ValueError, match="--chunking late needs --chunk-tokens"):
        Chunking(mode="late")
    last = Embedder.load(model_dir, precision="fp32")
    last.pooling = "last"
    with pytest.raises(ValueError, match="use --chunking plain"):
        late_chunk(last, ["fox river"], 8)


def test_eval_cli_chunking_and_retriever(model_dir, tmp_path):
    corpus = [{"_id": f"d{i}", "title": "", "text": text_of(40, i)} for i in range(5)]
    task = write_task(
        tmp_path / "task",
        name="t",
        suite="longdoc",
        corpus=corpus,
        queries=[{"_id": "q0", "text": "fox river"}, {"_id": "q1", "text": "models"}],
        qrels={"q0": {"d0": 1}, "q1": {"d3": 1}},
    )
    for extra in (
        ["--chunk-tokens", "12", "--chunking", "late"],
        ["--chunk-tokens", "12"],
        ["--retriever", "hybrid", "--chunk-tokens", "12", "--chunking", "late"],
        ["--retriever", "hybrid", "--alpha", "0.5"],
        ["--retriever", "bm25"],
    ):
        out = tmp_path / f"r{len(extra)}{extra[1]}.json"
        argv = ["eval", "--model", str(model_dir), "--task-dir", str(task.path), "--out", str(out)]
        assert main([*argv, "--no-progress", "--precision", "fp32", *extra]) == 0
        result = json.loads(out.read_text())
        settings = result["settings"]
        assert settings["retriever"] == (extra[1] if extra[0] == "--retriever" else "dense")
        if "--chunk-tokens" in extra:
            mode = "late" if "late" in extra else "plain"
            assert settings["chunking"] == {"mode": mode, "tokens": 12, "overlap": 0}
        assert 0 <= result["tasks"][0]["main_score"] <= 1
    argv = ["eval", "--model", str(model_dir), "--task-dir", str(task.path), "--out"]
    assert main([*argv, str(tmp_path / "x.json"), "--alpha", "0.5"]) == 2
    assert main([*argv, str(tmp_path / "x.json"), "--chunking", "late"]) == 2
