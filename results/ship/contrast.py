"""Paired bootstrap of suite-score differences between two eval JSONs of the same tasks (the
study's suite scores and query resampling, diffembed.study.analysis), x100 with 95% CIs.

    python contrast.py A.json B.json [N]     # A - B
"""

import sys
from pathlib import Path

from diffembed.study.analysis import bootstrap_indices, ci, load_scores, suite_score
from diffembed.study.design import SUITE_LABELS, SUITE_ORDER

a, b = load_scores([Path(sys.argv[1])]), load_scores([Path(sys.argv[2])])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
boot = bootstrap_indices(a, n)
print(f"| suite | {Path(sys.argv[1]).stem} - {Path(sys.argv[2]).stem} | 95% CI |")
print("|---|---|---|")
for s in SUITE_ORDER:
    diff = suite_score(a, s, None) - suite_score(b, s, None)
    lo, hi = ci([suite_score(a, s, i) - suite_score(b, s, i) for i in boot])
    print(f"| {SUITE_LABELS[s]} | {diff:+.1f} | [{lo:+.1f}, {hi:+.1f}] |")
