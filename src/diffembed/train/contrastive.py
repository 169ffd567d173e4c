"""The contrastive objective as pure functions, and the checks that tell learning from collapse.

* ``info_nce_loss``: InfoNCE on cosine similarity, query -> documents (the paper's loss), and
  ``scale_factor``: its similarity scale, warmed up geometrically;
* ``gather_with_grad``: documents of every rank, with gradients back to the rank that made them;
* ``grad_cache_step``: GradCache, the loss of a large batch embedded a mini-batch at a time;
* ``mean_offdiag_cosine``: the mean cosine between distinct rows, the collapse meter.
* ``CollapseMonitor``: warns when training sits at chance or the embeddings collapse.

Why collapse happens (measured, see README "Fine-tuning that learns"): the residual branches'
output projections (``o_proj``, ``down_proj``) read an input that every token shares
(near-uniform attention at initialisation, frequent tokens), so updating them writes one constant
vector into every token's hidden state; while similarities are still random, the loss rewards
that (equal similarities cost ln(candidates), random ones more). It happened with AdamW and with
SGD alike. Mean pooling keeps a constant and averages token-specific parts away (by
``1/sqrt(n)`` for ``n`` tokens), so long documents become one point first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from diffembed.model.readout import maxsim
from diffembed.train.rng import rng_state, set_rng_state

logger = logging.getLogger(__name__)


def scale_factor(step: int, scale: float, initial: float | None, warmup_steps: int) -> float:
    """The similarity scale at 0-based ``step``: ``initial * (scale / initial) ** (step /
    warmup_steps)`` during the warm-up (geometric, i.e. the temperature falls by a constant
    factor per step), then ``scale``. No warm-up when ``initial`` is None or ``warmup_steps``
    is 0."""
    if initial is None or warmup_steps <= 0 or step >= warmup_steps:
        return scale
    return initial * (scale / initial) ** (step / warmup_steps)


def info_nce_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    positives: torch.Tensor,
    scale: float = 50.0,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE on cosine similarity: each query against one shared set of candidate documents.

    ``loss = mean_i CE(scale * cos(q_i, D), positives_i)``, i.e. temperature ``1 / scale``
    (scale 50 = temperature 0.02).

    Args:
        queries: ``[B, H]`` query embeddings (any norm; normalised here); ``[B, K, H]`` for
            K vectors per text, scored by MaxSim (``diffembed.model.readout.maxsim``).
        docs: ``[M, H]`` candidate documents: every query's positive and hard negatives, and in
            the distributed case those of all ranks (normalised here).
        positives: ``[B]`` long, the index in ``docs`` of each query's positive.
        scale: multiplier of the cosine similarities (1 / temperature).
        exclude: optional ``[B, M]`` bool, True for candidates left out of a query's softmax
            (e.g. another copy of its positive); a query's own positive must not be excluded.

    Returns:
        ``(loss, logits)``: the scalar mean loss (float32) and the ``[B, M]`` scaled
        query-document similarities (excluded candidates at ``-inf``).
    """
    shapes_ok = queries.dim() in (2, 3) and docs.dim() == queries.dim()
    if not shapes_ok or queries.shape[-1] != docs.shape[-1]:
        raise ValueError(
            f"expected queries [B,H] and docs [M,H] (or [B,K,H], [M,K,H]), got {queries.shape}, "
            f"{docs.shape}"
        )
    if positives.shape != (queries.shape[0],):
        raise ValueError(f"expected positives [{queries.shape[0]}], got {list(positives.shape)}")
    q = F.normalize(queries.float(), p=2.0, dim=-1)
    d = F.normalize(docs.float(), p=2.0, dim=-1)
    # K vectors per text (the multi-vector mask readout): MaxSim instead of the cosine.
    logits = scale * (maxsim(q, d) if q.dim() == 3 else q @ d.T)
    if exclude is not None:
        rows = torch.arange(len(positives), device=positives.device)
        if bool(exclude[rows, positives].any()):
            raise ValueError("a query's own positive is excluded")
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, positives), logits


def in_batch_accuracy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Fraction of queries whose positive scores highest: ``[B, M], [B] -> []`` (float32)."""
    return (logits.argmax(dim=1) == positives).float().mean()


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


def _chunks(n: int, size: int) -> list[slice]:
    size = size if size > 0 else max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def grad_cache_step(
    sides: Sequence[tuple[int, Callable[[slice], torch.Tensor]]],
    mini_batch: int,
    loss_of: Callable[..., Any],
    device: torch.device,
) -> Any:
    """GradCache: the gradients of a loss over large batches, embedding ``mini_batch`` rows at a
    time.

    Pass 1 embeds each side (``(rows, embed(slice) -> [len, H])``, e.g. queries and documents)
    a mini-batch at a time without a graph; ``loss_of(*embeddings)`` (whose result has a
    ``loss``) is differentiated w.r.t. the detached embeddings; pass 2 re-embeds each
    mini-batch with a graph, replaying the random state recorded in pass 1 (so dropout masks
    are identical), and back-propagates the cached embedding gradients. The random state
    after pass 1 is restored at the end. Returns ``loss_of``'s result.
    """
    cached: list[torch.Tensor] = []
    states: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = []
    with torch.no_grad():
        for rows, embed in sides:
            vecs, rngs = [], []
            for sl in _chunks(rows, mini_batch):
                rngs.append(rng_state(device))
                vecs.append(embed(sl))
            cached.append(torch.cat(vecs).requires_grad_(True))
            states.append(rngs)
    result = loss_of(*cached)
    result.loss.backward()
    after_pass_1 = rng_state(device)
    for (rows, embed), vecs, rngs in zip(sides, cached, states, strict=True):
        for sl, rng in zip(_chunks(rows, mini_batch), rngs, strict=True):
            set_rng_state(rng, device)
            embed(sl).backward(vecs.grad[sl])
    set_rng_state(after_pass_1, device)
    return result


def mean_offdiag_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows of ``x [n, H]`` (nan for n < 2).

    Near 1 means the vectors point one way (collapse); unrelated texts of a healthy embedding
    model sit well below 0.5.
    """
    n = x.shape[0]
    if n < 2:
        return math.nan
    with torch.no_grad():
        # K vectors per text: the cosine of their (per-vector normalised) concatenations.
        x = F.normalize(x.detach().float(), p=2.0, dim=-1).flatten(1) if x.dim() == 3 else x
        v = F.normalize(x.detach().float(), p=2.0, dim=-1)
        total = v.sum(dim=0).pow(2).sum() - n  # sum over i != j of cos(v_i, v_j)
        return float(total / (n * (n - 1)))


class CollapseMonitor:
    """Watches a contrastive run and warns (once per kind, via ``logging``) when it is not
    learning.

    * "stuck at chance": the loss stayed within ``tolerance`` (relative) of
      ``ln(candidates)`` for ``window`` consecutive steps;
    * "collapsing": the mean cosine between the step's documents exceeded ``max_cosine``.

    ``update`` returns the warnings raised at that step (for tests and logs).
    """

    def __init__(self, window: int = 50, tolerance: float = 0.05, max_cosine: float = 0.95):
        self.window = window
        self.tolerance = tolerance
        self.max_cosine = max_cosine
        self.run = 0
        self.warned: set[str] = set()

    def update(self, step: int, loss: float, candidates: int, doc_cosine: float) -> list[str]:
        """Feed one step: its loss, the number of candidates per query and the documents'
        mean cosine. Returns the warning messages issued now."""
        out: list[str] = []
        chance = math.log(max(candidates, 2))
        self.run = self.run + 1 if abs(loss - chance) <= self.tolerance * chance else 0
        if self.run >= self.window and "chance" not in self.warned:
            out.append(
                f"step {step}: the loss has stayed within {self.tolerance:.0%} of "
                f"ln({candidates}) = {chance:.2f} for {self.run} steps: the model is not "
                "learning (try a lower --lr, a lower --initial-scale, more --steps)"
            )
            self.warned.add("chance")
        if doc_cosine > self.max_cosine and "collapse" not in self.warned:
            out.append(
                f"step {step}: embeddings are collapsing: the mean cosine between the batch's "
                f"documents is {doc_cosine:.3f} (> {self.max_cosine})"
            )
            self.warned.add("collapse")
        for message in out:
            logger.warning(message)
        return out
