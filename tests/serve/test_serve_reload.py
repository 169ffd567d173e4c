"""``serve --index`` follows the index: after ``index add`` (or ``index build --overwrite``) makes a
new generation live, the next request searches it, in-flight requests finish, none is dropped;
an index rebuilt with another model or settings is refused, not searched with the wrong model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from test_serve import ServerThread, assert_error, request

from diffembed.formats.corpus import Document
from diffembed.index.build import add_documents, build_index
from diffembed.index.store import current_generation
from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig, create_app

WORDS = ["fox", "river", "bank", "tokens", "keys", "needles", "haystacks", "query", "words"]


def docs(n: int, prefix: str) -> list[Document]:
    return [
        Document(id=f"{prefix}{i}", text=" ".join(WORDS[(i * 3 + j) % 9] for j in range(7)))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir)


def serve(embedder: Embedder, index_dir: Path) -> ServerThread:
    from diffembed.index.store import VectorIndex

    return ServerThread(
        create_app(embedder, ServeConfig(model_name="m"), VectorIndex.open(index_dir))
    )


def health_docs(port: int) -> int:
    status, _, body = request(port, "GET", "/health")
    assert status == 200, body
    return body["index"]["documents"]


def search(port: int, query: str, k: int = 3) -> dict:
    status, _, body = request(port, "POST", "/v1/search", {"query": query, "k": k})
    assert status == 200, body
    return body


def test_search_follows_index_add_without_restart(model_dir, embedder, tmp_path):
    ix = tmp_path / "ix"
    build_index(docs(3, "a"), ix, model_dir, embedder=embedder).close()
    first_gen = current_generation(ix)
    with serve(embedder, ix) as server:
        assert health_docs(server.port) == 3
        assert search(server.port, "fox")["index"]["documents"] == 3
        new = Document(id="new", text="a completely new document about needles")
        add_documents(ix, [new], embedder=embedder).close()
        assert not first_gen.exists()  # the writer removed the generation being served
        assert health_docs(server.port) == 4
        out = search(server.port, new.text, k=4)
        assert out["index"]["documents"] == 4
        assert "new" in [h["id"] for h in out["data"]]
        # Upsert and overwrite with the same model are followed too.
        add_documents(
            ix, [Document(id="new", text="replaced text")], embedder=embedder, upsert=True
        )
        hits = {h["id"]: h for h in search(server.port, "replaced text", k=4)["data"]}
        assert hits["new"]["snippet"] == "replaced text"
        build_index(docs(6, "b"), ix, model_dir, embedder=embedder, overwrite=True).close()
        assert health_docs(server.port) == 6
        assert {h["id"] for h in search(server.port, "fox", k=6)["data"]} == {
            f"b{i}" for i in range(6)
        }
        # Deleted and built again: the same generation name, new contents.
        shutil.rmtree(ix)
        build_index(docs(2, "c"), ix, model_dir, embedder=embedder).close()
        assert health_docs(server.port) == 2
        assert {h["id"] for h in search(server.port, "fox")["data"]} == {"c0", "c1"}


def test_no_request_dropped_while_the_index_changes(model_dir, embedder, tmp_path):
    ix = tmp_path / "ix"
    build_index(docs(5, "a"), ix, model_dir, embedder=embedder).close()
    failures: list[object] = []
    seen: set[int] = set()
    stop = threading.Event()
    with serve(embedder, ix) as server:

        def client() -> None:
            while not stop.is_set():
                status, _, body = request(server.port, "POST", "/v1/search", {"query": "fox"})
                if status != 200:
                    failures.append(body)
                else:
                    seen.add(body["index"]["documents"])

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for n in range(4):
                add_documents(ix, docs(2, f"x{n}-"), embedder=embedder).close()
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert failures == []
        assert health_docs(server.port) == 13
        assert search(server.port, "fox")["index"]["documents"] == 13
    assert len(seen) >= 2  # the clients saw the index grow


def test_index_rebuilt_with_another_model_is_refused(model_dir, embedder, checkpoints, tmp_path):
    ix = tmp_path / "ix"
    build_index(docs(3, "a"), ix, model_dir, embedder=embedder).close()
    other = tmp_path / "other"
    Embedder.load(checkpoints["qwen2"], max_length=48, precision="fp32").save(other)
    with serve(embedder, ix) as server:
        assert health_docs(server.port) == 3
        build_index(docs(4, "b"), ix, other, overwrite=True).close()
        err = assert_error(request(server.port, "POST", "/v1/search", {"query": "fox"}), 503)
        assert "another model" in err["message"] and str(ix) in err["message"]
        assert err["code"] == "index_model_changed"
        status, _, body = request(server.port, "GET", "/health")
        assert status == 200 and "another model" in body["index"]["error"]
        # Embeddings are still served; the index comes back when rebuilt with this model.
        assert request(server.port, "POST", "/v1/embeddings", {"input": "fox"})[0] == 200
        shutil.rmtree(ix)
        build_index(docs(2, "c"), ix, model_dir, embedder=embedder).close()
        assert search(server.port, "fox")["index"]["documents"] == 2
        assert "error" not in request(server.port, "GET", "/health")[2]["index"]
