"""Held-out in-batch accuracy of already fine-tuned models, measured as ``finetune_curve.py`` does
(the same seeded split of the pairs, batches of one task, duplicates of a positive excluded).

    python scripts/heldout_accuracy.py --pairs pairs.jsonl --out acc.json MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_curve import heldout_accuracy, split_pairs  # noqa: E402

from diffembed.formats.pairs import read_pairs  # noqa: E402
from diffembed.io import write_json  # noqa: E402
from diffembed.provenance import provenance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--heldout", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    start = time.time()
    _, held = split_pairs(read_pairs(args.pairs), args.heldout, seed=0)
    results = {}
    for model in args.models:
        results[str(model)] = heldout_accuracy(model, held, args.batch)
        print(f"{model}: {results[str(model)]:.4f}", flush=True)
    write_json(args.out, {"results": results, "provenance": provenance(start)})


if __name__ == "__main__":
    main()
