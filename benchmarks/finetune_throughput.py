"""Fine-tuning throughput: training tokens/s of `diffembed finetune` variants side by side.

Builds a random Llama-layout model (``--layers`` x ``--hidden``, BPE vocabulary trained here) and
synthetic pairs whose documents have about ``--doc-tokens`` tokens, then runs a few steps of each
variant (bf16 / fp32 autocast, LoRA / full, GradCache) and prints the mean tokens/s over the
steps after the first (tokens = non-pad query + document tokens of the global batch).

    .venv/bin/python benchmarks/finetune_throughput.py --layers 2 --hidden 128 --steps 6
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from diffembed.formats.pairs import Pair
from diffembed.model.tokenizer import train_bpe_tokenizer
from diffembed.train.finetune import Trainer
from diffembed.train.finetune_config import FinetuneConfig

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
    "warm",
    "decay",
    "seed",
    "data",
]


def synthetic_pairs(n: int, doc_words: int, seed: int = 0) -> list[Pair]:
    """``n`` pairs of two tasks; documents of ``doc_words`` words, queries of 12."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(k))

    return [
        Pair(text(12), text(doc_words), (text(doc_words),), f"Task {i % 2} instruction", str(i % 2))
        for i in range(n)
    ]


def write_model(directory: Path, layers: int, hidden: int, vocab: int) -> Path:
    """A random Llama-layout checkpoint with a BPE tokenizer trained on synthetic text."""
    rng = random.Random(1)
    corpus = [" ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(50))] * 200
    tok = train_bpe_tokenizer(corpus, vocab_size=vocab)
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
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def measure(base: dict, pairs: list[Pair], name: str, **changes: object) -> dict:
    cfg = FinetuneConfig(**{**base, **changes})
    trainer = Trainer(cfg, pairs=pairs)
    start = time.perf_counter()
    rows = [trainer.train_step() for _ in range(cfg.steps)]
    wall = time.perf_counter() - start
    steady = rows[1:] or rows
    tokens = sum(r["tokens"] for r in steady)
    seconds = sum(r["seconds"] for r in steady)
    return {
        "variant": name,
        "tokens_per_s": round(tokens / seconds),
        "tokens_per_step": int(np.mean([r["tokens"] for r in rows])),
        "s_per_step": round(seconds / len(steady), 3),
        "wall_s": round(wall, 1),
        "final_loss": round(rows[-1]["loss"], 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--doc-tokens", type=int, default=200, help="approximate document length")
    p.add_argument("--batch", type=int, default=16, help="global batch size (pairs)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp) / "model", args.layers, args.hidden, args.vocab)
        pairs = synthetic_pairs(4 * args.batch, doc_words=max(1, args.doc_tokens // 3))
        base = dict(
            model=model,
            pairs=Path(tmp) / "unused.jsonl",
            out=Path(tmp) / "out",
            attention="bidirectional",
            steps=args.steps,
            warmup_steps=1,
            global_batch_size=args.batch,
            max_query_length=64,
            max_doc_length=args.doc_tokens + 64,
            show_progress=False,
        )
        variants = [
            ("lora16 bf16", {}),
            ("lora16 fp32", {"precision": "fp32"}),
            ("full bf16", {"lora_r": 0}),
            ("lora16 bf16 gradcache 4", {"mini_batch": 4}),
            ("lora16 bf16 grad-ckpt", {"gradient_checkpointing": True}),
        ]
        results = [measure(base, pairs, name, **kw) for name, kw in variants]
    header = f"model {args.layers}x{args.hidden}, batch {args.batch}, torch {torch.__version__}"
    print(header)
    for r in results:
        print(
            f"  {r['variant']:<26} {r['tokens_per_s']:>8} tok/s  {r['s_per_step']:>7} s/step  "
            f"{r['tokens_per_step']} tok/step  loss {r['final_loss']}"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"setup": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
