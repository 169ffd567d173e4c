"""Server load: a bounded number of requests from N concurrent clients over loopback.

Starts ``diffembed serve`` (a separate process on 127.0.0.1 and a free port, or in this process
with ``--in-process``), sends ``--requests`` embedding requests of ``--inputs`` texts each from
``--clients`` concurrent clients (keep-alive HTTP/1.1), and prints requests/s, tokens/s, p50/p99
latency, and the ratio of the server's tokens/s to ``Embedder.encode`` on the same inputs in
this process (one call over all of them, the best case for direct batching). It also checks
that the server's vectors equal direct ones.

Without ``--model`` it writes a random Llama-layout model (``--layers`` x ``--hidden``, a BPE
vocabulary trained on the benchmark text) to a temporary directory. Texts are drawn from
``data/corpus/eval.jsonl`` when present (``make data``), else synthetic.

    .venv/bin/python benchmarks/serve_load.py --clients 16 --requests 256 --inputs 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "model",
    "token",
    "query",
    "document",
    "retrieval",
    "vector",
    "attention",
    "layer",
    "train",
    "loss",
    "batch",
    "gradient",
    "diffusion",
    "mask",
    "noise",
    "embed",
    "pool",
    "mean",
    "scale",
    "cosine",
    "sample",
    "step",
    "rate",
    "data",
    "river",
    "fox",
]


def load_texts(n: int, words: int, seed: int) -> tuple[list[str], str]:
    """``n`` texts of at most ``words`` words: real corpus text when available."""
    rng = random.Random(seed)
    corpus = ROOT / "data" / "corpus" / "eval.jsonl"
    if corpus.is_file():
        texts: list[str] = []
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                text = " ".join(json.loads(line)["text"].split()[:words])
                if text:
                    texts.append(text)
                if len(texts) >= 20 * n:
                    break
        if len(texts) >= n:
            return rng.sample(texts, n), str(corpus.relative_to(ROOT))
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words))) for _ in range(n)
    ], "synthetic"


def write_random_model(directory: Path, layers: int, hidden: int, texts: list[str]) -> Path:
    """A random-weight bidirectional Llama-layout embedder saved with ``Embedder.save``."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    from diffembed.model.embedder import Embedder
    from diffembed.model.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts * 4, vocab_size=4000)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config.is_causal = False
    torch.manual_seed(0)
    Embedder(LlamaModel(config).eval(), tok, max_length=512).save(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn: http.client.HTTPConnection, body: bytes) -> dict:
    conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    return json.loads(data)


def run_load(port: int, requests: list[list[str]], clients: int) -> dict:
    """Send every request once from ``clients`` threads; latency per request in seconds."""
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(requests)):
        todo.put(i)
    latencies = [0.0] * len(requests)
    tokens = [0] * len(requests)
    vectors: dict[int, np.ndarray] = {}
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            body = json.dumps(
                {"input": requests[i], "encoding_format": "base64", "truncate": True}
            ).encode()
            start = time.perf_counter()
            try:
                out = post(conn, body)
            except Exception as e:  # report, do not hang
                errors.append(str(e))
                break
            latencies[i] = time.perf_counter() - start
            tokens[i] = out["usage"]["prompt_tokens"]
            if i < 8:
                import base64

                vectors[i] = np.stack(
                    [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in out["data"]]
                )
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client error(s), first: {errors[0]}")
    lat = np.array(latencies)
    return {
        "wall_s": wall,
        "requests_per_s": len(requests) / wall,
        "tokens_per_s": sum(tokens) / wall,
        "tokens": sum(tokens),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "vectors": vectors,
    }


def server_metrics(port: int) -> dict[str, float]:
    """The server's Prometheus counters and histogram sums (``/metrics``), by series name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_healthy(port: int, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="model directory (default: a random model)")
    p.add_argument("--layers", type=int, default=4, help="random model layers (default 4)")
    p.add_argument("--hidden", type=int, default=256, help="random model width (default 256)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--requests", type=int, default=256, help="requests in all (default 256)")
    p.add_argument("--inputs", type=int, default=4, help="texts per request (default 4)")
    p.add_argument("--words", type=int, default=60, help="words per text at most (default 60)")
    p.add_argument(
        "--precision",
        "--dtype",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="compute precision of the server and the direct encode (--dtype: its old name)",
    )
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument(
        "--batch-wait-ms", type=float, help="server's --batch-wait-ms (default: the server's)"
    )
    p.add_argument("--threads", type=int, help="server's --threads (torch threads of its worker)")
    p.add_argument(
        "--server-cpus",
        help="pin the server and the direct encode to these CPUs (e.g. 0,1: a 2-core server); "
        "the clients then run on the other CPUs",
    )
    p.add_argument("--in-process", action="store_true", help="run the server in this process")
    p.add_argument("--write-model", type=Path, help="keep the random model here (reused if there)")
    p.add_argument("--repeats", type=int, default=3, help="direct encode: best of N (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.requests < 1 or args.clients < 1 or args.inputs < 1:
        p.error("--requests, --clients and --inputs must be >= 1")
    if args.server_cpus:
        cpus = {int(c) for c in args.server_cpus.split(",")}
        if args.in_process or not set(range(os.cpu_count() or 1)) - cpus:
            p.error("--server-cpus needs a subprocess server and CPUs left for the clients")
    return args


def pin_server_cpus(args: argparse.Namespace) -> tuple[set[int] | None, set[int]]:
    """``(server CPUs, client CPUs)`` of ``--server-cpus`` (None: not pinned); this process
    (the server's side: the direct encode) is pinned to the server's, with as many threads."""
    if not args.server_cpus:
        return None, set()
    import torch

    cpus = {int(c) for c in args.server_cpus.split(",")}
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(len(cpus))
    args.threads = args.threads or len(cpus)
    return cpus, set(range(os.cpu_count() or 1)) - cpus


def best_encode(emb: Any, texts: list[str], per_pass: int, args: argparse.Namespace) -> float:
    """Seconds of the fastest of ``--repeats`` encodes of ``texts``, ``per_pass`` at a time."""
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), per_pass):
            emb.encode(texts[i : i + per_pass], max_tokens_per_batch=args.max_batch_tokens)
        best = min(best, time.perf_counter() - start)
    return best


def start_server(emb: Any, model: Path, port: int, args: argparse.Namespace) -> tuple:
    """``(subprocess, in-process server, its thread)``: the server under load, one of the two."""
    from diffembed.serve.app import ServeConfig, bind_socket, create_app, make_server

    if args.in_process:
        config = ServeConfig(
            model_name="bench",
            max_batch_tokens=args.max_batch_tokens,
            **({} if args.batch_wait_ms is None else {"batch_wait_ms": args.batch_wait_ms}),
            threads=args.threads,
        )
        server = make_server(create_app(emb, config), log_level="warning")
        sock = bind_socket("127.0.0.1", port)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        return None, server, thread
    cmd = [sys.executable, "-m", "diffembed", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--precision", args.precision, "--model-name", "bench"]
    cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
    if args.batch_wait_ms is not None:
        cmd += ["--batch-wait-ms", str(args.batch_wait_ms)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k != "DIFFEMBED_API_KEY"}
    return subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL), None, None


def measure_load(
    emb: Any, model: Path, requests: list[list[str]], others: set[int], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """Run the clients against a fresh server: ``(load, metrics before, metrics after)``."""
    port = free_port()
    proc, server, thread = start_server(emb, model, port, args)
    if others:
        os.sched_setaffinity(0, others)  # client threads start after this and inherit it
    try:
        wait_healthy(port, proc)
        run_load(port, requests[: min(len(requests), args.clients)], args.clients)  # warm-up
        before = server_metrics(port)
        load = run_load(port, requests, args.clients)
        after = server_metrics(port)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if server is not None:
            server.should_exit = True
            thread.join(60)
    return load, before, after


def main() -> None:
    args = parse_args()
    from diffembed.model.embedder import Embedder
    from diffembed.serve.app import ServeConfig

    cpus, others = pin_server_cpus(args)
    texts, source = load_texts(args.requests * args.inputs, args.words, args.seed)
    requests = [texts[i * args.inputs : (i + 1) * args.inputs] for i in range(args.requests)]
    tmp = tempfile.TemporaryDirectory(prefix="serve_load.")
    model = args.model
    if model is None and args.write_model is not None and args.write_model.is_dir():
        model = args.write_model
    if model is None:
        where = args.write_model or Path(tmp.name) / "model"
        model = write_random_model(where, args.layers, args.hidden, texts)
    emb = Embedder.load(model, precision=args.precision)

    # Direct: one encode call over all inputs, best of --repeats (after a warm-up on a slice).
    emb.encode(texts[: 4 * args.inputs], max_tokens_per_batch=args.max_batch_tokens)
    direct_s = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        direct, stats = emb.encode_with_stats(texts, max_tokens_per_batch=args.max_batch_tokens)
        direct_s = min(direct_s, time.perf_counter() - start)
    direct_tokens = stats.tokens
    load, before, after = measure_load(emb, model, requests, others, args)

    def delta(total: str, count_suffix: str) -> float:
        count = total.replace("_sum", count_suffix)
        n = after.get(count, 0) - before.get(count, 0)
        return (after.get(total, 0) - before.get(total, 0)) / max(n, 1)

    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    # Direct again, in batches of the server's mean size: how much of the gap is batch size.
    per_pass = max(1, round(delta("diffembed_batch_size_sum", "_count")))
    same_batch_tps = direct_tokens / best_encode(emb, texts, per_pass, args)
    max_diff = max(
        float(np.abs(v - direct[i * args.inputs : (i + 1) * args.inputs]).max())
        for i, v in load.pop("vectors").items()
    )
    direct_tps = direct_tokens / direct_s

    result = {
        "clients": args.clients,
        "requests": args.requests,
        "inputs_per_request": args.inputs,
        "texts": source,
        "model": str(args.model) if args.model else f"random {args.layers}x{args.hidden}",
        "precision": args.precision,
        "server": "in-process" if args.in_process else "subprocess",
        "batch_wait_ms": (
            ServeConfig().batch_wait_ms if args.batch_wait_ms is None else args.batch_wait_ms
        ),
        "requests_per_s": round(load["requests_per_s"], 1),
        "tokens_per_s": round(load["tokens_per_s"]),
        "p50_ms": round(load["p50_ms"], 1),
        "p99_ms": round(load["p99_ms"], 1),
        "direct_tokens_per_s": round(direct_tps),
        "ratio_server_to_direct": round(load["tokens_per_s"] / direct_tps, 3),
        "direct_tokens_per_s_at_server_batch": round(same_batch_tps),
        "ratio_to_direct_at_server_batch": round(load["tokens_per_s"] / same_batch_tps, 3),
        "threads": args.threads,
        "server_cpus": args.server_cpus,
        "tokens": load["tokens"],
        "texts_per_forward_pass": round(delta("diffembed_batch_size_sum", "_count"), 1),
        "requests_per_worker_step": round(delta("diffembed_step_requests_sum", "_count"), 1),
        "mean_batch_wait_ms": round(1000 * delta("diffembed_batch_wait_seconds_sum", "_count"), 2),
        "max_abs_diff_vs_direct": max_diff,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    report(result, per_pass, args)
    tmp.cleanup()


def report(result: dict[str, Any], per_pass: int, args: argparse.Namespace) -> None:
    """Print the figures (JSON, then one line) and write them to ``--json`` when given."""
    print(json.dumps(result, indent=2))
    print(
        f"{args.clients} clients, {args.requests} requests x {args.inputs} texts: "
        f"{result['requests_per_s']} req/s, {result['tokens_per_s']} tokens/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; direct encode "
        f"{result['direct_tokens_per_s']} tokens/s; ratio {result['ratio_server_to_direct']} "
        f"({result['ratio_to_direct_at_server_batch']} against direct encode in batches of the "
        f"server's mean {per_pass} texts)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
