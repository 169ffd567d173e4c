"""Median over runs of serve_load.py's JSONs, per client count and worker threads: a table.

.venv/bin/python results/perf/serve_summary.py results/perf/serve_load
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

KEYS = (
    "tokens_per_s",
    "direct_tokens_per_s",
    "ratio_server_to_direct",
    "p50_ms",
    "p99_ms",
    "texts_per_forward_pass",
    "mean_batch_wait_ms",
)


def main() -> None:
    runs: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for path in sorted(Path(sys.argv[1]).glob("*.json")):
        got = json.loads(path.read_text())
        key = (got["clients"], str(got["threads"] or "default"), got["batch_wait_ms"])
        runs[key].append(got)
    head = "| clients | worker threads | batch wait ms | runs | "
    print(head + " | ".join(KEYS) + " | ratio per run |")
    print("|---" * (len(KEYS) + 5) + "|")
    for (clients, threads, wait), rs in sorted(runs.items()):
        medians = [statistics.median(r.get(k, float("nan")) for r in rs) for k in KEYS]
        per_run = ", ".join(f"{r['ratio_server_to_direct']:.2f}" for r in rs)
        cells = " | ".join(f"{m:.0f}" if abs(m) >= 100 else f"{m:.3g}" for m in medians)
        print(f"| {clients} | {threads} | {wait:g} | {len(rs)} | {cells} | {per_run} |")


if __name__ == "__main__":
    main()
