"""``diffembed eval``: evaluate a model directory, BM25 or MiniLM on task suites, or a model
directory on MTEB 2.x tasks (``--mteb``, ``--benchmark paper``).

The evaluations themselves are :mod:`diffembed.eval.evaluate` and :mod:`diffembed.eval.mteb_run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffembed.cli.options import (
    add_device,
    add_fusion,
    add_max_length,
    add_no_progress,
    add_precision,
    at_least,
    fusion_choice,
)
from diffembed.errors import ConfigError
from diffembed.eval.evaluate import EvalSettings, collect_task_dirs, evaluate_model
from diffembed.eval.quantize import QUANTIZE, RESCORE_FACTOR
from diffembed.formats.tasks import SUITES
from diffembed.io import check_output_file
from diffembed.model.chunking import CHUNKINGS, Chunking


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diffembed eval``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model, BM25 or MiniLM on task suites",
        description="Evaluate a model directory, bm25 or minilm on evaluation tasks (BEIR "
        "folders with task.json; see diffembed.formats.tasks). Writes OUT (all results with "
        "provenance), OUT.tasks/<suite>__<task>.json as each task finishes, and a Markdown table "
        "beside OUT.",
    )
    p.add_argument(
        "--model", required=True, help="model directory, or bm25, or minilm (./bm25 for a folder)"
    )
    p.add_argument(
        "--suite",
        default="all",
        choices=[*SUITES, "all"],
        help="suite under --tasks-root (default: all)",
    )
    p.add_argument("--tasks-root", type=Path, help="folder of suites: ROOT/<suite>/<task>/")
    p.add_argument(
        "--task-dir",
        type=Path,
        action="extend",
        nargs="+",
        default=[],
        help="task folder(s) to evaluate as well (any suite)",
    )
    mteb = p.add_argument_group("MTEB 2.x tasks (offline unless --online)")
    mteb.add_argument(
        "--mteb",
        nargs="+",
        metavar="NAME",
        default=[],
        help="MTEB task names to run instead of task folders (e.g. LEMBPasskeyRetrieval "
        "BrightBiologyRetrieval Core17InstructionRetrieval)",
    )
    mteb.add_argument(
        "--benchmark",
        choices=["paper"],
        help="the paper's task set: LongEmbed 6, BRIGHT 12, FollowIR 3, an MTEB retrieval "
        "subset; prints a table beside the paper's headline numbers",
    )
    mteb.add_argument(
        "--mteb-data",
        type=Path,
        metavar="DIR",
        help="local copies: DIR/<TaskName>/ (or DIR/<org>/<dataset>/) holding the dataset "
        "repository's files or save_to_disk folders, one per config",
    )
    mteb.add_argument(
        "--instructions",
        type=Path,
        metavar="JSON",
        help='query instructions overriding the paper\'s: {"TaskName": "instruction" or null}',
    )
    mteb.add_argument(
        "--online",
        action="store_true",
        help="let datasets download missing MTEB data (default: hub cache or --mteb-data only)",
    )
    p.add_argument("--out", required=True, type=Path, help="result JSON file")
    add_max_length(p)
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=16384,
        help="token budget per encoding batch, rows x longest row (default: 16384)",
    )
    p.add_argument("--top-k", type=int, default=100, help="run depth per query (default: 100)")
    add_precision(p)
    p.add_argument("--faiss", action="store_true", help="faiss IndexFlatIP top-k (same results)")
    _add_retriever_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed recorded with results (default: 0)")
    add_device(p, default=None)
    add_no_progress(p)
    p.set_defaults(func=run_eval)


def _add_retriever_options(p: argparse.ArgumentParser) -> None:
    """``--retriever``/``--fusion``/``--alpha`` (what index search serves) and the chunking of
    documents."""
    g = p.add_argument_group("retriever (the same code as `diffembed search --mode`)")
    g.add_argument(
        "--retriever",
        choices=("dense", "bm25", "hybrid", "sparse", "dense+sparse"),
        default="dense",
        help="dense: the model (default); bm25; hybrid: the model and BM25 fused; sparse: a "
        "mask-readout model's LM-head terms; dense+sparse: its dense and sparse sides fused",
    )
    add_fusion(g)
    g.add_argument(
        "--chunk-tokens",
        type=at_least(1),
        help="split documents into N-token chunks as `index build --chunk-tokens` does; a "
        "document scores as its best chunk (model directories only)",
    )
    g.add_argument(
        "--chunk-overlap", type=at_least(0), default=0, help="tokens shared by neighbouring chunks"
    )
    g.add_argument(
        "--chunking",
        choices=CHUNKINGS,
        help="with --chunk-tokens: plain (each chunk alone, default) or late (pooled from the "
        "whole document in context)",
    )
    g.add_argument(
        "--dimensions",
        type=at_least(1),
        help="search the first N dimensions of every vector, renormalised, as `index build "
        "--dimensions` stores them (warns unless the model was trained for N)",
    )
    g.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default="none",
        help="search documents stored as `index build --quantize` stores them: none (float32, "
        "default), int8, or binary (candidates re-scored from int8)",
    )
    g.add_argument(
        "--rescore-factor",
        type=at_least(1),
        default=RESCORE_FACTOR,
        help=f"--quantize binary: candidates re-scored per result (default {RESCORE_FACTOR})",
    )


def run_eval(args: argparse.Namespace) -> int:
    """Run ``diffembed eval``; returns the exit status (0). ``--out`` is checked first: an
    evaluation runs for minutes to hours, and its results must have somewhere to go."""
    check_output_file(args.out)
    if args.strict and args.model not in ("bm25", "minilm"):
        from diffembed.model.model_dir import check_max_length

        check_max_length(args.model, args.max_length, strict=True)
    names = list(args.mteb) + (["paper"] if args.benchmark else [])
    if names:
        return _run_mteb(args, names)
    for flag in ("mteb_data", "instructions"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} applies to --mteb / --benchmark only")
    fused = args.retriever in ("hybrid", "dense+sparse")
    alpha = fusion_choice(args, fused, "--retriever hybrid or dense+sparse")
    chunking = None  # whole documents; compose_retriever refuses --chunking alone
    if args.chunk_tokens is not None or args.chunking is not None:
        chunking = Chunking(args.chunk_tokens, args.chunk_overlap, args.chunking or "plain")
    settings = EvalSettings(
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        precision=args.precision,
        device=args.device,
        top_k=args.top_k,
        use_faiss=args.faiss,
        seed=args.seed,
        retriever=args.retriever,
        alpha=alpha,
        chunking=chunking,
        dimensions=args.dimensions,
        quantize=args.quantize,
        rescore_factor=args.rescore_factor,
    )
    evaluate_model(
        args.model,
        collect_task_dirs(args.tasks_root, args.suite, args.task_dir),
        args.out,
        settings,
        show_progress=not args.no_progress,
    )
    return 0


def _run_mteb(args: argparse.Namespace, names: list[str]) -> int:
    from diffembed.eval.mteb_run import run_mteb
    from diffembed.eval.paper import read_instructions

    if args.tasks_root is not None or args.task_dir:
        raise ConfigError("--mteb / --benchmark run MTEB tasks; drop --tasks-root / --task-dir")
    if args.model in ("bm25", "minilm"):
        raise ConfigError("--mteb / --benchmark evaluate a model directory, not bm25 or minilm")
    given = (args.alpha, args.fusion, args.chunk_tokens, args.dimensions)
    if args.retriever != "dense" or args.quantize != "none" or any(v is not None for v in given):
        raise ConfigError(
            "--retriever, --fusion, --alpha, --chunk-tokens, --dimensions and --quantize apply "
            "to task folders, not --mteb / --benchmark"
        )
    run_mteb(
        args.model,
        names,
        args.out,
        data_dir=args.mteb_data,
        instructions=read_instructions(args.instructions) if args.instructions else None,
        online=args.online,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        precision=args.precision,
        device=args.device,
        seed=args.seed,
        show_progress=not args.no_progress,
    )
    return 0
