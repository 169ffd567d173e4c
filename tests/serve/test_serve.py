"""The HTTP server, run for real on 127.0.0.1 (a random free port): OpenAI client and plain HTTP
parity with ``Embedder.encode``, search, errors, fuzzing from its own OpenAPI spec, API key,
micro-batching, the bounded queue, graceful shutdown, and the CLI under SIGTERM."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffembed.formats.corpus import Document
from diffembed.index.build import build_index
from diffembed.index.search import Searcher
from diffembed.index.store import VectorIndex
from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig, bind_socket, create_app, make_server

TEXTS = [
    "A dictionary defines words.",
    "Diffusion language models denoise masked tokens with bidirectional attention.",
    "fox",
    "Retrieval finds the documents relevant to a query among many candidates.",
]
LONG = "needles and haystacks " * 30  # well over max_length=48 tokens


class ServerThread:
    """A real uvicorn server on 127.0.0.1 and a free port, run in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = make_server(app, log_level="warning", timeout_graceful_shutdown=30)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert self.thread.is_alive(), "server thread died"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], Any]:
    """Plain HTTP (http.client): ``(status, headers, parsed JSON or text)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if chunked:
        conn.request(method, path, body=iter([data]), headers=hdrs, encode_chunked=True)
    else:
        conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    kind = resp.getheader("content-type", "")
    parsed = json.loads(payload) if kind.startswith("application/json") else payload.decode()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def assert_error(result: tuple[int, dict, Any], status: int, match: str = "") -> dict:
    got, _, body = result
    assert got == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert match in body["error"]["message"], body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir)


@pytest.fixture(scope="module")
def index_dir(model_dir, embedder, tmp_path_factory) -> Path:
    words = [
        "fox",
        "river",
        "bank",
        "words",
        "tokens",
        "attention",
        "retrieval",
        "keys",
        "needles",
        "haystacks",
    ]
    rng = np.random.default_rng(0)
    docs = [Document(id=f"d{i}", text=" ".join(rng.choice(words, 10))) for i in range(20)]
    path = tmp_path_factory.mktemp("serve") / "index"
    build_index(docs, path, model_dir, embedder=embedder).close()
    return path


@pytest.fixture(scope="module")
def server(embedder, index_dir):
    config = ServeConfig(model_name="tiny", max_inputs=64, max_body_bytes=64 * 1024)
    with ServerThread(create_app(embedder, config, VectorIndex.open(index_dir))) as s:
        yield s


def slowed(model_dir: Path, seconds: float) -> Embedder:
    """An embedder whose every forward pass also sleeps ``seconds``."""
    emb = Embedder.load(model_dir)
    inner = emb.embed_tokens

    def embed_tokens(*args: Any, **kw: Any):
        time.sleep(seconds)
        return inner(*args, **kw)

    emb.embed_tokens = embed_tokens  # type: ignore[method-assign]
    return emb


# ----------------------------------------------------------------------------- parity
def test_openai_client_and_plain_http_equal_encode(server, embedder):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused")
    want = embedder.encode(TEXTS)
    for fmt in ("float", "base64"):
        r = client.embeddings.create(model="tiny", input=TEXTS, encoding_format=fmt)
        got = np.array(
            [
                np.frombuffer(base64.b64decode(d.embedding), "<f4")
                if isinstance(d.embedding, str)
                else d.embedding
                for d in r.data
            ]
        )
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert [d.index for d in r.data] == list(range(len(TEXTS)))
        n_tokens = sum(len(x) for x in embedder.tokenizer(TEXTS)["input_ids"])
        assert r.usage.prompt_tokens == r.usage.total_tokens == n_tokens
        assert r.model == "tiny"
    single = client.embeddings.create(model="tiny", input=TEXTS[1])
    np.testing.assert_allclose(single.data[0].embedding, want[1], atol=1e-5)
    # The client's default (no encoding_format) decodes to the same vectors.
    r = client.embeddings.create(model="tiny", input=TEXTS)
    np.testing.assert_allclose(np.array([d.embedding for d in r.data]), want, atol=1e-5)

    status, headers, body = request(
        server.port, "POST", "/v1/embeddings", {"input": TEXTS, "model": "tiny"}
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], want, atol=1e-5)


def test_prompts_instruction_dimensions_and_truncate(server, embedder):
    def vectors(body: dict) -> np.ndarray:
        status, _, out = request(server.port, "POST", "/v1/embeddings", body)
        assert status == 200, out
        return np.array([d["embedding"] for d in out["data"]])

    np.testing.assert_allclose(
        vectors({"input": TEXTS, "prompt_name": "query"}),
        embedder.encode(TEXTS, prompt_name="query"),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        vectors({"input": TEXTS, "instruction": "Find a definition"}),
        embedder.encode(TEXTS, prompt="Find a definition"),
        atol=1e-5,
    )
    cut = embedder.encode(TEXTS)[:, :16]
    got = vectors({"input": TEXTS, "dimensions": 16})
    assert got.shape == (4, 16)
    np.testing.assert_allclose(got, cut / np.linalg.norm(cut, axis=1, keepdims=True), atol=1e-5)
    err = assert_error(
        request(server.port, "POST", "/v1/embeddings", {"input": ["ok", LONG]}),
        400,
        "input[1] has",
    )
    assert "max_length=48" in err["message"] and err["code"] == "context_length_exceeded"
    n = len(embedder.tokenizer(LONG)["input_ids"])
    assert f"input[1] has {n} tokens" in err["message"]
    status, _, out = request(
        server.port, "POST", "/v1/embeddings", {"input": ["ok", LONG], "truncate": True}
    )
    assert status == 200 and out["usage"]["prompt_tokens"] == 48 + len(
        embedder.tokenizer("ok")["input_ids"]
    )
    np.testing.assert_allclose(out["data"][1]["embedding"], embedder.encode([LONG])[0], atol=1e-5)


def test_search_endpoint_matches_searcher(server, index_dir):
    searcher = Searcher.open(index_dir)
    for body in ({"query": "fox river", "k": 5}, {"query": "keys", "k": 3, "instruction": "Q"}):
        status, _, out = request(server.port, "POST", "/v1/search", body)
        assert status == 200, out
        want = searcher.search(body["query"], body["k"], prompt=body.get("instruction"))
        assert [h["id"] for h in out["data"]] == [h.id for h in want]
        np.testing.assert_allclose(
            [h["score"] for h in out["data"]], [h.score for h in want], atol=1e-5
        )
        assert out["index"]["mode"] == "whole" and out["index"]["documents"] == 20
        assert out["data"][0]["snippet"] and out["usage"]["prompt_tokens"] > 0
    assert_error(request(server.port, "POST", "/v1/search", {"query": "x", "k": 0}), 400, "k")
    assert_error(request(server.port, "POST", "/v1/search", {"query": " "}), 400, "empty")


def test_models_health_metrics(server, embedder):
    status, _, body = request(server.port, "GET", "/v1/models")
    assert status == 200 and body["data"][0]["id"] == "tiny"
    assert body["data"][0]["dimensions"] == embedder.dim
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    status, _, body = request(server.port, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["index"]["documents"] == 20
    request(server.port, "POST", "/v1/embeddings", {"input": TEXTS})
    status, headers, text = request(server.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert int(lines['diffembed_requests_total{endpoint="/v1/embeddings",status="200"}']) >= 1
    assert int(lines["diffembed_tokens_total"]) > 0 and int(lines["diffembed_inputs_total"]) >= 4
    assert int(lines['diffembed_batch_size_bucket{le="+Inf"}']) >= 1
    assert float(lines['diffembed_request_latency_seconds_sum{endpoint="/v1/embeddings"}']) > 0
    assert 'diffembed_request_latency_seconds_bucket{endpoint="/v1/embeddings",le="0.1"}' in lines


# ----------------------------------------------------------------------------- bad input
BAD = [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, ""),
    (b"[1, 2]", 400, ""),
    ({"input": 5}, 400, "input must be a string, a list of strings"),
    ({"input": [1, "a"]}, 400, "a list of token ids"),  # token ids: see test_token_input.py
    ({"input": None}, 400, "input"),
    ({}, 400, "input"),
    ({"input": []}, 400, "empty list"),
    ({"input": ""}, 400, "input[0] is empty"),
    ({"input": ["a", "  "]}, 400, "input[1] is empty"),
    ({"input": ["a"] * 65}, 400, "at most 64"),
    ({"input": "a", "model": "gpt-x"}, 404, "'gpt-x' is not served"),
    ({"input": "a", "dimensions": 0}, 400, "dimensions must be between 1 and 64"),
    ({"input": "a", "dimensions": 65}, 400, "dimensions"),
    ({"input": "a", "dimensions": "8"}, 400, "dimensions"),
    ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "a", "prompt_name": "nope"}, 400, "unknown prompt_name 'nope'"),
    ({"input": "a", "prompt_name": "query", "instruction": "x"}, 400, "not both"),
    ({"input": "a", "truncate": "yes"}, 400, "truncate"),
    ({"input": "a", "surprise": 1}, 400, "surprise"),
    (b'{"input": "\\ud800"}', 400, "not valid Unicode"),
]


@pytest.mark.parametrize("body,status,match", BAD, ids=range(len(BAD)))
def test_bad_input_gets_openai_error(server, body, status, match):
    raw = body if isinstance(body, bytes) else None
    assert_error(request(server.port, "POST", "/v1/embeddings", body, raw=raw), status, match)


def test_bodies_that_are_not_json_say_why(server):
    """Issue 26: no Content-Type said "Input should be a valid dictionary or object to extract
    fields from"; a Latin-1 byte "There was an error parsing the body"."""
    for headers in ({}, {"Content-Type": "text/plain"}):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/v1/embeddings", body=b'{"input": "a"}', headers=headers)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 400, body
        message = body["error"]["message"]
        assert "Content-Type header" in message and "application/json" in message
        assert ("text/plain" in message) == bool(headers) and "dictionary" not in message
    raw = b'{"input": "caf\xe9"}'  # Latin-1
    err = assert_error(request(server.port, "POST", "/v1/embeddings", raw=raw), 400, "UTF-8")
    assert "byte 0xe9 at offset 14" in err["message"] and err["code"] == "invalid_json"
    raw = b'{"input": ["ok", "\\ud800"]}'
    err = assert_error(request(server.port, "POST", "/v1/embeddings", raw=raw), 400, "U+D800")
    assert err["param"] == "input[1]"


def test_body_limit_paths_and_methods(server):
    big = {"input": ["fox " * 4000] * 5}  # ~80 KB > 64 KiB
    assert_error(request(server.port, "POST", "/v1/embeddings", big), 413, "65536 bytes")
    assert_error(
        request(server.port, "POST", "/v1/embeddings", big, chunked=True), 413, "65536 bytes"
    )
    assert_error(request(server.port, "GET", "/v1/nothing"), 404)
    assert_error(request(server.port, "GET", "/v1/embeddings"), 405)
    status, _, _ = request(server.port, "GET", "/health")
    assert status == 200


def _strategy(schema: dict, spec: dict) -> st.SearchStrategy:
    """Values that satisfy ``schema`` (an OpenAPI/JSON schema) as far as its types go."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _strategy(spec["components"]["schemas"][name], spec)
    if "anyOf" in schema:
        return st.one_of([_strategy(s, spec) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "string":
        return st.text(max_size=40) | st.sampled_from(TEXTS + ["tiny", "query", LONG])
    if kind == "integer":
        return st.integers(-5, 100) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), spec), max_size=5)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: _strategy(v, spec) for k, v in props.items() if k in required},
            optional={k: _strategy(v, spec) for k, v in props.items() if k not in required},
        )
    return JSON


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    status, _, spec = request(server.port, "GET", "/openapi.json")
    assert status == 200
    return spec


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/search"])
def test_fuzz_from_own_openapi_spec_never_crashes(server, openapi, path):
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    conforming = _strategy(schema["schema"], openapi)
    # Conforming bodies, conforming bodies with one field replaced by any JSON, any JSON at all,
    # and arbitrary bytes.
    mutated = st.tuples(conforming, st.text(max_size=10), JSON).map(
        lambda t: {**t[0], t[1]: t[2]} if isinstance(t[0], dict) else t[0]
    )
    bodies = (
        conforming.map(lambda b: json.dumps(b).encode())
        | mutated.map(lambda b: json.dumps(b).encode())
        | JSON.map(lambda b: json.dumps(b).encode())
        | st.binary(max_size=64)
    )
    seen: set[int] = set()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
        database=None,
    )
    @given(raw=bodies)
    def check(raw: bytes) -> None:
        status, headers, body = request(server.port, "POST", path, raw=raw)
        seen.add(status)
        assert status in (200, 400, 404, 413), (raw, status, body)
        if status != 200:
            assert set(body["error"]) == {"message", "type", "param", "code"}
        else:
            assert body["object"] == "list" and isinstance(body["data"], list)

    check()
    assert 200 in seen and 400 in seen  # the strategies reached both sides
    assert request(server.port, "GET", "/health")[0] == 200


# ----------------------------------------------------------------------------- API key
def test_api_key_required(embedder):
    app = create_app(embedder, ServeConfig(model_name="tiny", api_key="s3cret"))
    with ServerThread(app) as s:
        err = assert_error(request(s.port, "POST", "/v1/embeddings", {"input": "a"}), 401, "key")
        assert err["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer nope"}
        assert_error(request(s.port, "POST", "/v1/embeddings", {"input": "a"}, wrong), 401)
        assert_error(request(s.port, "GET", "/v1/models"), 401)
        assert_error(request(s.port, "GET", "/metrics"), 401)
        assert request(s.port, "GET", "/health")[0] == 200
        good = openai.OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="s3cret")
        r = good.embeddings.create(model="tiny", input=TEXTS)
        np.testing.assert_allclose(r.data[0].embedding, embedder.encode(TEXTS)[0], atol=1e-5)
        bad = openai.OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="tiny", input="a")


# ----------------------------------------------------------------------------- batching
def test_concurrent_requests_are_merged_and_full_queue_answers_503(model_dir):
    emb = slowed(model_dir, 0.15)
    config = ServeConfig(model_name="tiny", max_queue_texts=6, max_inputs=2)
    app = create_app(emb, config)
    with ServerThread(app) as s:
        texts = [[f"text {i} fox", f"river {i}"] for i in range(12)]

        def call(pair: list[str]) -> tuple[int, dict, Any]:
            return request(s.port, "POST", "/v1/embeddings", {"input": pair})

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(call, texts))
        ok = [(pair, r) for pair, r in zip(texts, results, strict=True) if r[0] == 200]
        busy = [r for r in results if r[0] == 503]
        assert ok and busy and len(ok) + len(busy) == 12
        for r in busy:
            assert r[1]["retry-after"] == "1" and r[2]["error"]["code"] == "queue_full"
        for pair, r in ok:  # merged batches still give each request its own vectors
            np.testing.assert_allclose(
                [d["embedding"] for d in r[2]["data"]], emb.encode(pair), atol=1e-5
            )
        metrics = app.app.state.metrics
        assert metrics.forward_passes < len(ok)  # several requests shared forward passes
        # Some worker step merged two or more requests (the first bucket is "1 request").
        assert metrics.step_requests.count > metrics.step_requests.counts[0]
        assert request(s.port, "GET", "/health")[0] == 200


def test_graceful_shutdown_finishes_in_flight_requests(model_dir):
    emb = slowed(model_dir, 0.6)
    app = create_app(emb, ServeConfig(model_name="tiny"))
    s = ServerThread(app)
    s.__enter__()
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = request(s.port, "POST", "/v1/embeddings", {"input": TEXTS})

    t = threading.Thread(target=call)
    t.start()
    batcher = app.app.state.batcher
    deadline = time.monotonic() + 10
    while batcher.pending == 0:  # the request is in the worker now
        assert time.monotonic() < deadline
        time.sleep(0.01)
    s.server.should_exit = True  # what SIGTERM does
    t.join(30)
    s.thread.join(30)
    status, _, body = result["r"]
    assert status == 200
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], emb.encode(TEXTS), atol=1e-5)
    assert not s.thread.is_alive()
    with pytest.raises(OSError):
        request(s.port, "GET", "/health")


@pytest.mark.slow  # the CLI in a subprocess
def test_cli_serve_with_index_and_api_key_stops_on_sigterm(model_dir, index_dir, embedder):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DIFFEMBED_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffembed", "serve", "--model", str(model_dir)]
        + ["--index", str(index_dir), "--port", str(port), "--model-name", "m"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        auth = {"Authorization": "Bearer k"}
        assert request(port, "POST", "/v1/embeddings", {"input": TEXTS})[0] == 401
        status, _, body = request(port, "POST", "/v1/embeddings", {"input": TEXTS}, auth)
        assert status == 200
        np.testing.assert_allclose(
            [d["embedding"] for d in body["data"]], embedder.encode(TEXTS), atol=1e-5
        )
        status, _, body = request(port, "POST", "/v1/search", {"query": "fox", "k": 2}, auth)
        assert status == 200 and len(body["data"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "worker stopped" in out or "Finished server process" in out
