"""Train the shipped model: two or three LM sizes at equal pretraining compute, each pretrained
AR then adapted to masked diffusion (the study's ``ar-diffusion-bi`` recipe), fine-tuned and
evaluated on the study's four suites; the best by mean suite score is exported with its card.

    python scripts/ship_model.py --corpus data/corpus --study results/cpu --out OUT \
        --export models/diffembed-tiny --results results/ship

Stages (each skipped when its output is complete, so a rerun resumes; pretraining resumes from
its last checkpoint):

1. data: the cpu study's tokenizer and evaluation tasks (``--study``: an existing cpu study
   folder is reused as is; a missing one is built by the study's own stages), so the scores
   compare with ``results/cpu``.
2. pairs: the finetune split's pairs (every task type, uncapped) and pairs of the same task
   types from the pretrain split (``pairs build --split pretrain``), concatenated.
3. per size: AR pretraining, then diffusion adaptation (attention annealed from causal to
   full, shifted targets) for ``--adapt-fraction`` of the size's tokens; the first size runs
   ``--steps`` steps of ``--batch`` x ``--seq-len`` tokens and every other size gets the same
   training FLOPs (``count_flops_per_token`` of the model, head included), so fewer tokens.
4. fine-tuning (the study's recipe at ``--ft-steps``): the first size with the finetune pairs
   alone and with the combined pairs; the pairs set with the higher mean suite score is used
   for the other sizes.
5. evaluation on the four suites at the models' positions; the best (size, pairs) by the mean
   of the four suite scores is copied to ``--export`` with a model card, saving the length it
   was evaluated at as its ``max_length`` (fine-tuning saves its longest training length), and
   the sweep table goes to ``--results`` (``sweep.json``, ``sweep.md``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from diffembed.io import atomic_dir, atomic_write, read_json, write_json
from diffembed.model.model_dir import write_max_length
from diffembed.provenance import machine, provenance
from diffembed.study.analysis import load_scores, suite_score
from diffembed.study.design import SUITE_LABELS, SUITE_ORDER
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study

DIFFEMBED = [sys.executable, "-m", "diffembed"]


def size_config(size: str, seq_len: int, batch: int) -> dict[str, Any]:
    """Pretraining overrides of a ``LAYERSxHIDDEN`` size: head dim 32, FFN 4x hidden."""
    layers, hidden = (int(x) for x in size.lower().split("x"))
    if hidden % 32:
        raise SystemExit(f"--sizes {size}: hidden must be a multiple of 32 (head dim 32)")
    heads = hidden // 32
    return dict(
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=heads,
        ffn=4 * hidden,
        seq_len=seq_len,
        global_batch=batch,
        micro_batch=batch,
        eval_every=100,
        save_every=100,
        eval_tokens=8192,
    )


def flops_per_token(overrides: dict[str, Any], tokenizer: Path, preset: str) -> float:
    """Training FLOPs per token of the size (body + LM head, as pretraining logs them)."""
    from diffembed.model.tokenizer import load_tokenizer
    from diffembed.train.pretrain_config import PRESETS as PT
    from diffembed.train.pretrain_config import PretrainConfig
    from diffembed.train.pretrain_model import build_model, count_flops_per_token

    config = PretrainConfig(**{**PT[preset], **overrides, "objective": "ar"})
    model = build_model(config, load_tokenizer(tokenizer))
    body, head = count_flops_per_token(model, config.seq_len)
    return body + head


def run(cmd: list[str], log: Path) -> None:
    """Run a diffembed command with its output in ``log`` and its provenance (command, commit,
    machine, wall time) in ``log`` + ``.json``."""
    t0 = time.time()
    print("+", " ".join(cmd), flush=True)
    with log.open("a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    write_json(log.with_name(log.name + ".json"), provenance(t0, cmd))


def stage_wall(log: Path) -> float | None:
    """The wall seconds :func:`run` recorded for ``log`` (None: not run by this script)."""
    record = log.with_name(log.name + ".json")
    return read_json(record)["wall_time_s"] if record.exists() else None


def pretrain(
    args: argparse.Namespace, tok: Path, out: Path, objective: str, cfg: dict, init: Path | None
) -> None:
    """One pretraining stage (skipped when ``out/config.json`` exists; resumed from a
    checkpoint)."""
    if (out / "config.json").exists():
        return
    cfg_file = out.parent / f"{out.name}.config.json"
    cfg_file.write_text(json.dumps(cfg))
    preset = PRESETS[args.preset].pretrain_preset
    cmd = [*DIFFEMBED, "pretrain", "--objective", objective, "--preset", preset]
    cmd += ["--config", str(cfg_file), "--corpus", str(args.corpus), "--tokenizer", str(tok)]
    cmd += ["--out", str(out), "--seed", "0", "--no-progress"]
    if init is not None:
        cmd += ["--init", str(init), "--anneal-steps", str(cfg["steps"] // 5), "--shift"]
    if (out / "checkpoint" / "trainer.json").exists():
        cmd.append("--resume")
    run(cmd, out.parent / f"{out.name}.log")


def build_pairs(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """The finetune-split pairs and finetune + pretrain-split pairs: ``{name: path}``."""
    out.mkdir(parents=True, exist_ok=True)
    common = ["--corpus", str(args.corpus), "--hard-negatives", "3", "--no-progress"]
    ft, pt, both = out / "finetune.jsonl", out / "pretrain-split.jsonl", out / "combined.jsonl"
    if not ft.exists():
        run([*DIFFEMBED, "pairs", "build", *common, "--out", str(ft)], out / "pairs.log")
    if not pt.exists():
        cmd = [*DIFFEMBED, "pairs", "build", *common, "--split", "pretrain", "--out", str(pt)]
        run([*cmd, "--max-per-task", str(args.pretrain_pairs_per_task)], out / "pairs.log")
    if not both.exists():
        with atomic_write(both) as f:
            for p in (ft, pt):
                f.write(p.read_text(encoding="utf-8"))
    return {"finetune": ft, "combined": both}


def finetune(args: argparse.Namespace, lm: Path, pairs: Path, out: Path) -> None:
    """The study's fine-tuning recipe at ``--ft-steps`` (skipped when ``out`` exists)."""
    if out.exists():
        return
    ft = PRESETS[args.preset].finetune
    cmd = [*DIFFEMBED, "finetune", "--model", str(lm), "--pairs", str(pairs), "--out", str(out)]
    cmd += ["--attention", "bidirectional", "--pooling", "mean", "--lora-r", "0"]
    cmd += ["--lr", str(ft.lr), "--steps", str(args.ft_steps)]
    cmd += ["--warmup-steps", str(args.ft_steps // 10)]
    cmd += ["--global-batch-size", str(ft.global_batch_size)]
    cmd += ["--hard-negatives", str(ft.hard_negatives)]
    cmd += ["--max-query-length", str(ft.max_query_length)]
    cmd += ["--max-doc-length", str(ft.max_doc_length), "--seed", "0", "--no-progress"]
    cmd += ["--exclude-instruction"] if ft.exclude_instruction else []
    run(cmd, out.parent / f"{out.name}.log")


def evaluate(args: argparse.Namespace, model: Path, tasks: Path, out: Path) -> dict[str, float]:
    """Suite scores (x100, the study's group means) of ``model`` at ``--seq-len`` tokens."""
    if not out.exists():
        cmd = [*DIFFEMBED, "eval", "--model", str(model), "--tasks-root", str(tasks)]
        cmd += ["--out", str(out), "--max-length", str(args.seq_len), "--no-progress"]
        run(cmd, out.parent / f"{out.stem}.log")
    scores = load_scores([out])
    return {s: round(suite_score(scores, s, None), 2) for s in SUITE_ORDER}


def lm_summary(lm: Path) -> dict[str, Any]:
    """Tokens, parameters, held-out loss, mean tokens/s and wall time of a pretrained LM."""
    info = read_json(lm / "pretrain.json")
    final = info["final_eval"]
    wall = stage_wall(lm.parent / f"{lm.name}.log") or info["provenance"]["wall_time_s"]
    return {
        "parameters": info["parameters"],
        "tokens": info["tokens_trained"],
        "heldout": {k: v for k, v in final.items() if k.startswith("eval_")},
        "tokens_per_s": round(info["tokens_trained"] / wall, 1),
        "wall_s": wall,
    }


def mean_score(scores: dict[str, float]) -> float:
    """The selection score: the mean of the four suite scores."""
    return sum(scores.values()) / len(scores)


def sweep_table(record: dict[str, Any]) -> str:
    """The sweep as a Markdown table: one line per fine-tuned run."""
    specs = {s["size"]: s for s in record["sizes"]}
    head = [
        "| run | parameters | AR + diffusion tokens | training FLOPs | held-out AR CE | "
        "held-out diffusion ELBO NLL | pairs | "
        + " | ".join(SUITE_LABELS[s] for s in SUITE_ORDER)
        + " | mean |",
        "|---" * (8 + len(SUITE_ORDER)) + "|",
    ]
    lines = []
    for r in record["runs"]:
        spec = specs[r["size"]]
        ar, dif = spec["lm"]["ar"], spec["lm"]["diffusion"]
        cells = [
            f"`{r['name']}`" + (" (shipped)" if r["name"] == record["best"] else ""),
            f"{ar['parameters'] / 1e6:.2f}M",
            f"{ar['tokens'] / 1e6:.1f}M + {dif['tokens'] / 1e6:.1f}M",
            f"{spec['training_flops']:.3g}",
            f"{ar['heldout'].get('eval_ce', float('nan')):.3f}",
            f"{dif['heldout'].get('eval_elbo_nll', float('nan')):.3f}",
            f"{r['finetune']['pairs']:,}",
            *(f"{r['scores'][s]:.1f}" for s in SUITE_ORDER),
            f"{r['mean']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bm25 = record["bm25"]
    lines.append(
        "| BM25 | - | - | - | - | - | - | "
        + " | ".join(f"{bm25[s]:.1f}" for s in SUITE_ORDER)
        + f" | {mean_score(bm25):.1f} |"
    )
    return "\n".join(head + lines)


def model_card(record: dict[str, Any], best: dict[str, Any], max_length: int) -> str:
    """The shipped model's README.md: data, recipe, steps, wall time, tokens/s, and the scores,
    measured at ``max_length`` tokens (what the model saves)."""
    spec = next(s for s in record["sizes"] if s["size"] == best["size"])
    ar, dif, ft = spec["lm"]["ar"], spec["lm"]["diffusion"], best["finetune"]
    prov = record["provenance"]
    bm25 = record["bm25"]
    score_rows = "\n".join(
        f"| {SUITE_LABELS[s]} | {best['scores'][s]:.1f} | {bm25[s]:.1f} |" for s in SUITE_ORDER
    )
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [diffembed, diffusion-language-model, text-embedding]
---

# diffembed-tiny

diffembed's shipped text-embedding model: a {best["size"]} (layers x hidden) Llama-style LM
pretrained from scratch on offline English text (the corpus's pretrain split: Debian
documentation, dictionaries, WordNet, man pages, books), autoregressively for {ar["tokens"]:,}
tokens, then adapted to masked diffusion (attention annealed from causal to bidirectional) for
{dif["tokens"]:,} tokens, then contrastively fine-tuned (InfoNCE, in-batch and one hard
negative, mean pooling, bidirectional attention) for {record["settings"]["ft_steps"]} steps on {ft["pairs"]:,}
pairs ({best["pairs"]} pairs: {pairs_text(best["pairs"])}). {ar["parameters"]:,} parameters as an
LM; max_length {max_length} tokens. It is small and trained on 2 CPU cores:
use it for search together with BM25 (`diffembed search --mode hybrid`), not alone.

## Scores (x100, the cpu study's four evaluation suites, at {max_length} tokens)

| suite | this model | BM25 |
|---|---|---|
{score_rows}

Its size and pairs were chosen by these scores among the runs below, so they are optimistic
for that reason (selection on the evaluation suites).

## How the size was chosen: equal pretraining compute

{sweep_table(record)}

Held-out losses are on documents of the pretrain split that no run trained on (AR:
cross-entropy per token; diffusion: the ELBO bound on NLL per token).

## Training

| stage | tokens | wall time | tokens/s |
|---|---|---|---|
| AR pretraining | {ar["tokens"]:,} | {ar["wall_s"] / 60:.1f} min | {ar["tokens_per_s"]:,.0f} |
| diffusion adaptation | {dif["tokens"]:,} | {dif["wall_s"] / 60:.1f} min | {dif["tokens_per_s"]:,.0f} |
| contrastive fine-tuning | - | {(ft["wall_s"] or 0) / 60:.1f} min | {ft["mean_tokens_per_s"]:,.0f} |

Learning curves: `training/` (fine-tuning loss, accuracy, document-document cosine); the
pretraining curves and every run's numbers are in `results/ship/` of the repository.

## Made by

- command: `{prov["command"]}`
- git commit: `{prov["git_commit"]}`
- machine: {json.dumps(machine())}
- total wall time (the sweep, every size and evaluation): {prov["wall_time_s"] / 60:.1f} min

## Use

```python
from diffembed.model.embedder import Embedder
model = Embedder.load("models/diffembed-tiny")
vectors = model.encode_documents(["some text"])
```

`sentence_transformers.SentenceTransformer("models/diffembed-tiny")` loads it too.
"""


def pairs_text(name: str) -> str:
    """What a pairs set of :func:`build_pairs` holds."""
    if name == "finetune":
        return "every task type of the corpus's finetune split"
    return "the finetune split's pairs and the same task types from the pretrain split"


def evaluated_length(evaluation: Path) -> int:
    """The ``max_length`` an evaluation's JSON (``diffembed eval --out``) says it embedded
    texts with."""
    length = read_json(evaluation).get("settings", {})
    length = length.get("max_length")
    if not isinstance(length, int) or length < 1:
        raise SystemExit(f"{evaluation}: settings.max_length is {length!r}, not a length")
    return length


def export_model(
    src: Path, dest: Path, record: dict[str, Any], best: dict[str, Any], max_length: int
) -> None:
    """Copy the fine-tuned model ``src`` to ``dest`` (atomically) with its card, saving
    ``max_length``, the length its card's scores were measured at, as the length it runs with
    (diffembed.json and sentence_bert_config.json); ``src`` is left as it is."""
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        write_max_length(tmp, max_length)
        (tmp / "README.md").write_text(model_card(record, best, max_length), encoding="utf-8")


def export(args: argparse.Namespace, best: dict[str, Any], record: dict[str, Any]) -> None:
    """Copy the best run to ``--export`` (with its card, at the length it was evaluated at) and
    write ``--results``: sweep.json, sweep.md, each run's evaluation JSON and fine-tuning log,
    each LM's pretraining log."""
    evaluation = args.out / "eval" / f"{best['name']}.json"
    ft = args.out / "ft" / best["name"]
    export_model(ft, args.export, record, best, evaluated_length(evaluation))
    res = args.results
    res.mkdir(parents=True, exist_ok=True)
    write_json(res / "sweep.json", record)
    with atomic_write(res / "sweep.md") as f:
        f.write(f"# The shipped model's size sweep\n\n{sweep_table(record)}\n")
    for r in record["runs"]:
        shutil.copy(args.out / "eval" / f"{r['name']}.json", res / f"eval-{r['name']}.json")
        for name in ("log.csv", "training.png"):
            src = args.out / "ft" / r["name"] / "training" / name
            shutil.copy(src, res / f"finetune-{r['name']}-{name}")
    for lm in sorted((args.out / "lm").glob("*/pretrain.json")):
        for name in ("train_log.csv", "train_log.png", "pretrain.json"):
            shutil.copy(lm.parent / name, res / f"lm-{lm.parent.name}-{name}")
    shutil.copy(args.out / "eval" / "bm25.json", res / "eval-bm25.json")


def sweep_sizes(args: argparse.Namespace, tok: Path) -> list[dict[str, Any]]:
    """Per size: its overrides and AR / adaptation steps at the first size's training FLOPs."""
    tokens_per_step = args.batch * args.seq_len
    sizes = []
    budget = None
    for size in args.sizes.split(","):
        cfg = size_config(size, args.seq_len, args.batch)
        fpt = flops_per_token(cfg, tok, PRESETS[args.preset].pretrain_preset)
        if budget is None:
            budget = args.steps * tokens_per_step * fpt
        steps = max(1, round(budget / fpt / tokens_per_step))
        adapt = max(1, round(steps * args.adapt_fraction))
        sizes.append(
            dict(
                size=size,
                overrides=cfg,
                flops_per_token=fpt,
                ar_steps=steps - adapt,
                adapt_steps=adapt,
                training_flops=steps * tokens_per_step * fpt,
            )
        )
    return sizes


def train_size(args: argparse.Namespace, tok: Path, spec: dict[str, Any]) -> Path:
    """AR pretraining then diffusion adaptation of one size; the adapted LM's directory."""
    lm = args.out / "lm"
    lm.mkdir(parents=True, exist_ok=True)
    ar, dif = lm / f"{spec['size']}-ar", lm / f"{spec['size']}-diffusion"
    cfg = dict(spec["overrides"], steps=spec["ar_steps"], warmup_steps=50)
    pretrain(args, tok, ar, "ar", cfg, None)
    adapt = spec["adapt_steps"]
    cfg = dict(spec["overrides"], steps=adapt, warmup_steps=max(1, adapt // 20))
    pretrain(args, tok, dif, "diffusion", cfg, ar)
    spec["lm"] = {"ar": lm_summary(ar), "diffusion": lm_summary(dif)}
    return dif


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="corpus directory")
    ap.add_argument("--study", type=Path, required=True, help="cpu study folder (tokenizer, tasks)")
    ap.add_argument("--out", type=Path, required=True, help="work folder (LMs, fine-tunes)")
    ap.add_argument("--export", type=Path, required=True, help="the shipped model directory")
    ap.add_argument("--results", type=Path, required=True, help="sweep.json / sweep.md folder")
    ap.add_argument("--preset", default="cpu", help="study preset of the data and fine-tuning")
    ap.add_argument("--sizes", default="4x128,6x192", help="LAYERSxHIDDEN,... (first: reference)")
    ap.add_argument("--steps", type=int, default=1500, help="the first size's steps in all")
    ap.add_argument("--adapt-fraction", type=float, default=1 / 3, help="of steps, diffusion")
    ap.add_argument("--batch", type=int, default=16, help="sequences per pretraining step")
    ap.add_argument("--seq-len", type=int, default=512, help="pretraining and evaluation length")
    ap.add_argument("--ft-steps", type=int, default=1000)
    ap.add_argument("--pretrain-pairs-per-task", type=int, default=10000)
    args = ap.parse_args()
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    study = Study(PRESETS[args.preset], out=args.study, corpus=args.corpus, show_progress=False)
    corpus, corpus_d = study.stage_corpus()
    tok, tok_d = study.stage_tokenizer(corpus, corpus_d)
    tasks, _ = study.stage_tasks(corpus, corpus_d, tok, tok_d)
    pairs = build_pairs(args, args.out / "pairs")
    (args.out / "ft").mkdir(exist_ok=True)
    (args.out / "eval").mkdir(exist_ok=True)
    bm25 = evaluate(args, Path("bm25"), tasks, args.out / "eval" / "bm25.json")
    sizes = sweep_sizes(args, tok)
    runs: list[dict[str, Any]] = []
    chosen_pairs = None
    for spec in sizes:
        lm = train_size(args, tok, spec)
        for name in [chosen_pairs] if chosen_pairs else list(pairs):
            run_name = f"{spec['size']}-{name}"
            ft = args.out / "ft" / run_name
            finetune(args, lm, pairs[name], ft)
            scores = evaluate(args, ft, tasks, args.out / "eval" / f"{run_name}.json")
            info = read_json(ft / "training" / "finetune.json")
            summary = {k: info[k] for k in ("final_loss", "mean_tokens_per_s", "pairs")}
            summary["wall_s"] = stage_wall(ft.parent / f"{run_name}.log")
            runs.append(
                dict(
                    name=run_name,
                    size=spec["size"],
                    pairs=name,
                    scores=scores,
                    mean=round(mean_score(scores), 2),
                    finetune=summary,
                )
            )
        if chosen_pairs is None:
            chosen_pairs = max((r for r in runs), key=lambda r: r["mean"])["pairs"]
    best = max(runs, key=lambda r: r["mean"])
    record = dict(
        sizes=sizes,
        runs=runs,
        bm25=bm25,
        chosen_pairs=chosen_pairs,
        best=best["name"],
        settings={k: str(v) for k, v in vars(args).items()},
        provenance=provenance(start),
    )
    export(args, best, record)
    print(f"shipped {best['name']} ({best['mean']:.1f} mean) to {args.export}")


if __name__ == "__main__":
    main()
