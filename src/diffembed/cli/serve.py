"""``diffembed serve``: the command line of ``diffembed.serve`` (fastapi and uvicorn load only
when the server starts)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path
from typing import Any

from diffembed.cli.options import (
    add_compile,
    add_device,
    add_max_length,
    add_precision,
    at_least,
    number_at_least,
    port_number,
)
from diffembed.errors import DiffembedError
from diffembed.serve.app import API_KEY_ENV, ServeConfig, bind_socket, create_app, make_server

logger = logging.getLogger(__name__)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """``diffembed serve --model DIR [--index DIR]`` and the server limits."""
    p = sub.add_parser(
        "serve",
        help="HTTP server: OpenAI-compatible embeddings and index search",
        description="Serve a model over HTTP: POST /v1/embeddings (OpenAI schema), POST "
        "/v1/search and a search page at GET / (with --index), GET /v1/models, /health, /metrics. "
        "Concurrent requests are merged into token-budget batches by one worker; a full queue "
        "answers 503.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument(
        "--index",
        type=Path,
        help="index directory built with this model: serves /v1/search and the search page at /",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port_number, default=8080, help="port, 0 = any free (default 8080)"
    )
    p.add_argument(
        "--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})"
    )
    p.add_argument("--model-name", help="model id for clients (default: the directory name)")
    add_precision(p, default=None)
    add_compile(p)
    add_max_length(p)
    add_device(p)
    d = ServeConfig()
    p.add_argument("--max-batch-tokens", type=at_least(1), default=d.max_batch_tokens)
    p.add_argument("--max-queue", type=at_least(1), default=d.max_queue_texts, help="texts queued")
    p.add_argument(
        "--max-inputs", type=at_least(1), default=d.max_inputs, help="inputs per request"
    )
    p.add_argument("--max-body-bytes", type=at_least(1), default=d.max_body_bytes)
    p.add_argument(
        "--batch-wait-ms",
        type=number_at_least(0),
        default=d.batch_wait_ms,
        help="the most the worker waits for clients it just answered to send again, before a "
        "step; never more than half its last step's time (0: never wait)",
    )
    p.add_argument(
        "--threads",
        type=at_least(1),
        help="torch threads of the worker (default: the CPUs this process may use)",
    )
    p.set_defaults(func=run_serve)


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a busy port or an unknown host is a
    one-line error, and nothing claims to serve before the address is ours."""
    try:
        return bind_socket(host, port)
    except socket.gaierror as e:
        raise DiffembedError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; check --host"
        ) from None
    except OSError as e:
        raise DiffembedError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; stop the program using it "
            "or choose another --port (or --host)"
        ) from None


def run_serve(args: argparse.Namespace) -> int:
    sock = _listen(args.host, args.port)
    try:
        return _serve(args, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, sock: socket.socket) -> int:
    from diffembed.index.store import VectorIndex, check_model
    from diffembed.model.embedder import Embedder
    from diffembed.model.model_dir import trained_dims
    from diffembed.model.readout import require_single_vector

    overrides: dict[str, Any] = {}
    if args.precision is not None:
        overrides["precision"] = args.precision
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    index = None
    if args.index is not None:
        index = VectorIndex.open(args.index)
        check_model(index.meta, args.model)
        for key in ("precision", "max_length"):
            overrides.setdefault(key, index.meta["embedding"][key])
    embedder = Embedder.load(
        args.model, device=args.device, strict_length=args.strict, compile=args.compile, **overrides
    )
    require_single_vector(embedder, "serve")
    config = ServeConfig(
        model_name=args.model_name or args.model.resolve().name,
        max_batch_tokens=args.max_batch_tokens,
        max_queue_texts=args.max_queue,
        max_inputs=min(args.max_inputs, args.max_queue),
        max_body_bytes=args.max_body_bytes,
        batch_wait_ms=args.batch_wait_ms,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        threads=args.threads,
    )
    app = create_app(embedder, config, index, trained_dims(args.model))
    port = sock.getsockname()[1]
    logger.info(
        "serving %s on http://%s:%d (index: %s, API key: %s, worker threads: %d, "
        "batch wait <= %g ms)",
        config.model_name,
        args.host,
        port,
        args.index or "none",
        "required" if config.api_key else "none",
        config.worker_threads(),
        config.batch_wait_ms,
    )
    make_server(app, args.host, port).run(sockets=[sock])
    return 0
