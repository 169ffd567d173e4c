#!/bin/bash
# long-doc: whole vs plain vs late chunking (dense and hybrid), the 140M diffusion model
M=/work/gpu-ft/c-diffusion/steps1000
T=/work/study1/tasks
cd /work/wt-exp
for c in plain late; do
  for r in dense hybrid; do
    PYTHONPATH=src /work/main/.venv/bin/python -m diffembed eval --model $M --tasks-root $T --suite longdoc --chunk-tokens 128 --chunk-overlap 16 --chunking $c --retriever $r --out /work/hybrid/late/$c-128-$r.json --no-progress > /work/hybrid/late/$c-128-$r.log 2>&1
  done
done
for a in 0.1 0.2; do
  PYTHONPATH=src /work/main/.venv/bin/python -m diffembed eval --model $M --tasks-root $T --suite all --retriever hybrid --alpha $a --out /work/hybrid/convex-$a.json --no-progress > /work/hybrid/convex-$a.log 2>&1
done
echo done > /work/hybrid/late/DONE
