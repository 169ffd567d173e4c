"""The process group and the device, for every verb that runs under ``torchrun`` (pretraining,
fine-tuning, sharded encoding and index builds): ``init_distributed`` -> ``Dist``, and the
collectives over it (sums, means, broadcasts, gradient averaging, barriers). One process without
``torchrun`` is a group of one: every helper is then a no-op or the identity."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in the run: rank, world size and torch device; ``owns_group``
    when ``init_distributed`` created the process group (``close`` then destroys it)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and logs)."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group if ``init_distributed`` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def choose_device(spec: str | None = "auto", processes: int = 1) -> torch.device:
    """The torch device for ``spec``: ``auto`` (or None) is CUDA when available, else CPU;
    ``cuda`` is ``cuda:LOCAL_RANK``, as is every CUDA device when several processes share the
    run (one GPU per process). A CUDA device is made the current one."""
    auto = spec in (None, "auto")
    if not ((spec or "").startswith("cuda") or (auto and torch.cuda.is_available())):
        return torch.device("cpu" if auto else spec)
    if auto or spec == "cuda" or processes > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device(spec)
    torch.cuda.set_device(device)
    return device


def init_distributed(device: str | None = "auto", timeout: timedelta | None = None) -> Dist:
    """Pick the device and join the process group that ``torchrun`` describes
    (``WORLD_SIZE`` > 1) unless one is already initialised: gloo on CPU, NCCL on CUDA.
    ``timeout`` bounds each collective's wait (torch's default when None)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = choose_device(device, processes)
    owns = False
    if processes > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
        owns = True
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), chosen, owns)
    return Dist(device=chosen)


def all_sum(value: float, ctx: Dist) -> float:
    """``value`` summed over the ranks (float64)."""
    if ctx.world == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item())


def mean_over_ranks(values: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """``values`` replaced by their mean over the ranks (in place; returned)."""
    if ctx.world > 1:
        dist.all_reduce(values)
        values /= ctx.world
    return values


def broadcast_from_main(tensors: Iterable[torch.Tensor], ctx: Dist) -> None:
    """Copy rank 0's values of ``tensors`` to every rank (in place)."""
    if ctx.world == 1:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def average_gradients(params: Sequence[torch.nn.Parameter], ctx: Dist) -> None:
    """Replace each gradient by its mean over ranks (one flat all-reduce); a missing gradient
    counts as zeros."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if ctx.world == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def barrier(ctx: Dist) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.world > 1:
        dist.barrier()
