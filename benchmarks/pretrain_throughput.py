"""Pretraining throughput: tokens/s and MFU of each objective on a preset's model, side by side.

    .venv/bin/python benchmarks/pretrain_throughput.py --preset cpu [--compile] [--steps 8]
    .venv/bin/python benchmarks/pretrain_throughput.py --preset cpu --modes --objectives ar \
        --config results/base/config.json --tokenizer TOK --repeats 3

Runs forward + backward + AdamW on random token blocks (the data pipeline is not timed), with the
same model for every objective, and prints one row per objective plus ratios to the first row.
MFU is measured against the bf16 matmul peak measured at start on the same device.

``--modes`` compares the ways a step can run on the same config, interleaved ``--repeats``
times: ``eager``; ``body`` (the transformer compiled, the LM head and loss eager: the trainer
before issue 25); ``fused`` (the trainer now: the head and loss compiled together too). Rows
give each run and the median per mode, with ratios to ``body``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from diffembed.io import read_json
from diffembed.model.precision import autocast, bf16_wanted
from diffembed.model.tokenizer import load_tokenizer, train_bpe_tokenizer
from diffembed.train.pretrain_config import PRESETS, PretrainConfig
from diffembed.train.pretrain_data import sample_generators
from diffembed.train.pretrain_model import (
    ScoredLM,
    build_model,
    count_flops_per_token,
    measure_matmul_peak,
    micro_batch_loss,
)


def _tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    words = [f"w{i} x{i % 97} y{i % 13}" for i in range(4000)]
    return train_bpe_tokenizer(words, vocab_size=vocab, min_frequency=1)


class _BodyCompiled(ScoredLM):
    """The trainer before issue 25: logits materialised, then the objective's loss on them."""

    def forward(self, input_ids, select=None, attention_mask=None, targets=None, weights=None):
        logits = super().forward(input_ids, select, attention_mask)
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
        )
        return (ce * weights.reshape(-1)).sum()


def measure(
    config: PretrainConfig,
    tokenizer,
    device: torch.device,
    steps: int,
    peak: float,
    mode: str | None = None,
) -> dict:
    model = build_model(config, tokenizer).to(device)
    mode = mode or ("fused" if config.compile else "eager")
    scored = _BodyCompiled(model) if mode == "body" else ScoredLM(model)
    if mode == "body":
        model.model.compile()
    elif mode == "fused":
        scored.compile_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    body, head = count_flops_per_token(model, config.seq_len)
    vocab = len(tokenizer)
    times, flops = [], []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        heads = 0
        for m in range(0, config.global_batch, config.micro_batch):
            tokens = torch.randint(4, vocab, (config.micro_batch, config.seq_len), device=device)
            gens = sample_generators(0, step, range(m, m + config.micro_batch))
            with autocast(device, bf16_wanted(config.precision, device)):
                loss, h = micro_batch_loss(
                    scored, tokens, gens, config, tokenizer.mask_token_id, vocab
                )
                loss.backward()
            heads += h
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - t0)
            flops.append(body * config.tokens_per_step + head * heads)
    seconds = sum(times)
    return {
        "objective": config.objective,
        "mode": mode,
        "seq_len": config.seq_len,
        "tokens_per_s": round(config.tokens_per_step * len(times) / seconds),
        "mfu": round(sum(flops) / seconds / peak, 3),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--config", type=Path, help="JSON overrides of the preset (a run's config)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: a toy BPE)")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per objective")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    parser.add_argument("--objectives", default="ar,diffusion,mntp")
    parser.add_argument("--modes", action="store_true", help="compare eager, body and fused")
    parser.add_argument("--repeats", type=int, default=1, help="--modes: interleaved rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    base = PretrainConfig(**PRESETS[args.preset])
    if args.config is not None:
        base = dataclasses.replace(base, **read_json(args.config))
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        tokenizer = _tokenizer(8192 if args.preset != "smoke" else 1000)
    peak = measure_matmul_peak(device)
    print(
        f"device {device}, bf16 matmul peak {peak / 1e9:.0f} GFLOP/s, threads {torch.get_num_threads()}"
    )
    rows = []
    if args.modes:
        for _ in range(args.repeats):
            for objective in args.objectives.split(","):
                for mode in ("eager", "body", "fused"):
                    config = dataclasses.replace(base, objective=objective)
                    rows.append(measure(config, tokenizer, device, args.steps, peak, mode))
                    print(json.dumps(rows[-1]), flush=True)
        for objective in args.objectives.split(","):
            med = {
                mode: statistics.median(
                    r["tokens_per_s"]
                    for r in rows
                    if (r["objective"], r["mode"]) == (objective, mode)
                )
                for mode in ("eager", "body", "fused")
            }
            for mode, v in med.items():
                mfu = statistics.median(
                    r["mfu"] for r in rows if (r["objective"], r["mode"]) == (objective, mode)
                )
                summary = {"objective": objective, "mode": mode, "median_tokens_per_s": v}
                summary |= {"median_mfu": mfu, "vs_body": round(v / med["body"], 3)}
                print(json.dumps(summary))
        return
    for objective in args.objectives.split(","):
        config = dataclasses.replace(base, objective=objective, compile=args.compile)
        rows.append(measure(config, tokenizer, device, args.steps, peak))
    first = rows[0]["tokens_per_s"]
    for row in rows:
        row["speed_vs_ar"] = round(row["tokens_per_s"] / first, 3)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
