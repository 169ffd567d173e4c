"""Encoding one input across processes and machines (``torchrun``), resumable after a crash:
the one home of the shard plan, the shard files and the merge, for ``diffembed encode`` and
``diffembed index build``.

The rule: the input, in its order, is cut into one **contiguous range per rank**, balanced by
characters (``split_ranges``), and each range into pieces of at most ``PIECE_ITEMS`` items.
Contiguous ranges make the merge a concatenation in the input order (a hash of the document
id would scatter every rank's rows and make the merge a permutation, and ``encode`` inputs
have no id); characters are known without tokenizing and follow the token count closely, so
ranks finish at about the same time even when long texts sit together.

Every rank encodes its pieces that are not already finished and writes each as one ``.npz``
shard file, atomically, in ``OUTPUT.shards/`` beside the output. A shard file carries the
``fingerprint`` of the input, the model and the settings, and its range; a rerun reuses only
shards whose fingerprint and range match, so a changed input, model or setting never mixes
with stale shards. When every rank has finished, rank 0 reads the shards in order and the
caller writes the merged output atomically, then ``ShardedRun.finish`` removes the shard
folder. A rank that fails leaves no merged output: the others finish their own pieces and
stop with ``ShardFailure``; a rank killed outright makes ``torchrun`` stop the rest. Either way
the finished shards stay, and the same command resumes from them.

Several machines need the output's folder on a filesystem they all see (rank 0 reads every
rank's shards). ``DIFFEMBED_SHARD_FAULT=RANK[:kill],...`` makes the ranks listed fail (raise,
or SIGKILL themselves) when they start encoding a piece: a crash drill for tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.distributed import Dist, all_sum, init_distributed
from diffembed.errors import DiffembedError
from diffembed.io import atomic_write

logger = logging.getLogger(__name__)

SHARD_FORMAT = 1
PIECE_ITEMS = 4096  # most items per shard file: what a crash can cost a rank
FAULT_ENV = "DIFFEMBED_SHARD_FAULT"
# The ranks wait for the slowest one before the merge; torchrun stops them all on a crash.
COLLECTIVE_TIMEOUT = timedelta(hours=24)

Arrays = dict[str, np.ndarray]


class ShardFailure(DiffembedError, RuntimeError):
    """A rank failed or a shard is missing; no merged output was written."""


def launched_ranks() -> int:
    """How many processes ``torchrun`` started for this run (``WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device: str | None) -> Dist:
    """Join the ``torchrun`` process group (``diffembed.distributed.init_distributed``: gloo on CPU,
    NCCL on CUDA with ``cuda:LOCAL_RANK``), with a wait long enough for the slowest rank."""
    return init_distributed(device, timeout=COLLECTIVE_TIMEOUT)


def split_ranges(weights: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(len(weights))`` in order,
    with about equal total weight (each item counts at least 1); some are empty when there are
    fewer items than parts."""
    cumulative = np.cumsum([max(int(w), 1) for w in weights], dtype=np.int64)
    total = int(cumulative[-1]) if len(cumulative) else 0
    bounds = [0]
    for k in range(1, parts):
        # The first k/parts of the weight ends after item i: side="left" puts the cut there.
        cut = int(np.searchsorted(cumulative, total * k / parts, side="left")) + 1
        bounds.append(min(max(cut, bounds[-1]), len(weights)))
    bounds.append(len(weights))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def plan(
    weights: Sequence[int], world: int, piece_items: int | None = None
) -> list[list[tuple[int, int]]]:
    """Each rank's pieces: its contiguous range (``split_ranges``) cut into pieces of at most
    ``piece_items`` (default ``PIECE_ITEMS``) items."""
    size = piece_items or PIECE_ITEMS
    return [
        [(a, min(a + size, stop)) for a in range(start, stop, size)]
        for start, stop in split_ranges(weights, world)
    ]


def fingerprint(texts: Iterable[str], **settings: Any) -> str:
    """A sha256 of the texts (in order) and the settings (JSON, keys sorted): what a shard's
    vectors depend on."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for t in texts:
        data = t.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def shard_folder(output: Path) -> Path:
    """Where the shards of ``output`` go: ``OUTPUT.shards`` beside it."""
    return output.with_name(output.name + ".shards")


def _inject_fault(rank: int) -> None:
    """The crash drill of ``FAULT_ENV`` (see the module docstring)."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        who, _, how = item.strip().partition(":")
        if who == str(rank):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ShardFailure(f"rank {rank}: failure injected by {FAULT_ENV}")


class ShardedRun:
    """One sharded encoding: ``run`` on every rank, then ``finish`` on rank 0 once the merged
    output is written."""

    def __init__(self, output: Path, key: str, ctx: Dist, weights: Sequence[int]):
        self.folder = shard_folder(Path(output))
        self.key = key
        self.ctx = ctx
        self.pieces = plan(weights, ctx.world)

    def path(self, start: int, stop: int) -> Path:
        """The shard file of items ``[start, stop)``."""
        return self.folder / f"{self.key[:16]}-{start:010d}-{stop:010d}.npz"

    def _finished(self, start: int, stop: int) -> bool:
        """Whether the shard of ``[start, stop)`` exists and belongs to this run."""
        with (
            contextlib.suppress(OSError, ValueError, KeyError),
            np.load(self.path(start, stop)) as z,
        ):
            return (
                str(z["fingerprint"]) == self.key
                and int(z["format"]) == SHARD_FORMAT
                and z["range"].tolist() == [start, stop]
            )
        return False

    def _write(self, start: int, stop: int, arrays: Arrays) -> None:
        extra = {"fingerprint": np.array(self.key), "format": np.array(SHARD_FORMAT)}
        with atomic_write(self.path(start, stop), "wb") as f:
            np.savez(f, **arrays, **extra, range=np.array([start, stop], dtype=np.int64))

    def run(self, encode: Callable[[int, int], Arrays]) -> list[tuple[int, int, Arrays]] | None:
        """Encode this rank's unfinished pieces with ``encode(start, stop)`` (a dict of arrays)
        and write them; wait for every rank. Rank 0 gets every piece ``(start, stop, arrays)``
        in the input order, the others None. Raises ``ShardFailure`` when a rank failed (this
        rank's own error is raised as it is); finished shards stay for a rerun."""
        rank, mine = self.ctx.rank, self.pieces[self.ctx.rank]
        error: Exception | None = None
        try:
            todo = [p for p in mine if not self._finished(*p)]
            logger.info(
                "rank %d of %d: items %s, %d shard(s): %d finished before (reused), %d to encode",
                rank,
                self.ctx.world,
                f"[{mine[0][0]}, {mine[-1][1]})" if mine else "none",
                len(mine),
                len(mine) - len(todo),
                len(todo),
            )
            for start, stop in todo:
                _inject_fault(rank)
                self._write(start, stop, encode(start, stop))
        except Exception as e:  # the others must still learn of it (no hang)
            error = e
        finished = round(all_sum(0.0 if error else 1.0, self.ctx))
        if error is not None:
            raise error
        if finished < self.ctx.world:
            raise ShardFailure(
                f"{self.ctx.world - finished} of {self.ctx.world} ranks failed, so nothing was "
                f"merged; the finished shards stay in {self.folder}: run the same command "
                "again to resume from them"
            )
        return self._gather() if self.ctx.main else None

    def _gather(self) -> list[tuple[int, int, Arrays]]:
        out = []
        for start, stop in (p for pieces in self.pieces for p in pieces):
            if not self._finished(start, stop):
                raise ShardFailure(
                    f"{self.path(start, stop)}: missing or not of this run, although its rank "
                    "finished; with several machines, the output's folder must be on a "
                    "filesystem every machine sees"
                )
            with np.load(self.path(start, stop)) as z:
                out.append((start, stop, {k: z[k] for k in z.files}))
        return out

    def finish(self) -> None:
        """Remove the shard folder (rank 0, after the merged output is written)."""
        if self.ctx.main:
            shutil.rmtree(self.folder, ignore_errors=True)


def concat(pieces: list[tuple[int, int, Arrays]], name: str) -> np.ndarray:
    """Array ``name`` of every piece, concatenated in the input order."""
    return np.concatenate([arrays[name] for _, _, arrays in pieces])
