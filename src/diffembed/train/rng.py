"""Random state of a training run: seed, save and restore it, and gather every rank's for a
checkpoint (so that a resumed run draws the same numbers)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from diffembed.distributed import Dist

RngState = tuple[torch.Tensor, torch.Tensor | None]


def rng_state(device: torch.device) -> RngState:
    """The CPU random state and, on CUDA, the device's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: RngState, device: torch.device) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def seed_all(seed: int, device: torch.device) -> None:
    """Seed torch's CPU generator and, on CUDA, the device's."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def gather_rng_states(ctx: Dist) -> dict[str, torch.Tensor]:
    """Every rank's random state, named ``cpu.rankR`` / ``cuda.rankR`` (a collective)."""
    cpu, cuda = rng_state(ctx.device)
    states = {"cpu": cpu} if cuda is None else {"cpu": cpu, "cuda": cuda}
    gathered: dict[str, torch.Tensor] = {}
    for name, state in states.items():
        if ctx.world == 1:
            gathered[f"{name}.rank0"] = state
            continue
        # NCCL collectives need device tensors; gloo takes CPU ones.
        local = state.to(ctx.device)
        parts = [torch.empty_like(local) for _ in range(ctx.world)]
        dist.all_gather(parts, local)
        for r, t in enumerate(parts):
            gathered[f"{name}.rank{r}"] = t.cpu()
    return gathered


def restore_rng_states(states: dict[str, torch.Tensor], ctx: Dist) -> None:
    """Restore this rank's state from what ``gather_rng_states`` returned."""
    set_rng_state((states[f"cpu.rank{ctx.rank}"], states.get(f"cuda.rank{ctx.rank}")), ctx.device)
