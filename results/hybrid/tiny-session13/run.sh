#!/bin/bash
# Fusion settings with the re-exported diffembed-tiny on the cpu study's tasks (our own suites).
set -e
M=${M:-/work/main/models/diffembed-tiny}
T=${T:-/work/wt-run/results/cpu/tasks}
O=${O:-/work/run-logs/fusion}
mkdir -p $O
D=/work/main/.venv/bin/diffembed
$D eval --model $M --tasks-root $T --suite all --retriever dense --out $O/dense.json --no-progress
$D eval --model bm25 --tasks-root $T --suite all --out $O/bm25.json --no-progress
$D eval --model $M --tasks-root $T --suite all --retriever hybrid --out $O/rrf.json --no-progress
for a in 0.1 0.2 0.3 0.5; do
  $D eval --model $M --tasks-root $T --suite all --retriever hybrid --alpha $a --out $O/alpha$a.json --no-progress
done
