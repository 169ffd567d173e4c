"""Where does pretraining start to pay? The base LM's snapshots fine-tuned and evaluated.

Each point (a snapshot of ``results/base/run``, the finished base, and the random-init control
of the same architecture) is fine-tuned with the shipped model's recipe (combined pairs, the
study's fine-tuning settings, ``--ft-steps`` steps, bidirectional attention, mean pooling) and
evaluated on the traditional and long-document suites at 512 tokens, beside BM25. Writes
``--results``/curve.json (scores, tokens, held-out CE, provenance) and curve.png (suite score
vs pretraining tokens, BM25 as a line).

    python scripts/base_curve.py --corpus data/corpus --study STUDY --run results/base/run \
        --points step-0003662,step-0007324,final --out WORK --results results/base

Stages are skipped when their output exists, so a rerun resumes. ``--study``: the cpu study's
folder (its tasks; built by the study's own stages when missing); its tokenizer must be the
base's (the same BPE trained on the same split).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ship_model import DIFFEMBED, build_pairs, finetune, run

from diffembed.io import read_json, write_json
from diffembed.model.tokenizer import load_tokenizer
from diffembed.provenance import provenance
from diffembed.study.analysis import load_scores, suite_score
from diffembed.study.design import SUITE_LABELS
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study
from diffembed.train.pretrain_config import PRESETS as PT
from diffembed.train.pretrain_config import PretrainConfig
from diffembed.train.pretrain_data import tokenizer_sha256

SUITES = ("longdoc", "traditional")


def point_model(args: argparse.Namespace, name: str, tok: Path) -> tuple[Path, dict[str, Any]]:
    """The model directory of a point and what it was trained on (tokens, held-out CE);
    ``random``: the base's architecture (``--config``), never trained (the study's control)."""
    if name == "random":
        path = args.out / "lm" / "random"
        if not path.exists():
            cfg = read_json(args.config)
            config = PretrainConfig(**{**PT["cpu"], **cfg, "objective": "ar"})
            Study(PRESETS[args.preset], out=path.parent)._init_random_lm(config, tok, path)
        return path, {"tokens": 0, "eval_ce": None}
    if name == "final":
        info = read_json(args.run / "pretrain.json")
        return args.run, {
            "tokens": info["tokens_trained"],
            "eval_ce": info["final_eval"].get("eval_ce"),
        }
    path = args.run / "snapshots" / name
    info = read_json(path / "snapshot.json")
    return path, {"tokens": info["tokens"], "eval_ce": info.get("eval_ce")}


def evaluate(args: argparse.Namespace, model: Path, tasks: Path, out: Path) -> dict[str, float]:
    """Suite scores (x100) of ``model`` on the long-document and traditional suites."""
    for suite in SUITES:
        part = out.with_name(f"{out.stem}-{suite}.json")
        if not part.exists():
            cmd = [*DIFFEMBED, "eval", "--model", str(model), "--tasks-root", str(tasks)]
            cmd += ["--suite", suite, "--out", str(part), "--max-length", "512", "--no-progress"]
            run(cmd, out.parent / f"{out.stem}.log")
    scores = {}
    for suite in SUITES:  # one result file per suite (load_scores reads several as seeds)
        scores.update(load_scores([out.with_name(f"{out.stem}-{suite}.json")]))
    return {s: round(suite_score(scores, s, None), 2) for s in SUITES}


def plot(record: dict[str, Any], path: Path) -> None:
    """Suite score vs pretraining tokens, one panel per suite, BM25 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SUITES), figsize=(10, 3.8))
    points = sorted(record["points"], key=lambda p: p["tokens"])
    for ax, suite in zip(axes, SUITES, strict=True):
        xs = [p["tokens"] / 1e6 for p in points]
        ax.plot(xs, [p["scores"][suite] for p in points], "o-", label="fine-tuned base")
        ax.axhline(record["bm25"][suite], color="k", ls="--", label="BM25")
        ax.set_title(SUITE_LABELS[suite])
        ax.set_xlabel("AR pretraining tokens (M; 0 = random init)")
        ax.set_ylabel("suite score (x100)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"4 x 128 base, fine-tuned {record['settings']['ft_steps']} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="corpus directory")
    ap.add_argument("--study", type=Path, required=True, help="cpu study folder (tasks)")
    ap.add_argument("--run", type=Path, default=Path("results/base/run"), help="the base's run")
    ap.add_argument("--config", type=Path, default=Path("results/base/config.json"))
    ap.add_argument("--points", default="step-0003662,step-0007324,final")
    ap.add_argument("--out", type=Path, required=True, help="work folder (fine-tunes, evals)")
    ap.add_argument("--results", type=Path, default=Path("results/base"))
    ap.add_argument("--preset", default="cpu", help="study preset of the fine-tuning")
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--pretrain-pairs-per-task", type=int, default=10000)
    args = ap.parse_args()
    start = time.time()
    for d in ("lm", "ft", "eval"):
        (args.out / d).mkdir(parents=True, exist_ok=True)
    study = Study(PRESETS[args.preset], out=args.study, corpus=args.corpus, show_progress=False)
    corpus, corpus_d = study.stage_corpus()
    tok, tok_d = study.stage_tokenizer(corpus, corpus_d)
    if tokenizer_sha256(load_tokenizer(tok)) != tokenizer_sha256(load_tokenizer(args.run)):
        sys.exit(f"{tok}: not the base's tokenizer ({args.run}); the tasks would not match")
    tasks, _ = study.stage_tasks(corpus, corpus_d, tok, tok_d)
    pairs = build_pairs(args, args.out / "pairs")["combined"]
    bm25 = evaluate(args, Path("bm25"), tasks, args.out / "eval" / "bm25.json")
    points = []
    for name in ["random", *args.points.split(",")]:
        model, trained = point_model(args, name, tok)
        ft = args.out / "ft" / name
        finetune(args, model, pairs, ft)
        scores = evaluate(args, ft, tasks, args.out / "eval" / f"{name}.json")
        points.append({"point": name, **trained, "scores": scores})
        print(json.dumps(points[-1]), flush=True)
    record = {
        "points": points,
        "bm25": bm25,
        "vs_bm25": {
            p["point"]: {s: round(p["scores"][s] / bm25[s], 3) for s in SUITES} for p in points
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "provenance": provenance(start),
    }
    write_json(args.results / "curve.json", record)
    plot(record, args.results / "curve.png")


if __name__ == "__main__":
    main()
