"""How many tokens does the cpu-preset LM need? AR and diffusion pretrained far past 4M tokens.

Pretrains the cpu preset's 4 x 128 model (same shape, tokenizer, corpus, init and seed as the
study) with the AR and the masked-diffusion objective for the same, larger token budget, with a
bigger batch so that it fits minutes on one GPU. The held-out loss is logged every
``--eval-every`` steps, so each run's ``train_log.csv`` is its loss-vs-tokens curve (AR
cross-entropy; diffusion ELBO bound). A short probe run measures throughput first and the step
count is chosen to fit ``--seconds`` per objective, capped at ``--max-epochs`` of the corpus.

Writes ``OUT/lm-{objective}.tar.gz`` (the model directory, no checkpoint) and
``OUT/budget.json`` (settings, probe, steps, final held-out losses, provenance).

    python scripts/pretrain_budget.py --corpus CORPUS --tokenizer TOK --out OUT --seconds 120
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from diffembed.io import read_json, write_json
from diffembed.provenance import provenance


def run_pretrain(
    args: argparse.Namespace, objective: str, out: Path, overrides: dict, timeout: float
) -> dict:
    """One ``diffembed pretrain`` run of the cpu preset with ``overrides``; its pretrain.json."""
    cfg = out.parent / f"{out.name}.config.json"
    cfg.write_text(json.dumps(overrides))
    cmd = [
        sys.executable,
        "-m",
        "diffembed",
        "pretrain",
        "--objective",
        objective,
        "--preset",
        "cpu",
        "--config",
        str(cfg),
        "--corpus",
        str(args.corpus),
        "--tokenizer",
        str(args.tokenizer),
        "--out",
        str(out),
        "--no-progress",
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, timeout=timeout)
    info = read_json(out / "pretrain.json")
    info["wall_seconds"] = round(time.time() - t0, 1)
    return info


def heldout_curve(model: Path) -> list[dict]:
    """The logged held-out evaluations of a run: ``[{step, tokens, eval_*...}]`` (AR logs
    cross-entropy and perplexity, diffusion the ELBO bound and masked CE at fixed ratios)."""
    with open(model / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            k: float(v)
            for k, v in r.items()
            if v and (k in ("step", "tokens") or k.startswith("eval_"))
        }
        for r in rows
        if any(v for k, v in r.items() if k.startswith("eval_"))
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pretrain-budget"))
    ap.add_argument("--objectives", default="ar,diffusion")
    ap.add_argument("--seconds", type=float, default=120.0, help="training time per objective")
    ap.add_argument("--max-epochs", type=float, default=4.0)
    ap.add_argument("--corpus-tokens", type=float, default=35e6, help="for the epoch cap")
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--probe-steps", type=int, default=150)
    ap.add_argument("--no-compile", action="store_true", help="eager (for a CPU try-out)")
    args = ap.parse_args()
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    base = dict(
        global_batch=args.global_batch,
        micro_batch=args.global_batch,
        lr=args.lr,
        warmup_steps=200,
        eval_tokens=64 * 256,
        log_every=50,
        compile=not args.no_compile,
    )
    probe = run_pretrain(
        args,
        "ar",
        args.work / "probe",
        dict(
            base, steps=args.probe_steps, eval_every=args.probe_steps, save_every=args.probe_steps
        ),
        timeout=300,
    )
    tok_s = probe["final_eval"]["tokens_per_s"]
    tokens_per_step = args.global_batch * 256
    steps = int(min(args.seconds * tok_s, args.max_epochs * args.corpus_tokens) // tokens_per_step)
    record: dict = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "probe_tokens_per_s": tok_s,
        "steps": steps,
        "tokens": steps * tokens_per_step,
        "runs": {},
    }
    for objective in args.objectives.split(","):
        out = args.work / f"lm-{objective}"
        overrides = dict(base, steps=steps, eval_every=max(1, steps // 20), save_every=steps)
        try:
            info = run_pretrain(args, objective, out, overrides, timeout=args.seconds * 3 + 120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            record["runs"][objective] = {"error": str(e)}
            continue
        record["runs"][objective] = {
            "wall_seconds": info["wall_seconds"],
            "final_eval": info["final_eval"],
            "data": info["data"],
            "heldout_curve": heldout_curve(out),
        }
        with tarfile.open(args.out / f"lm-{objective}.tar.gz", "w:gz") as tar:
            for f in sorted(out.iterdir()):
                if f.name != "checkpoint":
                    tar.add(f, arcname=f"lm-{objective}/{f.name}")
        write_json(args.out / "budget.json", dict(record, provenance=provenance(start)))
    write_json(args.out / "budget.json", dict(record, provenance=provenance(start)))
    print(json.dumps({k: v for k, v in record.items() if k != "settings"}, indent=1)[:6000])


if __name__ == "__main__":
    main()
