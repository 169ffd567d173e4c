"""Suite scores (x100, the study's group means: diffembed.study.analysis.suite_score) of eval
JSONs, as one Markdown table; the first file is the reference the last column compares with.

    python suite_scores.py BM25.json RUN.json ...
"""

import sys
from pathlib import Path

from diffembed.study.analysis import load_scores, suite_score
from diffembed.study.design import SUITE_LABELS, SUITE_ORDER

files = [Path(p) for p in sys.argv[1:]]
rows = {}
for f in files:
    scores = load_scores([f])
    rows[f.stem] = {s: suite_score(scores, s, None) for s in SUITE_ORDER}
ref = rows[files[0].stem]
print("| run | " + " | ".join(SUITE_LABELS[s] for s in SUITE_ORDER) + " | worst suite vs ref |")
print("|---|" + "---|" * (len(SUITE_ORDER) + 1))
for name, r in rows.items():
    present = [s for s in SUITE_ORDER if r[s] == r[s]]
    worst = min(r[s] - ref[s] for s in present) if present else float("nan")
    cells = [f"{r[s]:.1f}" if r[s] == r[s] else "-" for s in SUITE_ORDER]
    print(f"| {name} | " + " | ".join(cells) + f" | {worst:+.1f} |")
