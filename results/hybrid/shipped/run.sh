#!/bin/bash
# Dense, BM25 and every fusion on the four suites, then plain vs late chunking on long-doc,
# with the shipped model (scripts/ship_model.py) at its 512 positions; the cpu study's tasks.
# Usage: run.sh MODEL TASKS OUT   (run from a checkout; PYTHONPATH=src python -m diffembed)
set -euo pipefail
M=$1 T=$2 O=$3
mkdir -p "$O/late"
ev() { out=$1; shift; [ -f "$out" ] || python -m diffembed eval --model "$M" --tasks-root "$T" --max-length 512 --no-progress --out "$out" "$@" > "${out%.json}.log" 2>&1; }
ev "$O/dense.json" --suite all --retriever dense
ev "$O/rrf.json" --suite all --retriever hybrid --fusion rrf
for a in 0.1 0.2 0.3 0.5; do
  ev "$O/convex-$a.json" --suite all --retriever hybrid --fusion convex --alpha $a
done
for c in plain late; do
  for r in dense hybrid; do
    ev "$O/late/$c-128-$r.json" --suite longdoc --chunk-tokens 128 --chunk-overlap 16 --chunking $c --retriever $r
  done
done
