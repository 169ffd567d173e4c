#!/usr/bin/env bash
# Issue 17's measurements, one after another on an otherwise idle machine, from the repo root:
#   bash results/perf/run.sh
# Writes results/perf/{encode_throughput.txt, longdoc_memory_base.txt, serve_load/*.json,
# serve_load.md, provenance.txt}. SKIP_LONGDOC=1, SKIP_ENCODE=1 and SKIP_SERVE=1
# leave a stage out (its earlier output stays).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/perf
PY=.venv/bin/python
mkdir -p "$OUT/serve_load"
{
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src benchmarks || echo ' (dirty)')"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "started: $(date -u +%FT%TZ)"
} >> "$OUT/provenance.txt"
t0=$(date +%s)
if [ "${SKIP_LONGDOC:-0}" != 1 ]; then
  $PY benchmarks/longdoc_memory.py --model base > "$OUT/longdoc_memory_base.txt" 2>&1
fi
echo "longdoc_memory: $(( $(date +%s) - t0 )) s" >> "$OUT/provenance.txt"
t1=$(date +%s)
if [ "${SKIP_ENCODE:-0}" != 1 ]; then
  $PY benchmarks/encode_throughput.py --model small --sets a,b --repeats 3 --scale 0.5 \
    2>/dev/null > "$OUT/encode_throughput.txt"
fi
echo "encode_throughput: $(( $(date +%s) - t1 )) s" >> "$OUT/provenance.txt"
t2=$(date +%s)
$PY benchmarks/serve_load.py --write-model /tmp/serve_load_model --clients 1 --requests 8 \
  >/dev/null 2>&1  # writes the random model once, so every run below uses the same one
for run in 1 2 3; do
  [ "${SKIP_SERVE:-0}" = 1 ] && break
  for clients in 1 4 16; do
    # The server's defaults (adaptive batch wait), then the old behaviour (never wait) side by
    # side: the adaptive wait must not raise p99 at 1 client.
    for wait in default 0; do
      flags=(); [ "$wait" = 0 ] && flags=(--batch-wait-ms 0)
      $PY benchmarks/serve_load.py --write-model /tmp/serve_load_model --clients "$clients" \
        "${flags[@]}" --requests 256 --inputs 4 \
        --json "$OUT/serve_load/c${clients}-wait${wait}-run${run}.json" >/dev/null 2>&1
    done
  done
  # The worker on one of the two cores, the other left to HTTP and the clients.
  $PY benchmarks/serve_load.py --write-model /tmp/serve_load_model --clients 16 --threads 1 \
    --requests 256 --inputs 4 --json "$OUT/serve_load/c16-threads1-run${run}.json" >/dev/null 2>&1
done
echo "serve_load: $(( $(date +%s) - t2 )) s" >> "$OUT/provenance.txt"
$PY results/perf/serve_summary.py "$OUT/serve_load" > "$OUT/serve_load.md"
echo "finished: $(date -u +%FT%TZ)" >> "$OUT/provenance.txt"
