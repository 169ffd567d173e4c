"""What pretraining and fine-tuning both need, written once.

* the process group and the device (``init_distributed`` -> ``Dist``) and the all-reduce
  helpers over it;
* random state: save, restore, seed;
* checkpoint directories (``step-N``, newest last, keep the last N) and optimizer state as
  safetensors + JSON;
* the learning-rate schedule (linear warm-up, then linear or cosine decay);
* the training log as CSV and as a PNG plot.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from diffembed.io import atomic_write
from diffembed.io import check_output_dir as _check_output_dir


# ------------------------------------------------------------------------------ distributed
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


# ------------------------------------------------------------------------------ random state
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


# ------------------------------------------------------------------------------ checkpoints
_STEP_DIR = re.compile(r"^step-(\d+)$")
# What a checkpoint write killed midway leaves: atomic_dir's temporary folder, or the old one.
_STEP_DEBRIS = re.compile(r"^\.step-\d+\.(.+\.tmp|old-\d+)$")


def step_checkpoint(directory: Path, step: int) -> Path:
    """The ``step-N`` checkpoint path of ``step`` in ``directory``."""
    return directory / f"step-{step:07d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """The ``step-N`` checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step-N`` checkpoints of ``directory``, and what
    killed checkpoint writes left (``clean_checkpoint_debris``)."""
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    clean_checkpoint_debris(directory)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, or a non-empty folder without ``overwrite``
    (``--overwrite``); a run checks before any work, and writes ``out`` atomically at its end
    (:func:`diffembed.io.check_output_dir` with the training verbs' wording)."""
    _check_output_dir(
        out,
        overwrite,
        overwrite_hint="pass --overwrite to replace it (the new model replaces it when "
        "training ends)",
    )


def clean_checkpoint_debris(directory: Path) -> None:
    """Remove the temporary (``.step-N.*.tmp``) and moved-aside (``.step-N.old-PID``) folders
    that a checkpoint write killed midway leaves in ``directory``. Call it from the one process
    that writes checkpoints, when no write is under way."""
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if _STEP_DEBRIS.match(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists, keys as strings and one-element tensors as numbers."""
    if isinstance(value, (tuple, list)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


@dataclass
class OptimizerFiles:
    """An optimizer's state split for files: ``tensors`` (``"PID.key"`` -> tensor, for
    safetensors), ``scalars`` (``"PID"`` -> {key: number}) and JSON-able ``param_groups``."""

    tensors: dict[str, torch.Tensor]
    scalars: dict[str, dict[str, Any]]
    param_groups: list[dict[str, Any]]


def optimizer_files(optimizer: torch.optim.Optimizer) -> OptimizerFiles:
    """Split ``optimizer.state_dict()`` into tensors, scalars and parameter groups."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return OptimizerFiles(tensors, scalars, json_safe(state["param_groups"]))


def restore_optimizer(
    optimizer: torch.optim.Optimizer, files: OptimizerFiles, device: torch.device | None = None
) -> None:
    """Load what ``optimizer_files`` split (tensors moved to ``device`` when given, except the
    step counts)."""
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, value in files.tensors.items():
        pid, name = key.split(".", 1)
        state[int(pid)][name] = value.to(device) if device is not None and name != "step" else value
    for pid, entries in files.scalars.items():
        state[int(pid)].update(entries)
    groups = [dict(g) for g in files.param_groups]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": dict(state), "param_groups": groups})


# ------------------------------------------------------------------------------ LR schedule
def lr_factor(
    step: int,
    warmup_steps: int,
    total_steps: int,
    *,
    decay: str = "linear",
    peak: float = 1.0,
    floor: float = 0.0,
    decay_steps: int = 0,
) -> float:
    """Learning rate at 0-based ``step`` for a ``peak`` rate (1 = the multiplier): linear
    warm-up over ``warmup_steps`` steps (from ``peak / warmup_steps``) to ``peak``, then
    ``decay``: ``linear`` reaching 0 at ``total_steps``, ``cosine`` reaching ``floor * peak``
    at ``total_steps``, or ``wsd`` (warmup-stable-decay): ``peak`` until the last
    ``decay_steps`` steps, then ``1 - sqrt`` of the decay's progress down to ``floor * peak``
    at the last step, ``total_steps - 1`` (the cooldown shape of Hägele et al. 2024)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if decay == "wsd":
        # The first decay step is already below the peak; the last step is at the floor.
        progress = (step + 1 - (total_steps - decay_steps)) / max(1, decay_steps)
        if progress <= 0:
            return peak
        return peak * (floor + (1 - floor) * (1 - math.sqrt(min(1.0, progress))))
    if decay == "linear":
        return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    if decay != "cosine":
        raise ValueError(f"decay must be linear, cosine or wsd, got {decay!r}")
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * (floor + (1 - floor) * cosine)


# ------------------------------------------------------------------------------ logs
def write_log_csv(
    path: Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    lineterminator: str = "\n",
) -> None:
    """Write ``rows`` as CSV with ``columns`` (missing values empty, other keys left out),
    atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf,
        fieldnames=list(columns),
        restval="",
        extrasaction="ignore",
        lineterminator=lineterminator,
    )
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


@dataclass(frozen=True)
class Panel:
    """One plot of a log: ``keys`` against the x column; with ``labels`` (one per key) the
    lines are labelled and the panel gets a legend."""

    title: str
    keys: tuple[str, ...]
    ylabel: str = ""
    labels: tuple[str, ...] = ()
    marker: str | None = None


def plot_log(
    rows: Sequence[dict[str, Any]],
    path: Path,
    panels: Sequence[Panel],
    *,
    x: str = "step",
    columns: int = 2,
    figsize: tuple[float, float] = (10, 9),
    dpi: int = 100,
    line_width: float | None = None,
    grid: bool = False,
) -> None:
    """Plot ``panels`` of a training log (each key over the rows that have it) to a PNG (Agg),
    atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, tight_layout=True)
    FigureCanvasAgg(fig)
    n_rows = math.ceil(len(panels) / columns)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(n_rows, columns, i + 1)
        labels = panel.labels or (None,) * len(panel.keys)
        for key, label in zip(panel.keys, labels, strict=True):
            points = [(r[x], r[key]) for r in rows if key in r]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, lw=line_width, marker=panel.marker, label=label)
        ax.set(xlabel=x, ylabel=panel.ylabel, title=panel.title)
        if grid:
            ax.grid(alpha=0.3)
        if panel.labels:
            ax.legend()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
