"""Does fine-tuning learn? Quality of one base model after N contrastive steps, for several N.

For each step budget in ``--steps`` this fine-tunes ``--model`` from scratch with that budget
(the learning-rate and scale schedules are fitted to it), then measures

* held-out in-batch accuracy: pairs never trained on, scored exactly as training scores a batch
  (``--batch`` queries of one task, each against every positive and hard negative of the batch);
* nDCG@10 (or the task's metric) on the suites' tasks (``--suites``), through the same
  ``evaluate_model`` as ``diffembed eval``, beside BM25 on the same tasks.

Writes ``OUT/curve.json`` (every number, the settings, provenance) and prints a table.

    python scripts/finetune_curve.py --model LM_DIR --pairs pairs.jsonl --tasks TASKS_DIR \\
        --steps 100,300 --out OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from diffembed.eval.evaluate import EvalSettings, evaluate_model, find_tasks
from diffembed.formats.pairs import Pair, read_pairs, write_pairs
from diffembed.io import write_json
from diffembed.model.embedder import Embedder
from diffembed.provenance import provenance
from diffembed.train.batching import duplicate_mask
from diffembed.train.contrastive import in_batch_accuracy, info_nce_loss
from diffembed.train.finetune import finetune
from diffembed.train.finetune_config import FinetuneConfig


def split_pairs(pairs: list[Pair], held: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded split: ``held`` pairs for measuring, the rest for training."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]


def heldout_accuracy(model: Path, pairs: list[Pair], batch: int) -> float:
    """Mean in-batch accuracy over task-homogeneous batches of held-out pairs (positive and
    first hard negative of every pair in the batch as candidates)."""
    embedder = Embedder.load(model, precision="fp32")
    by_task: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_task[p.task].append(p)
    accs, weights = [], []
    for task_pairs in by_task.values():
        for k in range(0, len(task_pairs) - batch + 1, batch):
            chunk = task_pairs[k : k + batch]
            docs = [t for p in chunk for t in (p.positive, *p.negatives[:1])]
            per = len(docs) // len(chunk)
            q = torch.empty(len(chunk), embedder.dim)
            for instruction in {p.instruction for p in chunk}:  # one encode per instruction
                rows = [i for i, p in enumerate(chunk) if p.instruction == instruction]
                texts = [chunk[i].query for i in rows]
                q[rows] = torch.from_numpy(embedder.encode(texts, prompt=instruction))
            d = torch.from_numpy(embedder.encode(docs))
            positives = torch.arange(len(chunk)) * per
            # As in training: other copies of a query's positive are neither right nor wrong.
            _, logits = info_nce_loss(q, d, positives, exclude=duplicate_mask(docs, positives))
            accs.append(float(in_batch_accuracy(logits, positives)))
            weights.append(len(chunk))
    return float(np.average(accs, weights=weights))


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--tasks", type=Path, required=True, help="a study's tasks/ folder")
    ap.add_argument("--suites", default="traditional,longdoc")
    ap.add_argument("--steps", default="100,300")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--extra-pairs",
        type=Path,
        action="append",
        default=[],
        help="pairs added to the training split only (repeatable)",
    )
    ap.add_argument("--heldout", type=int, default=400, help="pairs kept out of training")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lora-r", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    ap.add_argument("--max-doc-length", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=256, help="evaluation max tokens")
    ap.add_argument("--bm25", action="store_true", help="also evaluate BM25 on the tasks")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    train, held = split_pairs(read_pairs(args.pairs), args.heldout, seed=0)
    for extra in args.extra_pairs:
        train += read_pairs(extra)
    train_file = args.out / "train_pairs.jsonl"
    write_pairs(train_file, train)
    tasks = [d for s in args.suites.split(",") for d in find_tasks(args.tasks, s)]
    results: dict[str, dict] = {}
    if args.bm25:
        summary = evaluate_model("bm25", tasks, args.out / "bm25.json", show_progress=False)
        results["bm25"] = {t["task"]: t["main_score"] for t in summary["tasks"]}
    for steps in [int(s) for s in args.steps.split(",")]:
        out = args.out / f"steps{steps}"
        t0 = time.time()
        finetune(
            FinetuneConfig(
                model=args.model,
                pairs=train_file,
                out=out,
                attention="bidirectional",
                exclude_instruction=True,
                lora_r=args.lora_r,
                lr=args.lr,
                weight_decay=args.weight_decay,
                warmup_steps=max(1, steps // 10),
                steps=steps,
                global_batch_size=args.batch,
                hard_negatives=1,
                max_query_length=64,
                max_doc_length=args.max_doc_length,
                show_progress=False,
            )
        )
        seconds = time.time() - t0
        acc = heldout_accuracy(out, held, args.batch)
        summary = evaluate_model(
            out,
            tasks,
            args.out / f"steps{steps}.json",
            EvalSettings(max_length=args.max_length),
            show_progress=False,
        )
        results[f"steps{steps}"] = {
            "finetune_seconds": round(seconds, 1),
            "heldout_in_batch_accuracy": acc,
            **{t["task"]: t["main_score"] for t in summary["tasks"]},
        }
        print(json.dumps({f"steps{steps}": results[f"steps{steps}"]}, indent=1), flush=True)
    record = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": results,
        "provenance": provenance(start),
    }
    write_json(args.out / "curve.json", record)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
