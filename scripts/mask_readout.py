"""Mask-token readout study (issue 30, item 5): mean pooling vs the mask readout (K = 1, K = 4
MaxSim, sparse, dense+sparse) on task suites, with encode time per text.

Each ``--model NAME=DIR`` (a model directory: zero-shot bases and their fine-tuned versions are
given as separate entries, e.g. ``diff-base=...`` and ``diff-ft-mask1=...@mask1,sparse,hybrid``
for a model fine-tuned through one readout) is evaluated in every ``--variants`` entry (or those
after ``@``) by the project's own eval code (``evaluate_model``): the variant is the
model directory re-saved with that pooling (``Embedder.load(dir, pooling=...).save``, same
weights) and the eval retriever (dense, sparse or dense+sparse). Encode time per text is
measured on the first ``--timing-texts`` documents of the tasks, after one warm-up batch, with
the variant's own encoding (dense vectors, or the sparse readout).

Writes ``OUT/mask_readout.json`` (every score and timing, with the eval records' paths) and
``OUT/mask_readout.md`` (a table: rows model x variant, columns the suites' mean main score x100
and ms per text).

    python scripts/mask_readout.py --tasks-root data/tasks --out results/mask-readout \\
        --model diff-base=models/diffembed-tiny --model ar-base=/path/to/ar-diff-base \\
        --model diff-ft=/path/to/ft --variants mean mask1 mask4 sparse hybrid
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from diffembed.eval.evaluate import EvalSettings, collect_task_dirs, evaluate_model
from diffembed.formats.tasks import load_task
from diffembed.model.embedder import Embedder
from diffembed.model.readout import encode_sparse

logger = logging.getLogger("mask_readout")

# variant -> (Embedder overrides, eval retriever)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "mean": ({"pooling": "mean"}, "dense"),
    "mask1": ({"pooling": "mask", "mask_tokens": 1}, "dense"),
    "mask4": ({"pooling": "mask", "mask_tokens": 4}, "dense"),
    "sparse": ({"pooling": "mask", "mask_tokens": 1}, "sparse"),
    "hybrid": ({"pooling": "mask", "mask_tokens": 1}, "dense+sparse"),
}


def variant_dir(model: Path, overrides: dict[str, Any], out: Path, precision: str) -> Path:
    """``model`` re-saved with the variant's pooling (same weights) under ``out``."""
    if not out.exists():
        Embedder.load(model, precision=precision, **overrides).save(out)
    return out


def time_per_text(model: Path, retriever: str, texts: list[str], precision: str) -> float:
    """Seconds per text to encode ``texts`` as the variant does (after a warm-up batch)."""
    embedder = Embedder.load(model, precision=precision)
    encode = (
        (lambda t: encode_sparse(embedder, t))
        if retriever == "sparse"
        else (lambda t: embedder.encode(t))
    )
    encode(texts[:8])
    start = time.perf_counter()
    encode(texts)
    if retriever == "dense+sparse":  # the eval encodes both sides
        encode_sparse(embedder, texts)
    return (time.perf_counter() - start) / len(texts)


def suite_means(summary: dict[str, Any]) -> dict[str, float]:
    """The mean main score of each suite in an ``evaluate_model`` summary."""
    by_suite: dict[str, list[float]] = {}
    for record in summary["tasks"]:
        by_suite.setdefault(record["suite"] or "-", []).append(float(record["main_score"]))
    return {suite: sum(v) / len(v) for suite, v in sorted(by_suite.items())}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results table: suites' mean main score x100 and ms per text."""
    suites = sorted({s for r in rows for s in r["suites"]})
    head = ["model", "variant", *suites, "ms/text"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{100 * r['suites'][s]:.1f}" if s in r["suites"] else "–" for s in suites]
        lines.append(
            f"| {r['model']} | {r['variant']} | "
            + " | ".join(cells)
            + f" | {r['ms_per_text']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the study; returns what ``OUT/mask_readout.json`` holds."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR[@VARIANT,...]",
        help="a model directory; @mean,mask1 limits it to those variants (default: --variants)",
    )
    p.add_argument("--tasks-root", type=Path, required=True)
    p.add_argument("--suite", default="all", help="suite under --tasks-root (default: all)")
    p.add_argument("--top-k", type=int, default=100, help="run depth per query (default: 100)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--timing-texts", type=int, default=256)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", default=None)
    p.add_argument("--max-length", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    models = dict(m.split("=", 1) for m in args.model)
    # NAME=DIR@v1,v2: only those variants for that model (a model fine-tuned for one readout)
    chosen = {
        n: d.split("@", 1)[1].split(",") if "@" in d else args.variants for n, d in models.items()
    }
    models = {n: d.split("@", 1)[0] for n, d in models.items()}
    unknown = sorted({v for vs in chosen.values() for v in vs} - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    task_dirs = collect_task_dirs(args.tasks_root, args.suite, [])
    texts = [d.full_text for t in task_dirs for d in load_task(t).corpus][: args.timing_texts]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, directory in models.items():
        for variant in chosen[name]:
            overrides, retriever = VARIANTS[variant]
            model = variant_dir(
                Path(directory), overrides, args.out / "models" / f"{name}-{variant}", "fp32"
            )
            settings = EvalSettings(
                max_length=args.max_length,
                precision=args.precision,
                device=args.device,
                retriever=retriever,
                top_k=args.top_k,
            )
            result = args.out / "eval" / f"{name}-{variant}.json"
            summary = evaluate_model(model, task_dirs, result, settings, show_progress=False)
            seconds = time_per_text(model, retriever, texts, args.precision)
            rows.append(
                {
                    "model": name,
                    "model_dir": str(directory),
                    "variant": variant,
                    "retriever": retriever,
                    "suites": suite_means(summary),
                    "ms_per_text": 1000 * seconds,
                    "timing_texts": len(texts),
                    "result": str(result),
                }
            )
            logger.info("%s %s: %s", name, variant, rows[-1]["suites"])
    record = {"rows": rows, "variants": {v: VARIANTS[v][1] for v in VARIANTS}}
    (args.out / "mask_readout.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "mask_readout.md").write_text(markdown(rows))
    print(markdown(rows))
    return record


if __name__ == "__main__":
    main()
