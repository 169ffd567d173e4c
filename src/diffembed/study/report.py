"""The study's outputs: ``summary.json``, the figures, ``report.md`` and the exported model.

Every number of ``report.md`` is in ``summary.json`` (:func:`~diffembed.study.analysis.analyse`);
``--report-only`` rewrites all three from the committed evaluation results.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import ConfigError
from diffembed.io import atomic_dir, atomic_write, read_json, write_json
from diffembed.model.model_dir import write_max_length
from diffembed.provenance import git_commit, machine
from diffembed.study.analysis import analyse, finetune_log
from diffembed.study.design import (
    CONTROL,
    EXTRA_ROWS,
    GATE_RULE,
    GATE_WHY,
    LM_BY_NAME,
    LMS,
    PRIMARY,
    REFERENCES,
    ROWS,
    SUITE_LABELS,
    SUITE_ORDER,
    Row,
)

if TYPE_CHECKING:
    from diffembed.study.stages import Study

logger = logging.getLogger(__name__)


def _fmt(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.1f}"


# ================================================================================ figures
def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG atomically and free it."""
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    _pyplot().close(fig)


def _plot_lengths(analysis: dict[str, Any], rows: Sequence[Row], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("passkey", "needle"), strict=True):
        for name in [r.name for r in rows] + ["bm25", "minilm"]:
            tasks = analysis["per_task"].get(name, {})
            pts = sorted(
                (int(k.split("-")[-1]), v["score"])
                for k, v in tasks.items()
                if k.startswith(f"longdoc/{kind}-")
            )
            if pts:
                style = "--" if name in REFERENCES else "-"
                ax.plot(*zip(*pts, strict=True), style, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="document length (tokens)", ylabel="nDCG@1 x100", title=kind)
    axes[1].legend(fontsize=7)
    _save_png(fig, path)


def _plot_position(analysis: dict[str, Any], rows: Sequence[Row], path: Path) -> None:
    plt = _pyplot()
    positions = ("start", "middle", "end")
    names = [r.name for r in rows] + ["bm25", "minilm"]
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / 3
    for j, pos in enumerate(positions):
        ys = [
            analysis["per_task"].get(n, {}).get(f"longdoc/position-{pos}", {}).get("score", 0.0)
            for n in names
        ]
        ax.bar(np.arange(len(names)) + (j - 1) * width, ys, width, label=pos)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="nDCG@10 x100", title="evidence position in long documents")
    ax.legend()
    _save_png(fig, path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _plot_pretraining(study: Study, path: Path) -> bool:
    plt = _pyplot()
    logs = {lm.name: study.out / "logs" / "lm" / lm.name / "train_log.csv" for lm in LMS}
    logs = {o: p for o, p in logs.items() if p.exists()}
    if not logs:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for objective, p in logs.items():
        rows = _read_csv(p)
        pts = [(float(r["tokens"]), float(r["loss"])) for r in rows if r.get("loss")]
        axes[0].plot(*zip(*pts, strict=True), label=objective)
        for key in ("eval_elbo_nll", "eval_nll", "eval_masked_ce@0.5", "eval_loss"):
            ev = [(float(r["tokens"]), float(r[key])) for r in rows if r.get(key)]
            if ev:
                axes[1].plot(*zip(*ev, strict=True), marker="o", label=f"{objective}: {key[5:]}")
    axes[0].set(xlabel="tokens", ylabel="training loss (nats)", title="pretraining loss")
    axes[1].set(xlabel="tokens", ylabel="nats / token", title="held-out")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    _save_png(fig, path)
    return True


FT_PANELS = (
    ("loss", "InfoNCE loss"),
    ("accuracy", "in-batch accuracy"),
    ("doc_cosine", "mean document-document cosine"),
)


def _plot_finetuning(study: Study, rows: Sequence[Row], path: Path) -> bool:
    """Each row's fine-tuning curve (first seed): a panel per quantity, a line per row."""
    plt = _pyplot()
    seed = study.preset.seeds[0]
    fig, axes = plt.subplots(1, len(FT_PANELS), figsize=(15, 4))
    found = False
    for row in rows:
        p = finetune_log(study, row.name)
        if not p.exists():
            continue
        found = True
        data = _read_csv(p)
        for ax, (key, _) in zip(axes, FT_PANELS, strict=True):
            pts = [(int(r["step"]), float(r[key])) for r in data if r.get(key)]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=row.name)
    for ax, (_, label) in zip(axes, FT_PANELS, strict=True):
        ax.set(xlabel="step", ylabel=label, title=f"fine-tuning: {label} (seed {seed})")
    axes[-1].legend(fontsize=7)
    _save_png(fig, path)
    return found


# ================================================================================ report
def write_report(study: Study, rows: Sequence[Row], total_start: float | None = None) -> Path:
    """Write ``summary.json``, the figures and ``report.md``; returns the report's path."""
    analysis = analyse(study, rows)
    figures = study.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    _plot_lengths(analysis, rows, figures / "longdoc_lengths.png")
    _plot_position(analysis, rows, figures / "longdoc_position.png")
    has_pt = _plot_pretraining(study, figures / "pretraining.png")
    has_ft = _plot_finetuning(study, rows, figures / "finetuning.png")
    stage_total = sum(study.stage_times.values())
    analysis["provenance"] = {
        "command": " ".join(study.command),
        "git_commit": git_commit(),
        "machine": machine(),
        "preset": study.preset.to_json(),
        "stage_wall_time_s": study.stage_times,
        "total_stage_wall_time_s": round(stage_total, 1),
        "this_invocation_wall_time_s": (
            round(time.time() - total_start, 1) if total_start is not None else None
        ),
    }
    write_json(study.out / "summary.json", analysis)
    text = render_report(study, rows, analysis, has_pt, has_ft)
    with atomic_write(study.out / "report.md") as f:
        f.write(text)
    return study.out / "report.md"


def _main_table(study: Study, rows: Sequence[Row], analysis: dict[str, Any]) -> list[str]:
    """The header and the main table: suite scores of every model, ± over seeds, CIs."""
    lines = [
        f"# Diffusion vs autoregressive embeddings: `{study.preset.name}` preset",
        "",
        "Generated by `diffembed reproduce`; every number below is in `summary.json`, computed "
        "from the per-query results in `eval/` (listed under Sources). Scores x100. Brackets: "
        f"95% bootstrap CI over queries ({study.preset.bootstrap} resamples; per-query scores "
        f"averaged over the {len(study.preset.seeds)} fine-tuning seeds first); ± is the "
        "standard deviation over seeds.",
        "",
        "## Main table",
        "",
        "| model | learned | " + " | ".join(SUITE_LABELS[s] for s in SUITE_ORDER) + " |",
        "|---|---|" + "---|" * len(SUITE_ORDER),
    ]
    labels = {r.name: r.label for r in rows}
    labels.update({"bm25": "BM25 (reference)", "minilm": "all-MiniLM-L6-v2 (reference)"})
    for name, suites in analysis["table"].items():
        cells = []
        for s in SUITE_ORDER:
            c = suites[s]
            sd = f" ± {c['seed_std']:.1f}" if c["seed_std"] is not None else ""
            cells.append(f"{_fmt(c['score'])}{sd} [{_fmt(c['ci95'][0])}, {_fmt(c['ci95'][1])}]")
        status = analysis["learning"].get(name, {}).get("status", "reference")
        status = f"**{status}**" if status == "did not learn" else status
        lines.append(
            f"| `{name}`: {labels.get(name, name)} | {status} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"learned: {GATE_RULE} A claim or contrast is judged only between rows that learned.",
    ]
    return lines


def _design(study: Study) -> list[str]:
    """The design section: fixed and dated before the run, and M as the curve chose it."""
    preset = study.preset
    curve = study.out / "logs" / "adapt-curve.json"
    if not preset.design_notes and not curve.exists():
        return []
    when = f" (fixed {preset.design_date}, before any row ran)" if preset.design_date else ""
    lines = ["", f"## Design{when}", ""]
    if preset.design_notes:
        lines += [f"- {note}" for note in preset.design_notes]
        lines += [f"- Why this gate: {GATE_WHY}"]
        lines += [f"- Not in the default rows: `{n}`: {why}." for n, why in EXTRA_ROWS.items()]
    if curve.exists():
        c = json.loads(curve.read_text())
        points = ", ".join(f"{p['step']}: {p['loss']:.3f}" for p in c["points"])
        lines += [
            "",
            f"Adaptation curve (held-out `{c['metric']}` by step; `logs/adapt-curve.json`): "
            f"{points}. Rule: the first M whose loss improves by less than {c['min_gain']} "
            f"nats by 2M. **M = {c['chosen_steps']:,} steps ({c['chosen_tokens']:,} tokens).**",
        ]
    return lines


def _claims(analysis: dict[str, Any]) -> list[str]:
    """The verdict on each claim of the paper, then the other contrasts."""
    lines = [
        "",
        "Suite score = mean over task groups (passkey and needle lengths each average into one "
        "group, as LongEmbed does); metrics: nDCG@1 (passkey, needle), nDCG@10 (other "
        "retrieval), p-MRR (instruction following), accuracy (classification), Pearson "
        "(similarity).",
        "",
        "## The paper's claims",
        "",
        f"Primary contrast, fixed before the run: `{PRIMARY[0]}` minus `{PRIMARY[1]}` (the "
        "paper's DiffEmbed vs its LLM2Vec-style AR baseline). Rule: a gain claim is "
        "*reproduced* when the 95% CI of the difference lies above 0, *not reproduced* when it "
        "lies below 0, otherwise *inconclusive*; the parity claim is reproduced when the CI "
        "lies within ±2 points.",
        "",
        "| suite | paper (diffusion − AR) | measured | 95% CI | verdict |",
        "|---|---|---|---|---|",
    ]
    for v in analysis["verdicts"]:
        paper = "parity" if v["claim"] == "parity" else f"+{v['paper_gain']:.0f}"
        lines.append(
            f"| {SUITE_LABELS[v['suite']]} | {paper} | {v['measured']:+.1f} | "
            f"[{v['ci95'][0]:+.1f}, {v['ci95'][1]:+.1f}] | **{v['verdict']}** |"
        )
    lines += ["", "Other contrasts (same rule, no verdict):", ""]
    lines += ["| contrast | " + " | ".join(SUITE_LABELS[s] for s in SUITE_ORDER) + " | status |"]
    lines += ["|---|" + "---|" * (len(SUITE_ORDER) + 1)]
    for name, per_suite in analysis["contrasts"].items():
        cells = [
            f"{c['diff']:+.1f} [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]"
            for c in (per_suite[s] for s in SUITE_ORDER)
        ]
        status = analysis["contrast_status"].get(name, "judged")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {status} |")
    return lines


def _number(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _learning_and_compute(study: Study, analysis: dict[str, Any]) -> list[str]:
    """Each row's fine-tuning end point, learn flag and evaluation length; then the tokens and
    training FLOPs of each row's pretraining."""
    seed = study.preset.seeds[0]
    lines = [
        "",
        "## Fine-tuning: did each row learn?",
        "",
        f"Last logged step of the first seed ({seed}; curves under Figures). Evaluation length: "
        "the preset's max_length capped at the model's trained positions "
        "(max_position_embeddings) unless the row sets its own.",
        "",
        "| row | step | loss | batch accuracy | doc-doc cosine | held-out accuracy [95% CI] | "
        f"minus `{CONTROL}` [95% CI] | above `{CONTROL}` on | eval max_length | learned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, info in analysis["learning"].items():
        final = info.get("finetune_final") or {}
        beats = info["beats_control"]
        above = "–" if beats is None else f"{len(beats)}/{len(SUITE_ORDER)} suites"
        lengths = sorted({str(x) for x in info.get("eval_max_length", [])})
        lines.append(
            f"| `{name}` | {_number(final.get('step'), '.0f')} | "
            f"{_number(final.get('loss'), '.3f')} | {_number(final.get('accuracy'), '.3f')} | "
            f"{_number(final.get('doc_cosine'), '.3f')} | {_heldout_cells(info.get('heldout'))} | "
            f"{above} | {', '.join(lengths)} | {info['status']} |"
        )
    lines += [
        "",
        "## Pretraining compute",
        "",
        "Tokens and training FLOPs (6 x parameters x tokens, from each LM's `pretrain.json`) "
        "summed over the LMs the row's model went through.",
        "",
        "| row | LMs | tokens | training FLOPs |",
        "|---|---|---|---|",
    ]
    for name, c in analysis["pretraining"].items():
        chain = " + ".join(f"`{lm}`" for lm in c["chain"])
        lines.append(
            f"| `{name}` | {chain} | {_number(c['tokens'], ',d')} | {_number(c['flops'], '.3g')} |"
        )
    return lines


def _heldout_cells(h: dict[str, Any] | None) -> str:
    """The held-out accuracy and its difference to the control, with CIs (two cells)."""
    if not h:
        return "– | –"
    acc = f"{h['accuracy']:.3f} [{h['ci'][0]:.3f}, {h['ci'][1]:.3f}]"
    if "diff" not in h:
        return f"{acc} | –"
    return f"{acc} | {h['diff']:+.3f} [{h['diff_ci'][0]:+.3f}, {h['diff_ci'][1]:+.3f}]"


def _figures_and_tasks(analysis: dict[str, Any], has_pt: bool, has_ft: bool) -> list[str]:
    """The figures, then the per-task table."""
    lines = ["", "## Figures", ""]
    lines.append("![passkey and needle by length](figures/longdoc_lengths.png)")
    lines.append("")
    lines.append("![evidence position](figures/longdoc_position.png)")
    if has_pt:
        lines += ["", "![pretraining curves](figures/pretraining.png)"]
    if has_ft:
        lines += ["", "![fine-tuning curves](figures/finetuning.png)"]
    lines += ["", "## Per task", ""]
    names = list(analysis["per_task"])
    lines.append("| task | " + " | ".join(f"`{n}`" for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for task in analysis["tasks"]:
        cells = [_fmt(analysis["per_task"][n][task]["score"]) for n in names]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def _provenance_and_sources(analysis: dict[str, Any]) -> list[str]:
    p = analysis["provenance"]
    lines = [
        "",
        "## Provenance",
        "",
        f"- command: `{p['command']}`",
        f"- git commit: `{p['git_commit']}`",
        f"- machine: {json.dumps(p['machine'])}",
        f"- wall time of all stages: {p['total_stage_wall_time_s'] / 60:.1f} min "
        "(per stage in `summary.json` and `stages/`)",
        "",
        "## Sources",
        "",
    ]
    for name, fs in analysis["files"].items():
        lines.append(f"- `{name}`: " + ", ".join(f"`{f}`" for f in fs))
    lines.append("")
    return lines


def render_report(
    study: Study, rows: Sequence[Row], analysis: dict[str, Any], has_pt: bool, has_ft: bool
) -> str:
    """``report.md`` from the analysis (every number in it is in ``summary.json``)."""
    lines = _main_table(study, rows, analysis) + _design(study) + _claims(analysis)
    lines += _learning_and_compute(study, analysis)
    if study.preset.changes_after_looking:
        lines += ["", "## Changes made after looking at results", ""]
        lines += [f"- {c}" for c in study.preset.changes_after_looking]
    lines += _figures_and_tasks(analysis, has_pt, has_ft)
    lines += _provenance_and_sources(analysis)
    return "\n".join(lines)


# ================================================================================ export
def _best_seed(
    study: Study, summary: dict[str, Any], rows: Sequence[Row]
) -> tuple[float, Row, int, dict[str, float]]:
    """The seed of the DiffEmbed row (``PRIMARY[0]``, else any evaluated row of a diffusion LM
    with bidirectional attention) with the highest mean suite score: (mean, row, seed, scores)."""
    diffusion = [
        r
        for r in rows
        if r.attention == "bidirectional" and LM_BY_NAME[r.base].objective == "diffusion"
    ]
    if any(r.name == PRIMARY[0] and r.name in summary["table"] for r in diffusion):
        diffusion = [r for r in diffusion if r.name == PRIMARY[0]]
    candidates = []
    for row in diffusion:
        if row.name not in summary["table"]:
            continue
        for i, seed in enumerate(study.preset.seeds):
            scores = {s: summary["table"][row.name][s]["seed_scores"][i] for s in SUITE_ORDER}
            candidates.append((float(np.mean(list(scores.values()))), row, seed, scores))
    if not candidates:
        raise ConfigError(f"{study.out}: no evaluated diffusion row to export")
    return max(candidates, key=lambda c: c[0])


def _copy_model(src: Path, dest: Path, max_length: int | None) -> None:
    """Copy a model directory's files to ``dest``, saving ``max_length`` in its settings."""
    for f in src.iterdir():
        if f.is_dir():
            shutil.copytree(f, dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)
    if max_length:
        write_max_length(dest, max_length)


def _origin(row: Row) -> str:
    """How the row's LM was made, in words."""
    init = LM_BY_NAME[row.base].init
    return f"adapted from the `{init}` LM" if init else "pretrained from scratch"


def _model_card(
    study: Study,
    summary: dict[str, Any],
    row: Row,
    seed: int,
    scores: dict[str, float],
    max_length: int | None,
) -> str:
    """The exported model's README.md (Hugging Face model card)."""
    table = "\n".join(
        f"| {SUITE_LABELS[s]} | {scores[s]:.1f} | {summary['table'][row.name][s]['score']:.1f} |"
        for s in SUITE_ORDER
    )
    pretrain_json = study.out / "logs" / "lm" / row.base / "pretrain.json"
    pt = json.loads(pretrain_json.read_text()) if pretrain_json.exists() else {}
    prov = summary["provenance"]
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [diffembed, diffusion-language-model, text-embedding]
---

# diffembed-tiny

A tiny text-embedding model from a masked-diffusion language model ({_origin(row)}) trained on
offline English text, then contrastively fine-tuned: row `{row.name}` ({row.label}), seed
{seed}, of the `{study.preset.name}` study of diffembed (`diffembed reproduce --preset
{study.preset.name}`). {pt.get("parameters", "?")} parameters; its last LM stage trained on
{pt.get("tokens_trained", "?")} tokens; attention {row.attention}; pooling {row.pooling};
max_length {max_length}. It is a demonstration and a test fixture, not a competitive encoder.

## Scores (x100, this run's evaluation suites; see the study's report.md)

| suite | this model (seed {seed}) | row mean over seeds |
|---|---|---|
{table}

It was chosen as the best seed of its row by the mean of these four scores, so
its numbers are optimistic for that reason (selection on the evaluation tasks).

## Made by

- command: `{prov["command"]}`
- git commit: `{prov["git_commit"]}`
- machine: {json.dumps(prov["machine"])}
- study wall time: {prov["total_stage_wall_time_s"] / 60:.1f} min

## Use

```python
from diffembed.model.embedder import Embedder
model = Embedder.load("models/diffembed-tiny")
vectors = model.encode_documents(["some text"])
```

`sentence_transformers.SentenceTransformer("models/diffembed-tiny")` loads it too.
"""


def export_best(study: Study, dest: Path, rows: Sequence[Row] = ROWS) -> Path:
    """Copy the best bidirectional diffusion embedding model of the run (the seed of the DiffEmbed
    row ``ar-diffusion-bi``, else of another bidirectional diffusion row, with the highest mean
    of its four suite scores) to ``dest``, with a model card, and return ``dest``.

    The saved ``max_length`` is the one the study evaluated it with, capped at the model's
    ``max_position_embeddings`` (positions beyond those were never trained). Selection uses the
    evaluation tasks themselves, which the card says.
    """
    from diffembed.model.model_dir import ModelDir, max_positions

    summary = read_json(study.out / "summary.json")
    mean, row, seed, scores = _best_seed(study, summary, rows)
    config = ModelDir(study.ft_dir(row, seed)).config
    positions = max_positions(config) or study.preset.eval.max_length
    max_length = min(study.preset.eval.max_length, positions)
    with atomic_dir(dest) as tmp:
        _copy_model(study.ft_dir(row, seed), tmp, max_length)
        card = _model_card(study, summary, row, seed, scores, max_length)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    logger.info("exported %s seed %d (mean %.1f) to %s", row.name, seed, mean, dest)
    return dest
