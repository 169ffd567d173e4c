"""Encoding throughput: diffembed's Embedder vs sentence-transformers, side by side.

The same model directory and inputs are encoded in one process, repeats interleaved, median
reported, by ``diffembed.model.embedder.Embedder`` in ``--dtype``, eager and with ``--compile``
(``Embedder.compile``; its one-off compile is printed, not timed), and by
``sentence_transformers.SentenceTransformer`` in fp32 and in bf16 (its default ``encode``, each
with the batch size that was fastest for it on a sample); ratios are against the faster
sentence-transformers setting. Input sets:
(a) 5,000 short texts (10-60 tokens), (b) 2,000 mixed-length texts (20-2,000 tokens,
log-uniform), (c) 100 documents of 4k-8k tokens. Prints tokens/s, the ratio, achieved GFLOP/s
and MFU against the measured matmul peak in the run's dtype, and the embeddings' cosine to an
fp32 per-text reference (a sample of texts) for every system.

    .venv/bin/python benchmarks/encode_throughput.py --model small
    .venv/bin/python benchmarks/encode_throughput.py --model base --sets c --scale 0.1 --repeats 5

``--model`` is a model directory or a preset (``small`` 4x256, ``base`` 12x768, ``qwen0.5b``),
written once under ``benchmarks/.cache`` with random weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_sets, device_name, ensure_model, forward_flops, text_pools  # noqa: E402

from diffembed.model.embedder import Embedder  # noqa: E402
from diffembed.train.pretrain_model import measure_matmul_peak  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
NAMES = {
    "a": "short 10-60 tok",
    "b": "mixed 20-2000 tok",
    "c": "long 4k-8k tok",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, np.ndarray]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def tune_st_batch(st, texts: list[str], sizes: list[int], device: torch.device) -> int:
    """The batch size at which sentence-transformers encodes a sample of ``texts`` fastest."""
    rng = np.random.default_rng(1)
    sample = [texts[i] for i in rng.choice(len(texts), min(len(texts), 256), replace=False)]
    best, best_t = sizes[0], float("inf")
    for bs in sizes:
        st.encode(sample[: 2 * bs], batch_size=bs)  # warm-up at this shape
        t, _ = timed(lambda bs=bs: st.encode(sample, batch_size=bs), device)
        if t < best_t:
            best, best_t = bs, t
    return best


def reference(model_dir: Path, texts: list[str], idx: list[int], device: str) -> np.ndarray:
    """fp32 embeddings of ``texts[idx]``, each text encoded alone."""
    ref = Embedder.load(model_dir, dtype=torch.float32, device=device, precision="fp32")
    return np.stack([ref.encode([texts[i]])[0] for i in idx])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="small", help="model directory or preset")
    p.add_argument("--sets", default="a,b,c", help="comma-separated input sets (a, b, c)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the text counts")
    p.add_argument("--st-batch-sizes", default="8,16,32,64,128")
    p.add_argument("--max-tokens", type=int, default=None, help="Embedder token budget")
    p.add_argument("--check", type=int, default=48, help="texts checked against fp32 (per set)")
    p.add_argument("--no-packing", action="store_true", help="Embedder's padded path")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model_dir = ensure_model(args.model)
    ours = load_ours(model_dir, args, compile=False)
    t0 = time.perf_counter()
    compiled = load_ours(model_dir, args, compile=True)
    compile_s = time.perf_counter() - t0
    # sentence-transformers in both precisions; ratios are against the faster of the two.
    sts = {
        name: SentenceTransformer(
            str(model_dir), device=str(device), local_files_only=True, model_kwargs={"dtype": d}
        )
        for name, d in DTYPES.items()
    }
    config = ours.backbone.config
    pools = text_pools()
    sets = build_sets(ours.tokenizer, pools, args.sets.split(","), args.scale)
    peak = measure_matmul_peak(device, dtype)
    n_params = sum(p.numel() for p in ours.backbone.parameters())
    print(f"# encode_throughput: {' '.join(sys.argv[1:])}")
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(
        f"model: {model_dir} ({config.num_hidden_layers} layers x {config.hidden_size}, "
        f"{n_params / 1e6:.1f}M parameters), dtype {args.dtype}; texts from {pools.origin}"
    )
    print(f"measured {args.dtype} matmul peak: {peak / 1e9:.0f} GFLOP/s")
    print(f"diffembed --compile: compiled and warmed up in {compile_s:.1f} s (not timed below)")
    sizes = [int(x) for x in args.st_batch_sizes.split(",")]
    rows = [
        measure_set(name, texts, ours, compiled, sts, sizes, peak, model_dir, args)
        for name, texts in sets.items()
    ]
    print()
    print(
        "| set | texts | tokens | system | tok/s | vs best ST | GFLOP/s | MFU | min cos vs fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for system, x in r["systems"].items():
            print(
                f"| {r['set']} {NAMES[r['set']]} | {r['texts']} | {r['tokens']} | {system} | "
                f"{x['tok_s']:.0f} | {x['ratio']:.2f} | {x['gflops']:.0f} | "
                f"{100 * x['mfu']:.1f}% | {x['cos']:.5f} (n={r['checked']}) |"
            )


def load_ours(model_dir: Path, args: argparse.Namespace, compile: bool) -> Embedder:
    """diffembed's Embedder as the flags ask (each system its own copy of the weights)."""
    emb = Embedder.load(
        model_dir, dtype=DTYPES[args.dtype], device=args.device, precision=args.dtype
    )
    if args.max_tokens:
        emb.max_tokens_per_batch = args.max_tokens
    emb.packing = not args.no_packing
    return emb.compile() if compile else emb


def measure_set(name, texts, ours, compiled, sts, sizes, peak, model_dir, args) -> dict:
    """One input set: every system ``args.repeats`` times, interleaved; medians, FLOP rates,
    the ratio to the fastest sentence-transformers setting and each system's worst cosine to
    the fp32 reference."""
    device = torch.device(args.device)
    lengths = [len(x) for x in ours.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    lengths = [min(n, ours.max_length) for n in lengths]
    tokens, flops = sum(lengths), forward_flops(ours.backbone.config, lengths)
    runs = {"diffembed": ours.encode, "diffembed --compile": compiled.encode}
    for dtype_name, st in sts.items():
        bs = tune_st_batch(st, texts, sizes, device)
        runs[f"ST {dtype_name} (batch {bs})"] = lambda x, st=st, bs=bs: st.encode(x, batch_size=bs)
    for fn in runs.values():  # warm-up (a twentieth of the set)
        fn(texts[: max(8, len(texts) // 20)])
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for system, fn in runs.items():
            t, out = timed(lambda f=fn: f(texts), device)
            times[system].append(t)
            outs[system] = np.asarray(out, dtype=np.float32)
    rng = np.random.default_rng(2)
    idx = sorted(rng.choice(len(texts), min(args.check, len(texts)), replace=False).tolist())
    ref = reference(model_dir, texts, idx, args.device)
    st_median = min(statistics.median(ts) for k, ts in times.items() if k.startswith("ST "))
    systems = {}
    for system, ts in times.items():
        m = statistics.median(ts)
        systems[system] = dict(
            tok_s=tokens / m,
            ratio=st_median / m,
            gflops=flops / m / 1e9,
            mfu=flops / m / peak,
            cos=float((ref * outs[system][idx]).sum(1).min()),
        )
    print(
        f"[{name}] {len(texts)} texts, {tokens} tokens: "
        + "; ".join(
            f"{k} {v['tok_s']:.0f} tok/s (x{v['ratio']:.2f}, times "
            f"{[round(t, 2) for t in times[k]]})"
            for k, v in systems.items()
        ),
        flush=True,
    )
    return dict(set=name, texts=len(texts), tokens=tokens, systems=systems, checked=len(idx))


if __name__ == "__main__":
    main()
