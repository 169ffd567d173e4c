#!/usr/bin/env bash
# One client, the adaptive batch wait (the server's default) against never waiting, interleaved
# five times each; the JSONs record the server's mean wait per step. From the repo root:
#   bash results/perf/c1_wait.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/perf/serve_load_c1
PY=.venv/bin/python
mkdir -p "$OUT"
echo "commit: $(git rev-parse HEAD); started: $(date -u +%FT%TZ)" > "$OUT/provenance.txt"
$PY benchmarks/serve_load.py --write-model /tmp/serve_load_model --clients 1 --requests 8 \
  >/dev/null 2>&1
for run in 1 2 3 4 5; do
  for wait in default 0; do
    flags=(); [ "$wait" = 0 ] && flags=(--batch-wait-ms 0)
    $PY benchmarks/serve_load.py --write-model /tmp/serve_load_model --clients 1 \
      "${flags[@]}" --requests 256 --inputs 4 \
      --json "$OUT/c1-wait${wait}-run${run}.json" >/dev/null 2>&1
  done
done
$PY results/perf/serve_summary.py "$OUT" > "$OUT/summary.md"
echo "finished: $(date -u +%FT%TZ)" >> "$OUT/provenance.txt"
