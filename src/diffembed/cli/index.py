"""``diffembed index build|add|info`` and ``diffembed search``: the command line of
``diffembed.index``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from diffembed.cli.options import (
    add_compile,
    add_device,
    add_fusion,
    add_max_length,
    add_no_progress,
    add_precision,
    add_strict,
    at_least,
    fusion_choice,
)
from diffembed.errors import ConfigError
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR
from diffembed.index.build import IndexSettings, add_documents, build_index
from diffembed.index.documents import read_documents
from diffembed.index.search import Searcher
from diffembed.index.store import FAISS_TYPES, VectorIndex, load_embedder_for
from diffembed.io import check_writable
from diffembed.model.chunking import CHUNKINGS, Chunking

logger = logging.getLogger(__name__)

DOCS_HELP = "FILE.jsonl or a folder of text files"


def add_index_parser(sub: argparse._SubParsersAction) -> None:
    """``diffembed index build|add|info``."""
    p = sub.add_parser(
        "index",
        help="build or extend a vector index (faiss + SQLite) over documents",
        description="A crash-safe vector index over documents: faiss vectors, SQLite documents, "
        "the model's hash and the embedding settings. Writes go to a new generation that "
        "replaces the old one atomically.",
    )
    verbs = p.add_subparsers(dest="index_verb", metavar="VERB", required=True)
    b = verbs.add_parser(
        "build",
        help="embed documents into a new index",
        description="Embed documents (JSONL with _id/id, text, optional title; or a folder of "
        "text files) and write an index. Long documents are embedded whole up to the model's "
        "max_length, or chunked with --chunk-tokens.",
    )
    b.add_argument("--model", required=True, type=Path, help="embedding model directory")
    b.add_argument("--docs", required=True, type=Path, help=DOCS_HELP)
    b.add_argument("--out", required=True, type=Path, help="index directory to create")
    b.add_argument("--chunk-tokens", type=at_least(1), help="split documents into N-token windows")
    b.add_argument(
        "--chunk-overlap", type=at_least(0), default=0, help="tokens shared by neighbours"
    )
    b.add_argument(
        "--chunking",
        choices=CHUNKINGS,
        default="plain",
        help="with --chunk-tokens: plain (each chunk embedded alone, default) or late (the "
        "whole document encoded once, each chunk's tokens mean-pooled in context; documents "
        "past max_length are encoded in overlapping windows)",
    )
    b.add_argument(
        "--no-bm25",
        dest="bm25",
        action="store_false",
        help="do not keep a BM25 index beside the vectors (search is then dense only)",
    )
    b.add_argument("--faiss", choices=FAISS_TYPES, default="flat", help="flat (exact) or hnsw")
    b.add_argument(
        "--hnsw-m", type=at_least(2), default=32, help="HNSW neighbours per node (default 32)"
    )
    b.add_argument(
        "--ef-search", type=at_least(1), default=128, help="HNSW search depth (default 128)"
    )
    _add_small_vector_options(b)
    add_max_length(b)
    add_precision(b)
    add_compile(b)
    _add_write_options(b)
    b.add_argument("--overwrite", action="store_true", help="replace an existing index")
    add_no_progress(b)
    b.set_defaults(func=run_index_build)
    a = verbs.add_parser(
        "add",
        help="append documents to an index",
        description="Embed documents with the index's own model and settings and append them. "
        "An id already in the index is an error unless --upsert.",
    )
    a.add_argument("index", type=Path, help="index directory")
    a.add_argument("--docs", required=True, type=Path, help=DOCS_HELP)
    a.add_argument("--model", type=Path, help="model directory (default: the recorded path)")
    a.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    _add_write_options(a)
    add_no_progress(a)
    a.set_defaults(func=run_index_add)
    i = verbs.add_parser("info", help="print an index's meta.json")
    i.add_argument("index", type=Path, help="index directory")
    i.set_defaults(func=run_index_info)


def _add_small_vector_options(p: argparse.ArgumentParser) -> None:
    """``--dimensions``, ``--quantize`` and ``--rescore-factor`` of ``index build``."""
    p.add_argument(
        "--dimensions",
        type=at_least(1),
        help="store the first N dimensions of each vector, renormalised (queries are cut alike); "
        "warns unless the model was trained for N (finetune --matryoshka-dims)",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default="none",
        help="none (float32, default), int8 (faiss scalar quantizer, 1 byte per dimension) or "
        "binary (1 bit per dimension in memory; the top candidates re-scored from int8 codes "
        "memory-mapped from disk); flat only",
    )
    p.add_argument(
        "--rescore-factor",
        type=at_least(1),
        default=RESCORE_FACTOR,
        help=f"binary: candidates re-scored per result wanted (default {RESCORE_FACTOR})",
    )


def _add_write_options(p: argparse.ArgumentParser) -> None:
    """``--batch-tokens``, ``--device`` and ``--strict``, shared by ``index build`` and ``add``."""
    p.add_argument(
        "--batch-tokens", type=at_least(1), help="token budget per batch (rows x longest)"
    )
    add_device(p)
    add_strict(p, "refuse documents with empty text and title", "leave them out, counted")


def run_index_build(args: argparse.Namespace) -> int:
    from diffembed.model import sharded
    from diffembed.model.embedder import Embedder
    from diffembed.model.readout import require_single_vector

    check_writable(args.out, into=True)  # generations are written inside --out
    settings = IndexSettings(
        Chunking(args.chunk_tokens, args.chunk_overlap, args.chunking),
        faiss_type=args.faiss,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        bm25=args.bm25,
        dimensions=args.dimensions,
        quantize=args.quantize,
        rescore_factor=args.rescore_factor,
    )
    docs = read_documents(args.docs, strict=args.strict)
    overrides: dict[str, Any] = {"precision": args.precision}
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    # Under torchrun: each rank encodes its shards, rank 0 merges (diffembed.model.sharded).
    ctx = sharded.join(args.device) if sharded.launched_ranks() > 1 else None
    device = ctx.device if ctx is not None else args.device
    embedder = Embedder.load(
        args.model, device=device, strict_length=args.strict, compile=args.compile, **overrides
    )
    require_single_vector(embedder, "index build")
    start = time.perf_counter()
    built = build_index(
        docs,
        args.out,
        args.model,
        settings,
        embedder=embedder,
        batch_tokens=args.batch_tokens,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
        ctx=ctx,
    )
    if ctx is not None:
        ctx.close()
    if built is None:
        return 0  # not rank 0: its shards are written, rank 0 wrote the index
    with built as index:
        logger.info(
            "built %s: %d documents, %d %s vectors (%s) in %.1f s",
            args.out,
            index.n_documents,
            index.ntotal,
            index.describe_vectors(),
            index.describe_mode(),
            time.perf_counter() - start,
        )
    return 0


def run_index_add(args: argparse.Namespace) -> int:
    check_writable(args.index, "choose an index you may write to", into=True)
    docs = read_documents(args.docs, strict=args.strict)
    with VectorIndex.open(args.index) as index:
        meta = index.meta
    embedder = load_embedder_for(meta, args.model, args.device)
    with add_documents(
        args.index,
        docs,
        model_dir=args.model,
        embedder=embedder,
        upsert=args.upsert,
        batch_tokens=args.batch_tokens,
        show_progress=not args.no_progress,
    ) as index:
        logger.info(
            "%s: now %d documents, %d vectors (generation %d)",
            args.index,
            index.n_documents,
            index.ntotal,
            index.meta["generation"],
        )
    return 0


def run_index_info(args: argparse.Namespace) -> int:
    with VectorIndex.open(args.index) as index:
        print(json.dumps(index.meta, indent=2, ensure_ascii=False))
    return 0


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    """``diffembed search INDEX QUERY``."""
    p = sub.add_parser(
        "search",
        help="search an index with a text query",
        description="Embed the query with the index's model (its query prompt unless --prompt "
        "or --prompt-name) and print the best documents with scores and snippets. --json "
        "prints an object: index, query, chunking (how documents were embedded: whole or "
        "chunked), search (mode, fusion, alpha), note (why BM25 matched nothing, else null), "
        "documents, vectors, vectors_stored (float32, int8 or binary; dimensions kept), hits.",
    )
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("query", help="query text")
    p.add_argument("-k", type=at_least(1), default=10, help="documents to return (default 10)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="instruction for the query")
    group.add_argument("--prompt-name", help="a prompt saved with the model")
    p.add_argument("--model", type=Path, help="model directory (default: the recorded path)")
    _add_mode_options(p)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_search)


def _add_mode_options(p: argparse.ArgumentParser) -> None:
    """``--mode dense|bm25|hybrid``, ``--fusion`` and ``--alpha`` (``diffembed.eval.fusion``)."""
    p.add_argument(
        "--mode",
        choices=("dense", "bm25", "hybrid"),
        help="dense (the model), bm25, or hybrid (both fused); default: hybrid when the index "
        "has BM25, else dense",
    )
    add_fusion(p)


def run_search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise ConfigError("the query is empty")
    from diffembed.eval.fusion import describe_fusion, describe_search, fusion_label
    from diffembed.index.search import bm25_note, resolve_mode

    alpha = fusion_choice(args, args.mode in (None, "hybrid"), "--mode hybrid")
    searcher = Searcher.open(args.index, args.model, args.device)
    index = searcher.index
    mode = resolve_mode(index, args.mode)
    if mode != "hybrid":  # also the default mode of an index without BM25
        alpha = fusion_choice(args, False, "--mode hybrid (an index with BM25)")
    hits = searcher.search(args.query, args.k, args.prompt, args.prompt_name, mode, alpha)
    note = bm25_note(index, args.query, mode)
    if args.json:
        out = {
            "index": str(args.index),
            "query": args.query,
            "chunking": index.mode,
            "search": describe_search(mode, alpha),
            "note": note,
            "documents": index.n_documents,
            "vectors": index.ntotal,
            "vectors_stored": index.describe_vectors(),
            "hits": [h.to_dict() for h in hits],
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(
            f"{args.index}: {index.n_documents} documents, {index.ntotal} "
            f"{index.describe_vectors()} vectors; "
            f"{index.describe_mode()}; search: {mode}"
            + (f" ({fusion_label(describe_fusion(alpha))})" if mode == "hybrid" else "")
        )
        if note is not None:
            print(f"note: {note}")
        chunked = index.mode["mode"] == "chunked"
        for h in hits:
            where = f" [chunk {h.chunk}]" if chunked else (" [truncated]" if h.truncated else "")
            print(f"{h.rank:3d}  {h.score:.4f}  {h.id}{where}  {h.snippet}")
    sys.stdout.flush()
    index.close()
    return 0
