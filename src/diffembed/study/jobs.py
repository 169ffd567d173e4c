"""Independent study stages in several processes at once (``diffembed reproduce --jobs N``).

A small model leaves most of a GPU idle, so the study runs its fine-tune -> evaluate chains (and
the LMs that do not depend on each other) side by side: one spawned process per job, each with its
own copy of the :class:`~diffembed.study.stages.Study`. Stages write their own outputs and markers
(different files), so running them in parallel changes neither their keys nor their results; a
failed stage raises in the parent after the stages already running have finished, and a rerun
skips every stage that completed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from diffembed.errors import ConfigError

if TYPE_CHECKING:
    from diffembed.study.stages import Study

Call = tuple[str, tuple[Any, ...]]  # a Study method's name and its positional arguments


def _init_worker(threads: int, level: int) -> None:
    """Each worker: its share of the CPU threads, and the parent's log level."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )


def _run(study: Study, method: str, args: tuple[Any, ...]) -> tuple[Any, dict[str, float]]:
    value = getattr(study, method)(*args)
    return value, study.stage_times


def run_calls(study: Study, calls: Sequence[Call], jobs: int) -> list[Any]:
    """The results of ``study.<method>(*args)`` for each call, in order: in this process one
    after another when ``jobs`` is 1, else in up to ``jobs`` spawned processes (each with
    ``cpu_count // jobs`` torch threads). Stage wall times come back into ``study``."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(calls) <= 1:
        return [getattr(study, method)(*args) for method, args in calls]
    workers = min(jobs, len(calls))
    threads = max(1, (os.cpu_count() or 1) // workers)
    level = logging.getLogger("diffembed").getEffectiveLevel()
    context = multiprocessing.get_context("spawn")  # never fork a process that holds CUDA
    with ProcessPoolExecutor(workers, context, _init_worker, (threads, level)) as pool:
        futures: list[Future] = [pool.submit(_run, study, m, a) for m, a in calls]
        results = []
        try:
            for future in futures:
                value, times = future.result()
                study.stage_times.update(times)
                results.append(value)
        except BaseException:
            for future in futures:
                future.cancel()  # those not started; the running ones finish their stage
            raise
    return results
