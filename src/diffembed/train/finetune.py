"""Contrastive fine-tuning of an embedding model: the DiffEmbed recipe.

``diffembed finetune --model DIR --pairs FILE --out DIR`` trains a backbone on
``(query, positive, hard negatives)`` pairs (see ``diffembed.formats.pairs``) with InfoNCE on cosine
similarity, LoRA (or full fine-tuning), bf16 autocast with fp32 master weights, optional gradient
checkpointing and GradCache, and data parallelism across processes (``torchrun``; gloo on CPU,
NCCL on GPU). The output directory is a complete embedding model written by ``Embedder.save``
(sentence-transformers layout) with LoRA merged into the weights and one prompt per task name;
``OUT/training/`` holds the per-step log (CSV), its plot (PNG) and the run's settings.

The parts, each usable alone:

* ``info_nce_loss``: the loss as a pure function;
* ``BatchPlan``: task-homogeneous global batches, deterministic from a seed, sliced per rank;
* ``Trainer``: model set-up, ``forward_backward`` (plain or GradCache), checkpoints, the loop;
* ``finetune(FinetuneConfig)``: the whole run; ``add_finetune_parser``: the CLI verb.

How a step works. The global batch (``G`` pairs, all of one task) is the same on every rank;
rank ``r`` of ``W`` embeds queries ``r*G/W ... (r+1)*G/W - 1`` with their instruction and their
documents (positive first, then ``k`` hard negatives). Document embeddings are all-gathered with
autograd (``gather_with_grad``), so each query is scored against all
``G*(1+k)`` documents of the global batch and gradients reach the rank that computed each
document. Each rank's loss is the mean over its queries; gradients are summed across ranks and
divided by ``W``, which is the gradient of the mean loss over the global batch: ``W`` processes
x ``G/W`` pairs compute what one process computes with ``G`` pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffembed.formats.pairs import Pair, read_pairs
from diffembed.io import atomic_dir, atomic_write, write_json
from diffembed.model.backbone import ATTENTIONS
from diffembed.model.embedder import Embedder
from diffembed.model.pooling import POOLINGS
from diffembed.model.precision import autocast
from diffembed.train.contrastive import (
    CollapseMonitor,
    in_batch_accuracy,
    info_nce_loss,
    mean_offdiag_cosine,
)

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
LOG_COLUMNS: tuple[str, ...] = (
    "step",
    "loss",
    "accuracy",
    "doc_cosine",
    "scale",
    "lr",
    "grad_norm",
    "tokens",
    "tokens_per_s",
    "seconds",
)
CHECKPOINT_FORMAT = 1
# Settings that must match between a checkpoint and the run resuming from it.
_RESUME_KEYS: tuple[str, ...] = (
    "model",
    "pairs_sha256",
    "attention",
    "pooling",
    "lora_r",
    "lora_dropout",
    "global_batch_size",
    "hard_negatives",
    "max_query_length",
    "max_doc_length",
    "exclude_instruction",
    "seed",
    "scale",
    "initial_scale",
    "scale_warmup_steps",
)
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ------------------------------------------------------------------------------ schedule
def scale_factor(step: int, scale: float, initial: float | None, warmup_steps: int) -> float:
    """The similarity scale at 0-based ``step``: ``initial * (scale / initial) ** (step /
    warmup_steps)`` during the warm-up (geometric, i.e. the temperature falls by a constant
    factor per step), then ``scale``. No warm-up when ``initial`` is None or ``warmup_steps``
    is 0."""
    if initial is None or warmup_steps <= 0 or step >= warmup_steps:
        return scale
    return initial * (scale / initial) ** (step / warmup_steps)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier at 0-based ``step``: linear warm-up over ``warmup_steps`` steps
    (from ``1/warmup_steps``) to 1, then linear decay reaching 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


# ------------------------------------------------------------------------------ batching
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
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
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
            raise ValueError(
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
    raise ValueError(
        f"pair {index} (task {pair.task!r}) has no negatives and its task has fewer than {k} "
        "other distinct positives to draw random negatives from"
    )


class StepResult(NamedTuple):
    """What one forward/backward pass measured: loss and in-batch accuracy (tensors inside the
    step, floats once averaged over ranks) and the mean cosine between the global batch's
    documents (the collapse meter)."""

    loss: Any
    accuracy: Any
    doc_cosine: float


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


# ------------------------------------------------------------------------------ config
@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (the CLI options, same names with ``_``).

    Lengths are in tokens (instruction and special tokens included); ``lr`` is the peak learning
    rate of AdamW; ``scale`` multiplies cosine similarities (1 / temperature).

    The similarity scale warms up from ``initial_scale`` (5) to ``scale`` (20) over
    ``scale_warmup_steps``; the paper's constant 50 is ``scale=50, initial_scale=None``. Why:
    a model whose embeddings do not yet rank well pays at scale 50 for every random similarity
    difference (loss 9-17 against ln(32) = 3.5 for chance on our pairs), and the cheapest way
    down is to make every embedding alike (one shared vector added to every token); runs that
    started at 50 collapsed within 3-20 steps (mean cosine between documents 0.2 -> 0.95+) and
    stayed at chance. At scale 5 random similarities cost little and the loss follows
    relevance. Ending at 20 rather than 50 gave the same held-out accuracy on our pairs with
    documents kept further apart (mean cosine 0.39 vs 0.71 after 300 steps).
    """

    model: Path
    pairs: Path
    out: Path
    attention: str | None = None
    pooling: str | None = None
    exclude_instruction: bool = False
    lora_r: int = 16
    lora_dropout: float = 0.05
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 100
    steps: int = 1000
    global_batch_size: int = 16
    hard_negatives: int = 1
    max_query_length: int = 512
    max_doc_length: int = 512
    scale: float = 20.0
    initial_scale: float | None = 5.0
    scale_warmup_steps: int = 100
    gradient_checkpointing: bool = False
    bf16: bool = True
    seed: int = 0
    mini_batch: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    checkpoint_dir: Path | None = None
    resume: str | None = None
    device: str = "auto"
    log_every: int = 10
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.model, self.pairs, self.out = Path(self.model), Path(self.pairs), Path(self.out)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)
        checks = [
            (self.attention in (None, *ATTENTIONS), f"attention must be one of {ATTENTIONS}"),
            (self.pooling in (None, *POOLINGS), f"pooling must be one of {POOLINGS}"),
            (self.lora_r >= 0, "lora_r must be >= 0 (0 = full fine-tuning)"),
            (0.0 <= self.lora_dropout < 1.0, "lora_dropout must be in [0, 1)"),
            (self.lr > 0, "lr must be > 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.global_batch_size >= 1, "global_batch_size must be >= 1"),
            (self.hard_negatives >= 0, "hard_negatives must be >= 0"),
            (self.max_query_length >= 2, "max_query_length must be >= 2"),
            (self.max_doc_length >= 2, "max_doc_length must be >= 2"),
            (self.scale > 0, "scale must be > 0"),
            (
                self.initial_scale is None or self.initial_scale > 0,
                "initial_scale must be > 0",
            ),
            (self.scale_warmup_steps >= 0, "scale_warmup_steps must be >= 0"),
            (self.mini_batch >= 0, "mini_batch must be >= 0 (0 = no GradCache)"),
            (self.save_every >= 0, "save_every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 = no clipping)"),
            (self.log_every >= 1, "log_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def checkpoints(self) -> Path:
        """Where checkpoints go: ``checkpoint_dir`` or ``OUT-checkpoints`` beside ``out``."""
        return self.checkpoint_dir or self.out.with_name(self.out.name + "-checkpoints")

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-able values (paths as strings)."""
        out = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


# ------------------------------------------------------------------------------ helpers
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
        raise ValueError(
            "task name 'document' is reserved: a saved prompt of that name would be applied to "
            "documents by Embedder.encode_documents; rename the task"
        )
    return prompts


def embed_tokens(
    view: Embedder,
    ids: list[list[int]],
    masks: list[list[int]],
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Differentiable forward of tokenized texts through ``view.backbone`` and its pooling.

    Same padding, pad-aware position ids and pooling as ``Embedder.encode``, without
    ``inference_mode`` and without normalisation (the loss normalises). The backbone runs
    under ``autocast``; pooling runs in float32 outside it.

    Args:
        view: the Embedder whose backbone, tokenizer, pooling and padding side are used.
        ids: ``[n]`` lists of token ids; masks: ``[n]`` 0/1 pool masks of the same lengths.

    Returns:
        ``float32 [n, H]`` pooled embeddings (unnormalised).
    """
    return view.embed_tokens(ids, masks, autocast)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather ``[n, H]`` rows from every rank into ``[W * n, H]`` (rank-major), with the
    backward pass that sends each rank the sum over ranks of the gradients of its rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's d loss_r / d (all rows), summed over r
        n = grad.shape[0] // dist.get_world_size()
        rank = dist.get_rank()
        return grad[rank * n : (rank + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x [n, H]`` across the process group into ``[W * n, H]``, differentiably:
    gradients w.r.t. the gathered rows flow back to the rank that computed them (summed over
    the ranks whose losses used them). Identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _chunks(n: int, size: int) -> list[slice]:
    size = size if size > 0 else max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def list_checkpoints(directory: Path) -> list[Path]:
    """The ``step-N`` checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Sets up and runs one fine-tuning run (see the module docstring for the step).

    Joins the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1) unless one is
    already initialised; gloo on CPU, NCCL on CUDA.
    """

    def __init__(self, config: FinetuneConfig, pairs: list[Pair] | None = None) -> None:
        self.config = config
        self._owns_group = False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            backend = "nccl" if self._want_cuda() else "gloo"
            dist.init_process_group(backend=backend)
            self._owns_group = True
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if config.global_batch_size % self.world_size:
            raise ValueError(
                f"global_batch_size {config.global_batch_size} is not divisible by the "
                f"{self.world_size} processes"
            )
        self.local_batch_size = config.global_batch_size // self.world_size
        self.device = self._pick_device()

        self.pairs = pairs if pairs is not None else read_pairs(config.pairs)
        self.pairs_sha256 = pairs_digest(self.pairs)
        self.plan = BatchPlan([p.task for p in self.pairs], config.global_batch_size, config.seed)
        self.prompts = task_prompts(self.pairs)

        torch.manual_seed(config.seed)  # identical initial LoRA weights on every rank
        base = Embedder.load(
            config.model, attention=config.attention, dtype=torch.float32, device=self.device
        )
        pooling = config.pooling or base.pooling
        include = base.include_instruction and not config.exclude_instruction
        common = dict(
            pooling=pooling,
            normalize=base.normalize,
            prompt_template=base.prompt_template,
            include_instruction=include,
            precision="fp32",
            padding_side=base.padding_side,
        )
        backbone = base.backbone
        self.query_view = Embedder(
            backbone, base.tokenizer, max_length=config.max_query_length, **common
        )
        self.doc_view = Embedder(
            backbone, base.tokenizer, max_length=config.max_doc_length, **common
        )
        self.saved_precision = base.precision
        self.saved_prompts = {**base.prompts, **self.prompts}
        self.backbone = backbone
        self.peft_model = None
        if config.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=2 * config.lora_r,
                lora_dropout=config.lora_dropout,
                target_modules=list(LORA_TARGET_MODULES),
                bias="none",
            )
            # Adapters are injected into ``backbone`` in place; the views call it directly.
            self.peft_model = get_peft_model(backbone, lora)
        else:
            for p in backbone.parameters():
                p.requires_grad_(True)
        if config.gradient_checkpointing:
            backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        self._use_cache = getattr(backbone.config, "use_cache", None)
        backbone.config.use_cache = False  # no KV cache in training (and none with checkpointing)
        backbone.train()
        self.trainable: dict[str, torch.nn.Parameter] = {
            n: p for n, p in backbone.named_parameters() if p.requires_grad
        }
        if not self.trainable:
            raise ValueError("no trainable parameters")
        self._broadcast_trainable()
        torch.manual_seed(config.seed + 1 + self.rank)  # dropout streams differ per rank
        if self.device.type == "cuda":
            torch.cuda.manual_seed(config.seed + 1 + self.rank)

        decay = [p for n, p in self.trainable.items() if p.dim() >= 2]
        no_decay = [p for n, p in self.trainable.items() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        warmup = min(config.warmup_steps, config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, config.steps)
        )
        self.step = 0
        self.monitor = CollapseMonitor()
        self.log: list[dict[str, float]] = []
        self.truncated = 0
        n_train = sum(p.numel() for p in self.trainable.values())
        n_all = sum(p.numel() for p in backbone.parameters())
        if self.rank == 0:
            logger.info(
                "%d pairs, %d tasks, %d global batches/epoch; %d processes x %d pairs; "
                "trainable %d of %d parameters (%s); attention %s, pooling %s",
                len(self.pairs),
                len(self.plan.task_members),
                self.plan.batches_per_epoch,
                self.world_size,
                self.local_batch_size,
                n_train,
                n_all,
                f"LoRA r={config.lora_r}" if config.lora_r else "full",
                self.query_view.attention,
                pooling,
            )

    # -------------------------------------------------------------- set-up helpers
    def _want_cuda(self) -> bool:
        dev = self.config.device
        return dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())

    def _pick_device(self) -> torch.device:
        if not self._want_cuda():
            return torch.device(self.config.device if self.config.device != "auto" else "cpu")
        if self.config.device in ("auto", "cuda"):
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            device = torch.device(self.config.device)
        torch.cuda.set_device(device)
        return device

    def _broadcast_trainable(self) -> None:
        if self.world_size == 1:
            return
        with torch.no_grad():
            for p in self.trainable.values():
                dist.broadcast(p.data, src=0)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.config.bf16)

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share with a run that resumes from it."""
        c = self.config.to_json()
        c["model"] = str(self.config.model.resolve())
        c["pairs_sha256"] = self.pairs_sha256
        c["attention"] = self.query_view.attention
        c["pooling"] = self.query_view.pooling
        return {k: c[k] for k in _RESUME_KEYS}

    # -------------------------------------------------------------- data
    def _tokenize_queries(self, pairs: list[Pair]) -> tuple[list[list[int]], list[list[int]]]:
        ids: list[list[int]] = [[] for _ in pairs]
        masks: list[list[int]] = [[] for _ in pairs]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(pairs):
            groups[p.instruction].append(i)
        for instruction, rows in groups.items():
            prefix = self.query_view.instruction_prefix(instruction)
            got_ids, got_masks = self._tokenize(
                self.query_view, [pairs[i].query for i in rows], prefix
            )
            for j, i in enumerate(rows):
                ids[i], masks[i] = got_ids[j], got_masks[j]
        return ids, masks

    def _tokenize(
        self, view: Embedder, texts: list[str], prefix: str
    ) -> tuple[list[list[int]], list[list[int]]]:
        tok = view.tokenize(texts, prefix, True, warn=False)
        self.truncated += tok.truncated
        return tok.ids, tok.masks

    def local_batch(self, step: int) -> LocalBatch:
        """Rank ``self.rank``'s share of global batch ``step``, tokenized."""
        cfg = self.config
        k = cfg.hard_negatives
        global_idx = self.plan.global_batch(step)
        members = self.plan.task_members[self.pairs[global_idx[0]].task]
        global_docs: list[str] = []
        for i in global_idx:
            global_docs.append(self.pairs[i].positive)
            global_docs.extend(choose_negatives(self.pairs, i, k, members, cfg.seed, step))
        where: dict[str, list[int]] = defaultdict(list)
        for j, text in enumerate(global_docs):
            where[text].append(j)
        local = range(self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size)
        local_pairs = [self.pairs[global_idx[g]] for g in local]
        positives = torch.tensor([g * (1 + k) for g in local], dtype=torch.long)
        exclude = torch.zeros(len(local), len(global_docs), dtype=torch.bool)
        for row, g in enumerate(local):
            for j in where[global_docs[g * (1 + k)]]:
                if j != g * (1 + k):
                    exclude[row, j] = True
        truncated_before = self.truncated
        q_ids, q_masks = self._tokenize_queries(local_pairs)
        first, last = local[0] * (1 + k), (local[-1] + 1) * (1 + k)
        d_ids, d_masks = self._tokenize(self.doc_view, global_docs[first:last], "")
        return LocalBatch(
            step=step,
            query_ids=q_ids,
            query_masks=q_masks,
            doc_ids=d_ids,
            doc_masks=d_masks,
            positives=positives.to(self.device),
            exclude=exclude.to(self.device),
            tokens=sum(map(len, q_ids)) + sum(map(len, d_ids)),
            truncated=self.truncated - truncated_before,
        )

    # -------------------------------------------------------------- one step
    def _loss(self, q: torch.Tensor, d: torch.Tensor, batch: LocalBatch) -> StepResult:
        docs = gather_with_grad(d)
        loss, logits = info_nce_loss(
            q, docs, batch.positives, self.scale_at(batch.step), batch.exclude
        )
        accuracy = in_batch_accuracy(logits.detach(), batch.positives)
        return StepResult(loss, accuracy, mean_offdiag_cosine(docs))

    def scale_at(self, step: int) -> float:
        """The similarity scale used at 0-based ``step``: ``scale``, after a geometric warm-up
        from ``initial_scale`` over ``scale_warmup_steps`` steps when one is set."""
        cfg = self.config
        return scale_factor(step, cfg.scale, cfg.initial_scale, cfg.scale_warmup_steps)

    def forward_backward(self, batch: LocalBatch) -> StepResult:
        """Zero the gradients, compute the loss of ``batch`` and its gradients, averaged over
        ranks (= the gradient of the mean loss over the global batch).

        With ``mini_batch`` > 0 (GradCache): pass 1 embeds ``mini_batch`` texts at a time
        without a graph; the loss is differentiated w.r.t. the detached embeddings; pass 2
        re-embeds each mini-batch with a graph, replaying the random state recorded in pass 1
        (so dropout masks are identical), and back-propagates the cached embedding gradients.

        Returns:
            loss and in-batch accuracy averaged over the global batch (floats), and the mean
            cosine between the global batch's documents.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.mini_batch > 0:
            result = self._grad_cache_step(batch)
        else:
            q = embed_tokens(self.query_view, batch.query_ids, batch.query_masks, self._autocast())
            d = embed_tokens(self.doc_view, batch.doc_ids, batch.doc_masks, self._autocast())
            result = self._loss(q, d, batch)
            result.loss.backward()
        self._sync_gradients()
        stats = torch.stack([result.loss.detach().float(), result.accuracy.float()])
        if self.world_size > 1:
            dist.all_reduce(stats)
            stats /= self.world_size
        return StepResult(float(stats[0]), float(stats[1]), result.doc_cosine)

    def _grad_cache_step(self, batch: LocalBatch) -> StepResult:
        size = self.config.mini_batch
        parts = [
            (self.query_view, batch.query_ids, batch.query_masks),
            (self.doc_view, batch.doc_ids, batch.doc_masks),
        ]
        cached: list[list[torch.Tensor]] = []
        states: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = []
        with torch.no_grad():
            for view, ids, masks in parts:
                vecs, rngs = [], []
                for sl in _chunks(len(ids), size):
                    rngs.append(_rng_state(self.device))
                    vecs.append(embed_tokens(view, ids[sl], masks[sl], self._autocast()))
                cached.append(vecs)
                states.append(rngs)
        q = torch.cat(cached[0]).requires_grad_(True)
        d = torch.cat(cached[1]).requires_grad_(True)
        result = self._loss(q, d, batch)
        result.loss.backward()
        grads = (q.grad, d.grad)
        after_pass_1 = _rng_state(self.device)
        for (view, ids, masks), grad, rngs in zip(parts, grads, states, strict=True):
            for sl, rng in zip(_chunks(len(ids), size), rngs, strict=True):
                _set_rng_state(rng, self.device)
                vecs = embed_tokens(view, ids[sl], masks[sl], self._autocast())
                vecs.backward(grad[sl])
        _set_rng_state(after_pass_1, self.device)
        return result

    def _sync_gradients(self) -> None:
        """Replace each gradient by its mean over ranks (one flat all-reduce)."""
        params = list(self.trainable.values())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.world_size == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def train_step(self) -> dict[str, float]:
        """One optimizer step on global batch ``self.step``; returns its log row."""
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        batch = self.local_batch(self.step)
        scale = self.scale_at(self.step)
        result = self.forward_backward(batch)
        loss = result.loss
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {self.step + 1}: loss is {loss}; try --no-bf16")
        params = list(self.trainable.values())
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        tokens = torch.tensor([float(batch.tokens)])
        if self.world_size > 1:
            tokens = tokens.to(self.device)
            dist.all_reduce(tokens)
        seconds = time.perf_counter() - start
        row = {
            "step": self.step,
            "loss": loss,
            "accuracy": result.accuracy,
            "doc_cosine": result.doc_cosine,
            "scale": scale,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": int(tokens.item()),
            "tokens_per_s": float(tokens.item()) / max(seconds, 1e-9),
            "seconds": seconds,
        }
        if self.rank == 0:
            self.monitor.update(self.step, loss, batch.exclude.shape[1], result.doc_cosine)
        self.log.append(row)
        return row

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (rank 0; every rank's RNG state included)
        and keep the newest ``keep_checkpoints``. Returns the path on rank 0."""
        cpu, cuda = _rng_state(self.device)
        rng = {"cpu": cpu}
        if cuda is not None:
            rng["cuda"] = cuda
        gathered: dict[str, torch.Tensor] = {}
        for name, state in rng.items():
            if self.world_size > 1:
                # NCCL collectives need device tensors; gloo takes CPU ones.
                local = state.to(self.device)
                parts = [torch.empty_like(local) for _ in range(self.world_size)]
                dist.all_gather(parts, local)
                for r, t in enumerate(parts):
                    gathered[f"{name}.rank{r}"] = t.cpu()
            else:
                gathered[f"{name}.rank0"] = state
        path = self.config.checkpoints / f"step-{self.step:07d}"
        if self.rank == 0:
            with atomic_dir(path) as tmp:
                weights = {n: p.detach().cpu().contiguous() for n, p in self.trainable.items()}
                save_file(weights, str(tmp / "trainable.safetensors"))
                self._save_optimizer(tmp)
                write_json(tmp / "scheduler.json", _json_safe(self.scheduler.state_dict()))
                save_file(gathered, str(tmp / "rng.safetensors"))
                write_json(
                    tmp / "trainer_state.json",
                    {
                        "format": CHECKPOINT_FORMAT,
                        "step": self.step,
                        "world_size": self.world_size,
                        "truncated": self.truncated,
                        "fingerprint": self.fingerprint(),
                        "config": self.config.to_json(),
                        "log": self.log,
                    },
                )
            for old in list_checkpoints(self.config.checkpoints)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint %s", path)
        if self.world_size > 1:
            dist.barrier()
        return path if self.rank == 0 else None

    def _save_optimizer(self, directory: Path) -> None:
        state = self.optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in state["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        save_file(tensors, str(directory / "optimizer.safetensors"))
        write_json(
            directory / "optimizer.json",
            {"param_groups": _json_safe(state["param_groups"]), "scalar_state": scalars},
        )

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG, data position and log from ``path``."""
        info = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        if info.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unsupported checkpoint format {info.get('format')!r}")
        theirs, ours = info["fingerprint"], self.fingerprint()
        diff = [f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in ours if theirs.get(k) != ours[k]]
        if diff:
            raise ValueError(f"{path}: cannot resume with different settings: {'; '.join(diff)}")
        if info["config"]["steps"] != self.config.steps:
            logger.warning(
                "%s: resuming with steps=%d (checkpoint run: %d); the learning-rate schedule "
                "changes",
                path,
                self.config.steps,
                info["config"]["steps"],
            )
        weights = load_file(str(path / "trainable.safetensors"))
        if set(weights) != set(self.trainable):
            raise ValueError(f"{path}: trainable parameters differ from this run's")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(weights[name].to(p.device))
        opt_json = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
        tensors = load_file(str(path / "optimizer.safetensors"))
        state: dict[int, dict[str, Any]] = defaultdict(dict)
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            state[int(pid)][name] = value.to(self.device) if name != "step" else value
        for pid, entries in opt_json["scalar_state"].items():
            state[int(pid)].update(entries)
        groups = opt_json["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        self.optimizer.load_state_dict({"state": dict(state), "param_groups": groups})
        self.scheduler.load_state_dict(
            json.loads((path / "scheduler.json").read_text(encoding="utf-8"))
        )
        rng = load_file(str(path / "rng.safetensors"))
        if info["world_size"] == self.world_size:
            cuda = rng.get(f"cuda.rank{self.rank}")
            _set_rng_state(
                (rng[f"cpu.rank{self.rank}"], cuda if cuda is not None else None), self.device
            )
        else:
            logger.warning(
                "%s: saved by %d processes, resumed by %d: random state reseeded (dropout "
                "masks differ from an uninterrupted run)",
                path,
                info["world_size"],
                self.world_size,
            )
            torch.manual_seed(self.config.seed + 1 + self.rank + 7919 * info["step"])
        self.step = int(info["step"])
        self.truncated = int(info.get("truncated", 0))
        self.log = [dict(r) for r in info["log"]]
        if self.rank == 0:
            logger.info("resumed from %s at step %d", path, self.step)

    def resolve_resume(self) -> Path | None:
        """The checkpoint named by ``config.resume`` (``"latest"`` = newest in the checkpoint
        directory, or None with a warning when there is none), or None without ``resume``."""
        resume = self.config.resume
        if not resume:
            return None
        if resume == "latest":
            found = list_checkpoints(self.config.checkpoints)
            if not found:
                logger.warning(
                    "--resume: no checkpoint in %s; starting from step 0", self.config.checkpoints
                )
                return None
            return found[-1]
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise ValueError(f"{path}: not a checkpoint (no trainer_state.json)")
        return path

    # -------------------------------------------------------------- the run
    def train(self) -> Path:
        """Run from ``self.step`` to ``config.steps``, checkpointing every ``save_every`` steps,
        then merge LoRA and save the embedding model and the logs (rank 0). Returns ``out``."""
        cfg = self.config
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="finetune",
            unit="step",
            disable=not cfg.show_progress or self.rank != 0,
        )
        try:
            while self.step < cfg.steps:
                row = self.train_step()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}",
                    acc=f"{row['accuracy']:.3f}",
                    cos=f"{row['doc_cosine']:.2f}",
                    lr=f"{row['lr']:.2e}",
                    tok_s=f"{row['tokens_per_s']:.0f}",
                )
                if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    logger.info(
                        "step %d/%d loss %.4f acc %.3f doc-doc cos %.3f scale %.1f lr %.3g "
                        "%.0f tokens/s",
                        self.step,
                        cfg.steps,
                        row["loss"],
                        row["accuracy"],
                        row["doc_cosine"],
                        row["scale"],
                        row["lr"],
                        row["tokens_per_s"],
                    )
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.truncated and self.rank == 0:
            logger.warning("%d texts were truncated to the maximum length", self.truncated)
        if self.rank == 0:
            self.save_model(cfg.out)
            self.write_logs(cfg.out / "training")
        if self.world_size > 1:
            dist.barrier()
        return cfg.out

    def merged_embedder(self) -> Embedder:
        """The trained model as an ``Embedder`` (LoRA merged into the weights, eval mode),
        with the task prompts and the settings of the input model. Ends training."""
        backbone = self.backbone
        if self.peft_model is not None:
            backbone = self.peft_model.merge_and_unload()
            self.peft_model = None
        if self.config.gradient_checkpointing:
            backbone.activation_checkpointing_disable()
        backbone.eval()
        if self._use_cache is not None:
            backbone.config.use_cache = self._use_cache
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.backbone = backbone
        return Embedder(
            backbone,
            self.query_view.tokenizer,
            pooling=self.query_view.pooling,
            normalize=self.query_view.normalize,
            max_length=max(self.config.max_query_length, self.config.max_doc_length),
            prompts=self.saved_prompts,
            prompt_template=self.query_view.prompt_template,
            include_instruction=self.query_view.include_instruction,
            precision=self.saved_precision,
            padding_side=self.query_view.padding_side,
        )

    def save_model(self, out: Path) -> Path:
        """Save the merged model to ``out`` with ``Embedder.save`` (atomic)."""
        embedder = self.merged_embedder()
        embedder.save(out)
        logger.info("saved %s (prompts: %s)", out, ", ".join(sorted(self.saved_prompts)))
        return out

    def write_logs(self, directory: Path) -> None:
        """Write ``log.csv``, ``training.png`` and ``finetune.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.log:
            writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        with atomic_write(directory / "log.csv") as f:
            f.write(buf.getvalue())
        plot_log(self.log, directory / "training.png")
        write_json(
            directory / "finetune.json",
            {
                "config": self.config.to_json(),
                "pairs_sha256": self.pairs_sha256,
                "pairs": len(self.pairs),
                "world_size": self.world_size,
                "attention": self.query_view.attention,
                "pooling": self.query_view.pooling,
                "prompts": self.prompts,
                "truncated_texts": self.truncated,
                "final_loss": self.log[-1]["loss"] if self.log else None,
                "mean_tokens_per_s": (
                    float(np.mean([r["tokens_per_s"] for r in self.log])) if self.log else None
                ),
                "torch": torch.__version__,
            },
        )

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def plot_log(rows: Sequence[dict[str, float]], path: Path) -> None:
    """Plot loss, in-batch accuracy, document-document cosine, similarity scale, learning rate
    and tokens/s per step to a PNG (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 9), tight_layout=True)
    FigureCanvasAgg(fig)
    steps = [r["step"] for r in rows]
    panels = [
        ("loss", "InfoNCE loss"),
        ("accuracy", "in-batch accuracy"),
        ("doc_cosine", "mean cosine between documents"),
        ("scale", "similarity scale"),
        ("lr", "learning rate"),
        ("tokens_per_s", "tokens / s"),
    ]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(3, 2, i + 1)
        ax.plot(steps, [r.get(key, math.nan) for r in rows], lw=1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def finetune(config: FinetuneConfig, pairs: list[Pair] | None = None) -> Path:
    """Run contrastive fine-tuning as configured; returns the output model directory.

    ``pairs`` may be given instead of being read from ``config.pairs``. Resumes from a checkpoint when ``config.resume`` is set.
    """
    trainer = Trainer(config, pairs)
    try:
        checkpoint = trainer.resolve_resume()
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        return trainer.train()
    finally:
        trainer.close()


# ------------------------------------------------------------------------------ CLI
def _scale_or_off(value: str) -> float | None:
    """``--initial-scale``: a number, 0 meaning no warm-up (None)."""
    scale = float(value)
    return None if scale == 0 else scale


_scale_or_off.__name__ = "scale"  # argparse names the type in its error: "invalid scale value"


def _add_options(p: argparse.ArgumentParser) -> None:
    d = FinetuneConfig(model=Path("."), pairs=Path("."), out=Path("."))
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="input model directory (an LM or an embedding model)",
    )
    p.add_argument(
        "--pairs",
        required=True,
        type=Path,
        help="training pairs, JSONL {query, positive, negatives, instruction, task}",
    )
    p.add_argument("--out", required=True, type=Path, help="output embedding-model directory")
    p.add_argument(
        "--attention",
        choices=list(ATTENTIONS),
        help="attention during and after training (default: the model's own)",
    )
    p.add_argument(
        "--pooling",
        choices=list(POOLINGS),
        help="pooling (default: the model's own; mean for a bare LM)",
    )
    p.add_argument(
        "--exclude-instruction",
        action="store_true",
        help="pool over the query text only, not its instruction",
    )
    p.add_argument(
        "--lora-r",
        type=int,
        default=d.lora_r,
        help=f"LoRA rank on q/k/v/o/gate/up/down projections, alpha = 2r; "
        f"0 = full fine-tuning (default: {d.lora_r})",
    )
    p.add_argument(
        "--lora-dropout",
        type=float,
        default=d.lora_dropout,
        help=f"LoRA dropout (default: {d.lora_dropout})",
    )
    p.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate, AdamW (default: {d.lr})"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"AdamW weight decay on matrices (default: {d.weight_decay})",
    )
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=d.max_grad_norm,
        help=f"gradient-norm clipping, 0 = off (default: {d.max_grad_norm})",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=d.warmup_steps,
        help=f"linear warm-up steps, then linear decay to 0 (default: {d.warmup_steps})",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help=f"optimizer steps (default: {d.steps})"
    )
    p.add_argument(
        "--global-batch-size",
        type=int,
        default=d.global_batch_size,
        help=f"pairs per step over all processes; every batch is of one task "
        f"(default: {d.global_batch_size})",
    )
    p.add_argument(
        "--hard-negatives",
        type=int,
        default=d.hard_negatives,
        help=f"hard negatives per query (default: {d.hard_negatives})",
    )
    p.add_argument(
        "--max-query-length",
        type=int,
        default=d.max_query_length,
        help=f"max tokens per query, instruction included (default: {d.max_query_length})",
    )
    p.add_argument(
        "--max-doc-length",
        type=int,
        default=d.max_doc_length,
        help=f"max tokens per document (default: {d.max_doc_length})",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=d.scale,
        help=f"cosine-similarity scale = 1 / temperature (default: {d.scale})",
    )
    p.add_argument(
        "--initial-scale",
        type=_scale_or_off,
        default=d.initial_scale,
        help="similarity scale at step 0, raised geometrically to --scale over "
        f"--scale-warmup-steps; 0 = no warm-up (default: {d.initial_scale})",
    )
    p.add_argument(
        "--scale-warmup-steps",
        type=int,
        default=d.scale_warmup_steps,
        help=f"steps of the scale warm-up (default: {d.scale_warmup_steps})",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (less memory)",
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=d.bf16,
        help="bf16 autocast with fp32 master weights (default: on)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seed of data order, negatives, LoRA init and dropout (default: {d.seed})",
    )
    p.add_argument(
        "--mini-batch",
        type=int,
        default=d.mini_batch,
        help="GradCache: embed this many texts per forward; same loss and gradients "
        "as the full batch, less memory (default: 0 = off)",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=d.save_every,
        help="write a checkpoint every N steps (default: 0 = never)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=d.keep_checkpoints,
        help=f"checkpoints kept, newest first (default: {d.keep_checkpoints})",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="where checkpoints go (default: OUT-checkpoints beside --out)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="resume from the newest checkpoint, or from CHECKPOINT (a step-N dir)",
    )
    p.add_argument(
        "--device",
        default=d.device,
        help="cpu, cuda, cuda:N, or auto (cuda:LOCAL_RANK if available; default)",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=d.log_every,
        help=f"log a line every N steps (default: {d.log_every})",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_finetune)


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``finetune`` verb on a ``diffembed`` sub-parser set."""
    p = subparsers.add_parser(
        "finetune",
        help="contrastive fine-tuning (InfoNCE, LoRA, GradCache, multi-process)",
        description="Fine-tune an embedding model on (query, positive, hard negatives) pairs "
        "with InfoNCE on cosine similarity. Task-homogeneous global batches; in-batch "
        "negatives gathered across processes (run with torchrun --nproc-per-node N for data "
        "parallelism). Writes a sentence-transformers model directory with LoRA merged and "
        "the task instructions as prompts, plus OUT/training/{log.csv,training.png}.",
    )
    _add_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """Build a ``FinetuneConfig`` from parsed CLI arguments."""
    names = {f.name for f in fields(FinetuneConfig)} - {"show_progress"}
    values = {k: getattr(args, k) for k in names if hasattr(args, k)}
    return FinetuneConfig(show_progress=not args.no_progress, **values)


def run_finetune(args: argparse.Namespace) -> int:
    """The ``finetune`` verb: run the configured fine-tuning; returns the exit status."""
    finetune(config_from_args(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m diffembed.train.finetune [options]``: the same as ``diffembed finetune``."""
    parser = argparse.ArgumentParser(prog="python -m diffembed.train.finetune")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_options(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return run_finetune(args)


if __name__ == "__main__":
    sys.exit(main())
