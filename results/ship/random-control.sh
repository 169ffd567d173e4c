#!/bin/bash
# The control for the shipped model: the same 4 x 128 architecture (512 positions) never
# pretrained, fine-tuned and evaluated exactly as scripts/ship_model.py fine-tunes and evaluates
# its runs (combined pairs, 1000 steps). Does 12M tokens of pretraining beat random weights?
# Usage: random-control.sh WORK TASKS   (WORK: ship_model.py's --out; run from a checkout)
set -euo pipefail
W=$1 T=$2
LM=$W/lm/4x128-random FT=$W/ft/4x128-random-combined OUT=$W/eval/4x128-random-combined.json
[ -d "$LM" ] || python - "$LM" "$W/lm/4x128-ar" <<'PY'
import sys
from pathlib import Path

from diffembed.study.design import PRESETS
from diffembed.study.stages import Study
from diffembed.train.pretrain import PRESETS as PT
from diffembed.train.pretrain import PretrainConfig
from diffembed.model.backbone import read_json

lm, ar = Path(sys.argv[1]), Path(sys.argv[2])
cfg = read_json(ar / "pretrain.json")["config"]  # the shipped 4x128 LM's own config
config = PretrainConfig(**{**PT["cpu"], **cfg, "objective": "diffusion"})
Study(PRESETS["cpu"], out=lm.parent)._init_random_lm(config, ar, lm)
PY
[ -d "$FT" ] || python -m diffembed finetune --model "$LM" --pairs "$W/pairs/combined.jsonl" \
  --out "$FT" --attention bidirectional --pooling mean --lora-r 0 --lr 0.0003 --steps 1000 \
  --warmup-steps 100 --global-batch-size 16 --hard-negatives 1 --max-query-length 64 \
  --max-doc-length 256 --seed 0 --no-progress --exclude-instruction > "$FT.log" 2>&1
[ -f "$OUT" ] || python -m diffembed eval --model "$FT" --tasks-root "$T" --out "$OUT" \
  --max-length 512 --no-progress > "${OUT%.json}.log" 2>&1
