"""What a fine-tuning step trains on: task-homogeneous global batches, each pair's negatives, the
layout of one rank's share, and the task prompts the trained model keeps.

* ``BatchPlan``: global batches of one task each, deterministic from a seed;
* ``choose_negatives``: a pair's ``k`` negatives at a step (hard ones, else random ones);
* ``layout_batch`` -> ``BatchLayout``: the documents of a global batch and one rank's positives
  and excluded duplicates; ``tokenize_batch`` -> ``LocalBatch``: that share tokenized;
* ``task_prompts``, ``pairs_digest``: one prompt per task; the pairs' content hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from diffembed.errors import ConfigError, DiffembedError
from diffembed.formats.pairs import Pair

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)


class BatchPlan:
    """Task-homogeneous global batches, deterministic from a seed.

    Each epoch, the pairs of each task are shuffled and cut into global batches of
    ``global_batch_size`` (a task's last incomplete batch is left out that epoch; a different
    remainder is left out next epoch), then the batches of all tasks are shuffled together.
    Global step ``s`` takes batch ``s % batches_per_epoch`` of epoch ``s // batches_per_epoch``.
    Every rank computes the same plan and takes its own slice of each global batch.

    Args:
        tasks: the task of each pair, ``[N]``.
        global_batch_size: pairs per optimizer step, over all ranks.
        seed: the shuffling seed.
    """

    def __init__(self, tasks: Sequence[str], global_batch_size: int, seed: int) -> None:
        if global_batch_size < 1:
            raise ConfigError(f"global_batch_size must be >= 1, got {global_batch_size}")
        self.global_batch_size = global_batch_size
        self.seed = seed
        members: dict[str, list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            members[task].append(i)
        self.task_members: dict[str, list[int]] = dict(sorted(members.items()))
        small = [t for t, m in self.task_members.items() if len(m) < global_batch_size]
        if small:
            logger.warning(
                "tasks with fewer pairs than the global batch size %d are never trained on: %s",
                global_batch_size,
                ", ".join(f"{t} ({len(self.task_members[t])})" for t in small),
            )
        self.batches_per_epoch = sum(
            len(m) // global_batch_size for m in self.task_members.values()
        )
        if self.batches_per_epoch == 0:
            raise DiffembedError(
                f"no task has {global_batch_size} pairs: nothing to train on "
                f"(tasks: {', '.join(f'{t}={len(m)}' for t, m in self.task_members.items())})"
            )
        self._cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All global batches of ``epoch``: lists of pair indices, each list of one task."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[list[int]] = []
        g = self.global_batch_size
        for members in self.task_members.values():
            order = [members[i] for i in rng.permutation(len(members))]
            batches.extend(order[k : k + g] for k in range(0, len(order) - g + 1, g))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def global_batch(self, step: int) -> list[int]:
        """The pair indices of global batch ``step`` (0-based), ``[global_batch_size]``."""
        epoch, k = divmod(step, self.batches_per_epoch)
        return self.epoch_batches(epoch)[k]

    @staticmethod
    def rank_slice(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
        """Rank ``rank``'s contiguous share of a global batch (equal shares)."""
        if len(batch) % world_size:
            raise ValueError(f"batch of {len(batch)} does not split over {world_size} ranks")
        n = len(batch) // world_size
        return list(batch[rank * n : (rank + 1) * n])


def choose_negatives(
    pairs: Sequence[Pair],
    index: int,
    k: int,
    task_members: Sequence[int],
    seed: int,
    step: int,
) -> list[str]:
    """The ``k`` negatives of pair ``index`` at ``step``, deterministic from (seed, step, index).

    More than ``k`` hard negatives: ``k`` drawn without replacement. Fewer: all of them, then
    repeats. None: positives of other pairs of the same task (random negatives) that differ
    from this pair's positive.
    """
    if k == 0:
        return []
    pair = pairs[index]
    rng = np.random.default_rng([seed, step, index])
    negs = pair.negatives
    if len(negs) >= k:
        return [negs[i] for i in rng.choice(len(negs), size=k, replace=False)]
    if negs:
        extra = rng.choice(len(negs), size=k - len(negs), replace=True)
        return [*negs, *(negs[i] for i in extra)]
    out: list[str] = []
    for j in rng.permutation(len(task_members)):
        other = pairs[task_members[j]].positive
        if task_members[j] != index and other != pair.positive:
            out.append(other)
            if len(out) == k:
                return out
    raise DiffembedError(
        f"pair {index} (task {pair.task!r}) has no negatives and its task has fewer than {k} "
        "other distinct positives to draw random negatives from"
    )


@dataclass
class BatchLayout:
    """A global batch's documents and one rank's share of it.

    Attributes:
        documents: ``[G * (1 + k)]`` texts: for each pair, its positive then its negatives.
        local: positions of this rank's pairs in the global batch.
        pairs: ``[Bl]`` this rank's pairs.
        positives: ``[Bl]`` long, index of each local query's positive in ``documents``.
        exclude: ``[Bl, G * (1 + k)]`` bool, other copies of a query's positive text.
    """

    documents: list[str]
    local: range
    pairs: list[Pair]
    positives: torch.Tensor
    exclude: torch.Tensor

    def local_documents(self, k: int) -> list[str]:
        """This rank's documents (its pairs' positives and negatives, in order)."""
        first, last = self.local[0] * (1 + k), (self.local[-1] + 1) * (1 + k)
        return self.documents[first:last]


def duplicate_mask(documents: Sequence[str], positives: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` bool: True where candidate ``j`` is another copy of query ``i``'s positive text
    (``documents[positives[i]]``), so that a duplicate is neither a negative nor a rival.

    Args:
        documents: ``[M]`` candidate texts.
        positives: ``[B]`` long, the index in ``documents`` of each query's positive.
    """
    where: dict[str, list[int]] = defaultdict(list)
    for j, text in enumerate(documents):
        where[text].append(j)
    exclude = torch.zeros(len(positives), len(documents), dtype=torch.bool)
    for row, pos in enumerate(positives.tolist()):
        for j in where[documents[pos]]:
            if j != pos:
                exclude[row, j] = True
    return exclude


def layout_batch(
    pairs: Sequence[Pair],
    plan: BatchPlan,
    step: int,
    k: int,
    seed: int,
    rank: int,
    local_size: int,
) -> BatchLayout:
    """The layout of global batch ``step`` (``k`` negatives per pair) for rank ``rank`` taking
    ``local_size`` pairs."""
    global_idx = plan.global_batch(step)
    members = plan.task_members[pairs[global_idx[0]].task]
    documents: list[str] = []
    for i in global_idx:
        documents.append(pairs[i].positive)
        documents.extend(choose_negatives(pairs, i, k, members, seed, step))
    local = range(rank * local_size, (rank + 1) * local_size)
    positives = torch.tensor([g * (1 + k) for g in local], dtype=torch.long)
    exclude = duplicate_mask(documents, positives)
    local_pairs = [pairs[global_idx[g]] for g in local]
    return BatchLayout(documents, local, local_pairs, positives, exclude)


@dataclass
class LocalBatch:
    """One rank's share of a global batch, tokenized.

    Attributes:
        step: the 0-based global step.
        query_ids, query_masks: ``[Bl]`` token ids / pool masks of the queries (instruction
            included in ids; the pool mask leaves it out when instructions are excluded).
        doc_ids, doc_masks: ``[Bl * (1 + k)]``: for each local query, positive then negatives.
        positives: ``[Bl]`` long, index of each local query's positive among the gathered
            ``G * (1 + k)`` documents of the global batch.
        exclude: ``[Bl, G * (1 + k)]`` bool, other copies of a query's positive text.
        tokens: non-pad tokens of this rank's queries and documents.
        truncated: texts cut to the maximum length.
    """

    step: int
    query_ids: list[list[int]]
    query_masks: list[list[int]]
    doc_ids: list[list[int]]
    doc_masks: list[list[int]]
    positives: torch.Tensor
    exclude: torch.Tensor
    tokens: int
    truncated: int


def _tokenize_queries(
    embedder: Embedder, pairs: list[Pair], max_length: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids and pool masks of the pairs' queries, each with its instruction (tokenized
    one instruction at a time), and how many were truncated."""
    ids: list[list[int]] = [[] for _ in pairs]
    masks: list[list[int]] = [[] for _ in pairs]
    truncated = 0
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[p.instruction].append(i)
    for instruction, rows in groups.items():
        prefix = embedder.instruction_prefix(instruction)
        texts = [pairs[i].query for i in rows]
        tok = embedder.tokenize(texts, prefix, True, warn=False, max_length=max_length)
        truncated += tok.truncated
        for j, i in enumerate(rows):
            ids[i], masks[i] = tok.ids[j], tok.masks[j]
    return ids, masks, truncated


def tokenize_batch(
    layout: BatchLayout,
    step: int,
    k: int,
    embedder: Embedder,
    lengths: tuple[int, int],
    device: torch.device,
) -> LocalBatch:
    """This rank's share of a global batch (``layout``, ``k`` negatives per pair) tokenized by
    ``embedder``: queries with their instructions, to ``lengths[0]`` tokens; documents to
    ``lengths[1]``; the positives and exclusions moved to ``device``."""
    q_ids, q_masks, q_truncated = _tokenize_queries(embedder, layout.pairs, lengths[0])
    docs = embedder.tokenize(layout.local_documents(k), "", True, warn=False, max_length=lengths[1])
    return LocalBatch(
        step=step,
        query_ids=q_ids,
        query_masks=q_masks,
        doc_ids=docs.ids,
        doc_masks=docs.masks,
        positives=layout.positives.to(device),
        exclude=layout.exclude.to(device),
        tokens=sum(map(len, q_ids)) + sum(map(len, docs.ids)),
        truncated=q_truncated + docs.truncated,
    )


def pairs_digest(pairs: Sequence[Pair]) -> str:
    """Hex SHA-256 of the pairs' content in order (independent of the file's formatting)."""
    h = hashlib.sha256()
    for p in pairs:
        row = [p.query, p.positive, list(p.negatives), p.instruction, p.task]
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def task_prompts(pairs: Sequence[Pair]) -> dict[str, str]:
    """One prompt per task name: the task's instruction (the most frequent one, with a logged
    warning, when a task uses several)."""
    by_task: dict[str, Counter[str]] = defaultdict(Counter)
    for p in pairs:
        by_task[p.task][p.instruction] += 1
    prompts: dict[str, str] = {}
    for task, counts in sorted(by_task.items()):
        instruction, n = counts.most_common(1)[0]
        if len(counts) > 1:
            logger.warning(
                "task %r uses %d different instructions; its saved prompt is the most frequent "
                "(%d of %d pairs): %r",
                task,
                len(counts),
                n,
                sum(counts.values()),
                instruction,
            )
        prompts[task] = instruction
    if "document" in prompts:
        raise DiffembedError(
            "task name 'document' is reserved: a saved prompt of that name would be applied to "
            "documents by Embedder.encode_documents; rename the task"
        )
    return prompts
