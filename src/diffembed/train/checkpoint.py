"""Training checkpoints on disk, shared by pretraining and fine-tuning: ``step-N`` directories
(newest last, keep the last N, clean what a killed write left), the output folder check, and an
optimizer's state as safetensors tensors + JSON scalars."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffembed.io import check_output_dir as _check_output_dir

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
