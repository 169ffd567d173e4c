"""Long documents: peak memory and time to encode one document of 1k ... 32k tokens.

Encodes a single document per length with ``Embedder.encode`` and reports the peak memory above
the resident baseline (CPU: the process's high-water mark, reset before each length through
``/proc/self/clear_refs``; CUDA: ``torch.cuda.max_memory_allocated``), the time, and the growth
exponent fitted to memory ~ tokens^k (k close to 1: linear, no T x T attention matrix; 2:
quadratic).

On CPU each length runs in a fresh process (``--one``: load, warm up on 256 tokens, then the
length), so that memory the allocator kept from an earlier length cannot hide part of a later
one's peak; ``--same-process`` measures them all in this process instead.

    .venv/bin/python benchmarks/longdoc_memory.py --model base
    .venv/bin/python benchmarks/longdoc_memory.py --model small --lengths 1024,2048,4096
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, document_of, ensure_model, forward_flops, text_pools  # noqa: E402

from diffembed.model.embedder import Embedder  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak(device: torch.device) -> int:
    """Reset the peak counter; return the current usage in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    return _status_kib("VmRSS") * 1024


def peak(device: torch.device) -> int:
    """Peak usage in bytes since ``reset_peak``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device)
    return _status_kib("VmHWM") * 1024


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def measure(emb: Embedder, doc: str, device: torch.device) -> tuple[int, int, float]:
    """Encode ``doc`` once: ``(tokens, peak bytes above the baseline, seconds)``."""
    base = reset_peak(device)
    t0 = time.perf_counter()
    stats = emb.encode_with_stats([doc]).stats
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return stats.tokens, peak(device) - base, seconds


def in_fresh_process(n: int, args: argparse.Namespace) -> tuple[int, int, float]:
    """``measure`` at ``n`` tokens in a new Python process (``--one n``)."""
    cmd = [sys.executable, __file__, "--one", str(n), "--model", args.model]
    cmd += ["--dtype", args.dtype, "--device", args.device, "--lengths", args.lengths]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return got["tokens"], got["peak_bytes"], got["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="base", help="model directory or preset")
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--same-process", action="store_true", help="all lengths in this process")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one length, JSON out
    args = p.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    lengths = [int(x) for x in args.lengths.split(",")]
    model_dir = ensure_model(args.model)
    emb = Embedder.load(
        model_dir,
        dtype=DTYPES[args.dtype],
        device=device,
        precision=args.dtype,
        max_length=max(lengths),
    )
    config = emb.backbone.config
    pools = text_pools()
    if args.one:
        emb.encode([document_of(emb.tokenizer, pools, 256)])  # warm-up
        tokens, extra, seconds = measure(emb, document_of(emb.tokenizer, pools, args.one), device)
        print(json.dumps({"tokens": tokens, "peak_bytes": extra, "seconds": seconds}))
        return
    fresh = device.type == "cpu" and not args.same_process
    docs = {n: document_of(emb.tokenizer, pools, n) for n in lengths}
    print(f"# longdoc_memory: {' '.join(sys.argv[1:])}")
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(
        f"model: {model_dir} ({config.num_hidden_layers} layers x {config.hidden_size}), "
        f"dtype {args.dtype}, attention {config._attn_implementation} + diffembed packing; "
        f"texts from {pools.origin}; {'a fresh process per length' if fresh else 'one process'}"
    )
    if not fresh:
        emb.encode([docs[lengths[0]]])  # warm-up
    rows = []
    for n in lengths:
        tokens, extra, seconds = (
            in_fresh_process(n, args) if fresh else measure(emb, docs[n], device)
        )
        gflops = forward_flops(config, [tokens]) / seconds / 1e9
        rows.append((tokens, extra, seconds, gflops))
        print(
            f"{tokens} tokens: peak +{extra / 2**20:.0f} MiB, {seconds:.2f} s, "
            f"{tokens / seconds:.0f} tok/s, {gflops:.0f} GFLOP/s",
            flush=True,
        )
    print()
    print("| tokens | peak memory above baseline (MiB) | MiB per 1k tokens | time (s) | GFLOP/s |")
    print("|---|---|---|---|---|")
    for tokens, extra, seconds, gflops in rows:
        print(
            f"| {tokens} | {extra / 2**20:.0f} | {extra / 2**20 / tokens * 1000:.1f} | "
            f"{seconds:.2f} | {gflops:.0f} |"
        )
    if len(rows) > 1:
        k_mem = fit_exponent([r[0] for r in rows], [r[1] for r in rows])
        k_time = fit_exponent([r[0] for r in rows], [r[2] for r in rows])
        print(f"\nfitted growth: memory ~ tokens^{k_mem:.2f}, time ~ tokens^{k_time:.2f}")


if __name__ == "__main__":
    main()
