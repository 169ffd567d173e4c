"""The server's worker: one thread owns the model and merges queued requests into token-budget
batches.

Request handlers ``submit`` their texts and get a future; the worker takes every job waiting (up
to ``max_step_texts`` texts, after the adaptive wait of ``Batcher._wait_for_returning``),
tokenizes each job (a job whose texts are too long or cannot be tokenized fails alone, with
``RejectedInput``), packs the texts of all jobs into batches of rows
x longest row <= ``max_batch_tokens``, runs them through ``Embedder.embed_batches`` and hands
each job its vectors. A full queue raises ``QueueFull`` instead of growing without bound.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffembed.errors import DiffembedError
from diffembed.serve.config import ServeConfig
from diffembed.serve.metrics import Metrics

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The worker's queue holds ``max_queue_texts`` texts already."""


class RejectedInput(DiffembedError):
    """A request's texts cannot be embedded (over-long without truncation, or untokenizable);
    the server answers 400 with ``param`` and ``code``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class EmbedResult:
    """A job's output: ``vectors`` float32 [n, H] in input order, ``tokens`` per input."""

    vectors: np.ndarray
    tokens: list[int]


@dataclass
class _Job:
    texts: list[str]
    prefix: str
    truncate: bool
    future: concurrent.futures.Future
    field: str = "input"  # the request field the texts came from, named by its errors

    def name(self, i: int) -> str:
        """How errors name text ``i``: ``input[i]``, or the field itself (``query``)."""
        return f"{self.field}[{i}]" if self.field == "input" else self.field


class Batcher:
    """Owns the model: merges queued jobs into token-budget batches on one worker thread."""

    def __init__(self, embedder: Embedder, config: ServeConfig, metrics: Metrics) -> None:
        self.embedder = embedder
        self.config = config
        self.metrics = metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._pending = 0  # texts queued or in the current step
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._submitted = 0  # jobs ever queued
        # The last step: jobs it answered, ``_submitted`` just before it answered them, seconds.
        self._answered = 0
        self._submitted_at_answer = 0
        self._step_s = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="diffembed-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Finish every queued job, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def submit(
        self, texts: list[str], prefix: str, truncate: bool, field: str = "input"
    ) -> concurrent.futures.Future:
        """Queue ``texts`` (embedded as ``prefix + text``); raises ``QueueFull`` when full.

        The future gives an ``EmbedResult``, or raises ``RejectedInput`` for bad texts, whose
        message and ``param`` name the request ``field`` they came from (``input[i]``, or a
        single-text field such as ``query``).
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if self._pending + len(texts) > self.config.max_queue_texts:
                raise QueueFull(
                    f"{self._pending} texts are queued (limit {self.config.max_queue_texts})"
                )
            self._queue.append(_Job(texts, prefix, truncate, future, field))
            self._submitted += 1
            self._pending += len(texts)
            self.metrics.queue_texts = self._pending
            self._cond.notify()
        return future

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            self._wait_for_returning()
            jobs = [self._queue.popleft()]
            n = len(jobs[0].texts)
            while self._queue and n + len(self._queue[0].texts) <= self.config.max_step_texts:
                job = self._queue.popleft()
                n += len(job.texts)
                jobs.append(job)
            return jobs

    def _wait_for_returning(self) -> None:
        """The adaptive batch wait (called holding the lock, the queue not empty).

        Clients answered by the last step usually send their next request within a round trip;
        taking the queue before they do splits one load into alternating half-size steps. So the
        worker waits until as many jobs as the last step answered have been submitted since it
        answered them, for at most half the last step's time and ``batch_wait_ms``. A lone
        client never waits (its next request is all the last step answered).
        """
        start = time.monotonic()
        deadline = start + min(self.config.batch_wait_ms / 1000, self._step_s / 2)
        while self._submitted - self._submitted_at_answer < self._answered and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        with self.metrics.lock:
            self.metrics.batch_wait.observe(time.monotonic() - start)

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.config.worker_threads())
        while True:
            jobs = self._take()
            if jobs is None:
                return
            start = time.monotonic()
            try:
                self._step(jobs)  # embed_batches runs the model under inference_mode
            except Exception as e:  # never let the worker die
                logger.exception("worker step failed")
                self._answering(len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
            finally:
                with self._cond:
                    self._pending -= sum(len(j.texts) for j in jobs)
                    self.metrics.queue_texts = self._pending
                    self._step_s = time.monotonic() - start

    def _answering(self, jobs: int) -> None:
        """Note, just before a step resolves its ``jobs`` futures, what the adaptive wait needs:
        a client may send its next request before the worker's next line runs."""
        with self._cond:
            self._answered, self._submitted_at_answer = jobs, self._submitted

    def _tokenize(self, job: _Job) -> tuple[list[list[int]], list[list[int]]] | None:
        """The job's ``(ids, masks)``, or None after failing its future with ``RejectedInput``."""
        emb = self.embedder
        try:
            tok = emb.tokenize(job.texts, job.prefix, truncate=job.truncate, warn=False)
            return tok.ids, tok.masks
        except (ValueError, TypeError) as e:
            message = self._too_long_message(job)
            if message is None:
                message = re.sub(r"texts\[(\d+)\]", lambda m: job.name(int(m[1])), str(e))
            job.future.set_exception(
                RejectedInput(message, param=job.field, code="context_length_exceeded")
            )
            return None
        except Exception as e:  # one bad job must not fail the others of its step
            logger.exception("tokenizing a request failed")
            job.future.set_exception(
                RejectedInput(f"could not tokenize the input: {type(e).__name__}: {e}")
            )
            return None

    def _too_long_message(self, job: _Job) -> str | None:
        """The error for a job refused because inputs exceed ``max_length`` (None otherwise)."""
        emb = self.embedder
        lengths = [
            len(x)
            for x in emb.tokenizer(
                [job.prefix + t for t in job.texts], add_special_tokens=True, verbose=False
            )["input_ids"]
        ]
        over = [(i, n) for i, n in enumerate(lengths) if n > emb.max_length]
        if not over or job.truncate:
            return None
        if job.field != "input":  # one text: the field itself
            return (
                f"{job.field} has {over[0][1]} tokens, over the model's max_length="
                f"{emb.max_length} (instruction and special tokens included); send "
                '"truncate": true to truncate it'
            )
        shown = ", ".join(f"{job.name(i)} has {n} tokens" for i, n in over[:5])
        return (
            f"{len(over)} input(s) exceed the model's max_length={emb.max_length} tokens "
            f"(instruction and special tokens included): {shown}; send "
            '"truncate": true to truncate them'
        )

    def _step(self, jobs: list[_Job]) -> None:
        """Embed the texts of ``jobs`` together and resolve each job's future."""
        from diffembed.model.inputs import token_budget_batches

        emb = self.embedder
        ids: list[list[int]] = []
        masks: list[list[int]] = []
        owner: list[tuple[int, int]] = []  # (job, position) of each text
        live: list[int] = []
        for j, job in enumerate(jobs):
            got = self._tokenize(job)
            if got is None:
                continue
            live.append(j)
            ids.extend(got[0])
            masks.extend(got[1])
            owner.extend((j, i) for i in range(len(job.texts)))
        if not ids:
            self._answering(0)  # all refused, answered already: nothing to wait for
            return
        lengths = [len(x) for x in ids]
        outputs = {j: np.empty((len(jobs[j].texts), emb.dim), np.float32) for j in live}
        batches = token_budget_batches(lengths, self.config.max_batch_tokens)
        for batch, array in emb.embed_batches(ids, masks, batches):
            for row, i in enumerate(batch):
                j, pos = owner[i]
                outputs[j][pos] = array[row]
            with self.metrics.lock:
                self.metrics.forward_passes += 1
                self.metrics.batch_size.observe(len(batch))
        start = 0
        per_job_tokens: dict[int, list[int]] = {}
        for j in live:
            n = len(jobs[j].texts)
            per_job_tokens[j] = lengths[start : start + n]
            start += n
        with self.metrics.lock:
            self.metrics.steps += 1
            self.metrics.step_requests.observe(len(live))
            self.metrics.tokens += sum(lengths)
            self.metrics.inputs += len(lengths)
        self._answering(len(jobs))
        for j in live:
            jobs[j].future.set_result(EmbedResult(outputs[j], per_job_tokens[j]))
