"""The study's gate: held-out in-batch accuracy of fine-tuned models, and whether a row beats the
control by it (:data:`~diffembed.study.design.GATE_RULE`).

Held-out pairs are a seeded sample of the finetune split's pairs that no row trains on. They are
scored exactly as training scores a batch: ``batch`` queries of one task, each against every
positive and first hard negative of the batch, other copies of a query's positive neither right
nor wrong. The batches come in one fixed order, so that accuracies of two models pair up batch by
batch and the gate can resample batches (a paired bootstrap).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.formats.pairs import Pair

HELDOUT_PAIRS = "heldout.jsonl"  # beside a study's training pairs: the gate's held-out pairs


def split_heldout(pairs: Sequence[Pair], n: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded split of ``pairs``: ``(training, held-out)`` with ``n`` pairs of distinct
    queries held out and every pair whose query is one of theirs kept out of training (a query
    text may recur in a split: the held-out score must not have seen it)."""
    queries = {p.query for p in pairs}
    if not 0 <= n < len(queries):
        raise ValueError(f"cannot hold out {n} of {len(queries)} distinct queries")
    held: list[Pair] = []
    seen: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(pairs)):
        if len(held) == n:
            break
        if pairs[i].query not in seen:
            held.append(pairs[i])
            seen.add(pairs[i].query)
    return without_queries(pairs, held), held


def without_queries(pairs: Sequence[Pair], held: Sequence[Pair]) -> list[Pair]:
    """``pairs`` less those whose query text is one of ``held``'s, in their order."""
    queries = {p.query for p in held}
    return [p for p in pairs if p.query not in queries]


def heldout_batches(pairs: Sequence[Pair], batch: int) -> list[list[Pair]]:
    """Task-homogeneous batches of exactly ``batch`` pairs, tasks in order of first appearance
    and pairs in their order; a task's last ``len % batch`` pairs are left out."""
    by_task: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_task[p.task].append(p)
    return [
        task_pairs[k : k + batch]
        for task_pairs in by_task.values()
        for k in range(0, len(task_pairs) - batch + 1, batch)
    ]


def batch_accuracies(model: str | Path, batches: Sequence[Sequence[Pair]]) -> np.ndarray:
    """In-batch accuracy of ``model`` (a model directory) on each batch: ``[len(batches)]``,
    float32 embeddings."""
    import torch

    from diffembed.model.embedder import Embedder
    from diffembed.train.batching import duplicate_mask
    from diffembed.train.contrastive import in_batch_accuracy, info_nce_loss

    embedder = Embedder.load(model, precision="fp32")
    out = np.zeros(len(batches))
    for b, chunk in enumerate(batches):
        docs = [t for p in chunk for t in (p.positive, *p.negatives[:1])]
        per = len(docs) // len(chunk)
        if per * len(chunk) != len(docs):
            raise ValueError("held-out pairs need the same number of hard negatives (0 or >= 1)")
        q = torch.empty(len(chunk), embedder.dim)
        for instruction in dict.fromkeys(p.instruction for p in chunk):  # one encode each
            rows = [i for i, p in enumerate(chunk) if p.instruction == instruction]
            texts = [chunk[i].query for i in rows]
            q[rows] = torch.from_numpy(embedder.encode(texts, prompt=instruction))
        d = torch.from_numpy(embedder.encode(docs))
        positives = torch.arange(len(chunk)) * per
        _, logits = info_nce_loss(q, d, positives, exclude=duplicate_mask(docs, positives))
        out[b] = float(in_batch_accuracy(logits, positives))
    return out


def gate(
    accuracies: Mapping[str, np.ndarray],
    control: str,
    n_boot: int,
    confidence: float,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per model: held-out accuracy (mean over seeds and batches) with its bootstrap CI, and for
    every model but ``control`` the paired difference to ``control`` with its CI and whether
    the CI is above 0 (``learned``).

    Args:
        accuracies: per model, ``[seeds, batches]`` accuracies on the same batches.
        control: the model the others are compared to.
        n_boot: bootstrap resamples of the batches.
        confidence: the CI's coverage (e.g. 0.95).
    """
    per_batch = {name: np.asarray(a, dtype=float).mean(axis=0) for name, a in accuracies.items()}
    n_batches = {len(v) for v in per_batch.values()}
    if len(n_batches) != 1:
        raise ValueError(f"models were measured on different batches: {sorted(n_batches)}")
    n = n_batches.pop()
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    tail = 100 * (1 - confidence) / 2

    def interval(values: np.ndarray) -> list[float]:
        boots = values[idx].mean(axis=1)
        return [float(np.percentile(boots, tail)), float(np.percentile(boots, 100 - tail))]

    out: dict[str, dict[str, Any]] = {}
    for name, values in per_batch.items():
        info: dict[str, Any] = {
            "accuracy": float(values.mean()),
            "ci": interval(values),
            "seeds": [float(s) for s in np.asarray(accuracies[name]).mean(axis=1)],
            "batches": n,
        }
        if name != control and control in per_batch:
            diff = values - per_batch[control]
            lo, hi = interval(diff)
            info.update(diff=float(diff.mean()), diff_ci=[lo, hi], learned=lo > 0)
        out[name] = info
    return out
