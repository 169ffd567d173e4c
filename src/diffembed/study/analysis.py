"""The study's numbers: per-query scores loaded from the evaluation results, suite scores (group
means), paired bootstrap CIs over queries, contrasts and the verdicts on the paper's claims.

Everything :func:`analyse` returns is JSON-able; it becomes ``summary.json`` and every number of
``report.md`` comes from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.study.design import (
    CLAIMS,
    CONTRASTS,
    CONTROL,
    GATE_CONFIDENCE,
    PRIMARY,
    SUITE_ORDER,
    Claim,
    Row,
    lms_needed,
)

if TYPE_CHECKING:
    from diffembed.study.stages import Study


@dataclass
class TaskScores:
    """One task's per-query scores for one model: seeds x queries (aligned query ids)."""

    suite: str
    task: str
    metric: str
    kind: str
    ids: list[str]
    values: np.ndarray  # [seeds, queries]
    gold: np.ndarray | None = None  # similarity tasks: gold scores [queries]
    main_scores: list[float] = field(default_factory=list)  # per seed, as evaluate wrote it

    def statistic(self, idx: np.ndarray | None = None) -> float:
        """The task score (mean over seeds) on the queries ``idx`` (all when None)."""
        v = self.values if idx is None else self.values[:, idx]
        if self.kind == "similarity":
            g = self.gold if idx is None else self.gold[idx]
            corr = _spearman if self.metric == "spearman" else _pearson
            return float(np.mean([corr(row, g) for row in v]))
        return float(v.mean())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson on average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return _pearson(rankdata(a), rankdata(b))


def task_group(task: str) -> str:
    """The group a task counts in: passkey and needle lengths average into one score each."""
    for prefix in ("passkey-", "needle-"):
        if task.startswith(prefix):
            return prefix[:-1]
    return task


def _gold_scores(task_dir: Path, ids: Sequence[str]) -> np.ndarray:
    """The gold scores of a similarity task's pairs ``ids``, read from its task folder."""
    from diffembed.formats.tasks import load_task

    task = load_task(task_dir)
    by_id = {p.id: p.score for p in task.pairs}
    return np.array([by_id[i] for i in ids], dtype=np.float64)


def load_scores(files: Sequence[Path]) -> dict[str, TaskScores]:
    """Per-query scores of one model over seeds (one eval JSON per seed), keyed suite/task."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    for f in files:
        summary = json.loads(f.read_text())
        for rec in summary["tasks"]:
            per_task.setdefault(f"{rec['suite']}/{rec['task']}", []).append(rec)
    out: dict[str, TaskScores] = {}
    for key, recs in per_task.items():
        if len(recs) != len(files):
            raise ValueError(f"{key}: evaluated in {len(recs)} of {len(files)} result files")
        ids = sorted(recs[0]["per_query"])
        for r in recs[1:]:
            if sorted(r["per_query"]) != ids:
                raise ValueError(f"{key}: different queries across seeds")
        values = np.array([[r["per_query"][i] for i in ids] for r in recs], dtype=np.float64)
        similarity = recs[0]["kind"] == "similarity"
        out[key] = TaskScores(
            suite=recs[0]["suite"],
            task=recs[0]["task"],
            metric=recs[0]["metric"],
            kind=recs[0]["kind"],
            ids=ids,
            values=values,
            gold=_gold_scores(Path(recs[0]["task_dir"]), ids) if similarity else None,
            main_scores=[float(r["main_score"]) for r in recs],
        )
    return out


def _group_mean(
    scores: dict[str, TaskScores], suite: str, value: Callable[[str, TaskScores], float]
) -> float:
    """Mean over the suite's task groups of the mean of ``value(key, task)`` in each group, x100
    (NaN when the suite has no task)."""
    groups: dict[str, list[float]] = {}
    for key, ts in scores.items():
        if ts.suite == suite:
            groups.setdefault(task_group(ts.task), []).append(value(key, ts))
    if not groups:
        return float("nan")
    return 100.0 * float(np.mean([np.mean(v) for v in groups.values()]))


def suite_score(
    scores: dict[str, TaskScores], suite: str, idx: dict[str, np.ndarray] | None
) -> float:
    """Mean over task groups of the suite (groups: mean of their tasks), x100."""
    return _group_mean(scores, suite, lambda k, ts: ts.statistic(None if idx is None else idx[k]))


def bootstrap_indices(
    scores: dict[str, TaskScores], n: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``n`` resamplings (with replacement) of every task's queries, shared by all models."""
    rng = np.random.default_rng(seed)
    keys = sorted(scores)
    sizes = {k: len(scores[k].ids) for k in keys}
    return [{k: rng.integers(0, sizes[k], sizes[k]) for k in keys} for _ in range(n)]


def ci(values: Sequence[float]) -> tuple[float, float]:
    """The 2.5% and 97.5% percentiles."""
    arr = np.asarray([v for v in values if not math.isnan(v)])
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))


def per_seed_suite(scores: dict[str, TaskScores], suite: str) -> list[float]:
    """The suite score of each seed separately (x100), from the main scores evaluate wrote."""
    n_seeds = len(next(iter(scores.values())).main_scores)
    return [
        _group_mean(scores, suite, lambda _, ts, s=s: ts.main_scores[s]) for s in range(n_seeds)
    ]


def verdict(claim: Claim, diff: float, lo: float, hi: float) -> str:
    """The rule fixed before the run: CI of diffusion minus AR (points)."""
    if math.isnan(lo):
        return "inconclusive"
    if claim.kind == "parity":
        if -claim.margin <= lo and hi <= claim.margin:
            return "reproduced"
        if lo > claim.margin or hi < -claim.margin:
            return "not reproduced"
        return "inconclusive"
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "inconclusive"


# ================================================================================ analyse
def _load_models(
    study: Study, rows: Sequence[Row]
) -> tuple[dict[str, dict[str, TaskScores]], dict[str, list[str]], list[str]]:
    """Scores of every row and reference on the tasks all of them were evaluated on, the result
    files they came from (relative to the study's folder) and those tasks (sorted)."""
    models: dict[str, dict[str, TaskScores]] = {}
    files: dict[str, list[str]] = {}
    for row in rows:
        paths = [study.eval_file(row.name, s) for s in study.preset.seeds]
        models[row.name] = load_scores(paths)
        files[row.name] = [str(p.relative_to(study.out)) for p in paths]
    for ref in study.preset.references:
        path = study.eval_file(ref, None)
        models[ref] = load_scores([path])
        files[ref] = [str(path.relative_to(study.out))]
    common = set.intersection(*(set(m) for m in models.values()))
    models = {k: {t: v for t, v in m.items() if t in common} for k, m in models.items()}
    return models, files, sorted(common)


def _suite_cell(
    scores: dict[str, TaskScores], suite: str, boots: list[dict[str, np.ndarray]]
) -> tuple[dict[str, Any], list[float]]:
    """One cell of the main table (score, CI, per-seed scores) and its bootstrap samples."""
    point = suite_score(scores, suite, None)
    samples = [suite_score(scores, suite, b) for b in boots]
    seeds = per_seed_suite(scores, suite) if not math.isnan(point) else []
    lo, hi = ci(samples)
    cell = {
        "score": point,
        "ci95": [lo, hi],
        "seed_scores": seeds,
        "seed_std": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else None,
    }
    return cell, samples


def _contrasts(
    table: dict[str, dict[str, Any]], boot_values: dict[str, dict[str, list[float]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Differences of suite scores (a minus b) with paired bootstrap CIs, for :data:`CONTRASTS`."""
    contrasts: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b in CONTRASTS:
        if a not in table or b not in table:
            continue
        contrasts[f"{a} - {b}"] = {}
        for suite in SUITE_ORDER:
            d = table[a][suite]["score"] - table[b][suite]["score"]
            samples = [
                x - y for x, y in zip(boot_values[a][suite], boot_values[b][suite], strict=True)
            ]
            lo, hi = ci(samples)
            contrasts[f"{a} - {b}"][suite] = {"diff": d, "ci95": [lo, hi]}
    return contrasts


def learning(
    table: dict[str, dict[str, Any]],
    names: Sequence[str],
    gated: dict[str, dict[str, Any]],
    control: str = CONTROL,
) -> dict[str, dict[str, Any]]:
    """Per row of ``names``: whether it learned by the gate (``gated``, from
    :func:`~diffembed.study.heldout.gate`: held-out accuracy above ``control``'s), with its
    held-out numbers, and, as information, the suites on which its score is above
    ``control``'s (a tie or a missing score does not count).

    ``learned`` is None for the control itself and when a held-out accuracy is missing."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        beats = None
        if name != control and control in table and name in table:
            beats = [
                s for s in SUITE_ORDER if table[name][s]["score"] > table[control][s]["score"]
            ]  # NaN compares False
        learned: bool | None = None
        if name == control:
            status = "control"
        elif control not in gated:
            status = f"not checked: no `{control}` held-out accuracy"
        elif name not in gated:
            status = "not checked: no held-out accuracy"
        else:
            learned = bool(gated[name]["learned"])
            status = "learned" if learned else "did not learn"
        out[name] = {
            "learned": learned,
            "status": status,
            "heldout": gated.get(name),
            "beats_control": beats,
        }
    return out


def load_heldout(study: Study, rows: Sequence[Row]) -> dict[str, np.ndarray]:
    """Held-out accuracies ``[seeds, batches]`` of every row measured for all its seeds."""
    out: dict[str, np.ndarray] = {}
    for row in rows:
        paths = [study.heldout_file(row.name, s) for s in study.preset.seeds]
        if all(p.exists() for p in paths):
            out[row.name] = np.array([json.loads(p.read_text())["accuracies"] for p in paths])
    return out


def gate_rows(study: Study, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """The gate's numbers per row (:func:`~diffembed.study.heldout.gate`); empty when no
    held-out batch was measured."""
    from diffembed.study.heldout import gate

    accuracies = load_heldout(study, rows)
    if not accuracies or not next(iter(accuracies.values())).shape[1]:
        return {}
    return gate(accuracies, CONTROL, study.preset.bootstrap, GATE_CONFIDENCE)


def contrast_status(a: str, b: str, learned: dict[str, dict[str, Any]]) -> str:
    """``judged``, or ``not judged: <row> did not learn`` when a side of ``a - b`` did not."""
    failed = [n for n in (a, b) if learned.get(n, {}).get("learned") is False]
    return f"not judged: {', '.join(failed)} did not learn" if failed else "judged"


def _verdicts(
    contrasts: dict[str, dict[str, dict[str, Any]]], learned: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One verdict per claim, from the primary contrast (judged only when both rows learned)."""
    verdicts = []
    primary = contrasts.get(f"{PRIMARY[0]} - {PRIMARY[1]}", {})
    status = contrast_status(*PRIMARY, learned)
    for claim in CLAIMS:
        c = primary.get(claim.suite)
        if c is None:
            continue
        verdicts.append(
            {
                "suite": claim.suite,
                "claim": claim.kind,
                "paper_gain": claim.paper_gain,
                "measured": c["diff"],
                "ci95": c["ci95"],
                "verdict": verdict(claim, c["diff"], *c["ci95"]) if status == "judged" else status,
            }
        )
    return verdicts


def analyse(study: Study, rows: Sequence[Row]) -> dict[str, Any]:
    """Scores, CIs and verdicts from the eval result files; JSON-able (``summary.json``)."""
    models, files, tasks = _load_models(study, rows)
    boots = bootstrap_indices(models[rows[0].name], study.preset.bootstrap)
    table: dict[str, dict[str, Any]] = {}
    boot_values: dict[str, dict[str, list[float]]] = {}
    for name, scores in models.items():
        table[name] = {}
        boot_values[name] = {}
        for suite in SUITE_ORDER:
            table[name][suite], boot_values[name][suite] = _suite_cell(scores, suite, boots)
    contrasts = _contrasts(table, boot_values)
    learned = learning(table, [r.name for r in rows], gate_rows(study, rows))
    for name, info in learned.items():
        info["finetune_final"] = finetune_final(study, name)
        info["eval_max_length"] = eval_lengths(study, name)
    per_task = {
        name: {
            key: {"score": 100 * ts.statistic(), "seed_scores": [100 * s for s in ts.main_scores]}
            for key, ts in sorted(scores.items())
        }
        for name, scores in models.items()
    }
    return {
        "table": table,
        "contrasts": contrasts,
        "contrast_status": {
            f"{a} - {b}": contrast_status(a, b, learned)
            for a, b in CONTRASTS
            if f"{a} - {b}" in contrasts
        },
        "verdicts": _verdicts(contrasts, learned),
        "learning": learned,
        "pretraining": pretraining_compute(study, rows),
        "per_task": per_task,
        "files": files,
        "tasks": tasks,
    }


# ================================================================================ checks
def finetune_log(study: Study, row: str) -> Path:
    """The fine-tuning log (``log.csv``) of ``row``'s first seed, as kept in ``logs/``."""
    return study.out / "logs" / "ft" / row / f"seed{study.preset.seeds[0]}" / "log.csv"


def finetune_final(study: Study, row: str) -> dict[str, float] | None:
    """Loss, accuracy and document-document cosine at the last logged step of ``row``'s first
    seed (None when its log is missing)."""
    import csv

    path = finetune_log(study, row)
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    if not records:
        return None
    last = records[-1]
    keys = ("step", "loss", "accuracy", "doc_cosine")
    return {k: float(last[k]) for k in keys if last.get(k) not in (None, "")}


def eval_lengths(study: Study, row: str) -> list[int | None]:
    """The ``max_length`` each seed of ``row`` was evaluated with, from its result files."""
    lengths = []
    for seed in study.preset.seeds:
        data = json.loads(study.eval_file(row, seed).read_text())
        lengths.append(data.get("settings", {}).get("max_length"))
    return lengths


def pretraining_compute(study: Study, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Per row: the LMs its model went through (e.g. ``ar`` then ``ar-diffusion``), the tokens
    each trained on and their training FLOPs (6 x parameters x tokens), from ``pretrain.json``
    in ``logs/lm/``, and the sums over that chain (None when a log is missing). The ``random``
    LM is never trained: 0 tokens."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        chain: dict[str, dict[str, Any] | None] = {}
        for lm in lms_needed([row.base]):
            path = study.out / "logs" / "lm" / lm.name / "pretrain.json"
            if lm.objective == "random":
                chain[lm.name] = {"tokens": 0, "parameters": None, "flops": 0.0}
            elif path.exists():
                info = json.loads(path.read_text())
                tokens, params = int(info["tokens_trained"]), int(info["parameters"])
                chain[lm.name] = {
                    "tokens": tokens,
                    "parameters": params,
                    "flops": 6.0 * params * tokens,
                }
            else:
                chain[lm.name] = None
        known = all(c is not None for c in chain.values())
        out[row.name] = {
            "chain": chain,
            "tokens": sum(c["tokens"] for c in chain.values() if c) if known else None,
            "flops": sum(c["flops"] for c in chain.values() if c) if known else None,
        }
    return out
