#!/bin/bash
# dense / bm25 / hybrid (RRF) on every suite, the diffusion-140M model fine-tuned 1000 steps
M=/work/gpu-ft/c-diffusion/steps1000
T=/work/study1/tasks
cd /work/wt-exp
for r in dense bm25 hybrid; do
  PYTHONPATH=src /work/main/.venv/bin/python -m diffembed eval --model $M --tasks-root $T --suite all --retriever $r --out /work/hybrid/$r.json --no-progress > /work/hybrid/$r.log 2>&1
done
for a in 0.3 0.5 0.7; do
  PYTHONPATH=src /work/main/.venv/bin/python -m diffembed eval --model $M --tasks-root $T --suite all --retriever hybrid --alpha $a --out /work/hybrid/convex-$a.json --no-progress > /work/hybrid/convex-$a.log 2>&1
done
echo done > /work/hybrid/DONE
