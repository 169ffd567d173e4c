"""Mean main score (x100) per suite of each eval JSON given: plain task means, as results/hybrid."""
import json, sys
from collections import defaultdict
order = ("traditional", "longdoc", "reasoning", "instruct")
print("| run | " + " | ".join(order) + " |")
print("|---|" + "---|" * len(order))
for path in sys.argv[1:]:
    d = json.load(open(path))
    by = defaultdict(list)
    for t in d["tasks"]:
        by[t["suite"]].append(t["main_score"])
    cells = [f"{100 * sum(by[s]) / len(by[s]):.1f}" if by[s] else "-" for s in order]
    print(f"| {path.rsplit('/', 1)[-1]} | " + " | ".join(cells) + " |")
