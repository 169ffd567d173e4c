"""The server's settings: ``ServeConfig`` (limits and options) and ``API_KEY_ENV``.

Its own module so that the worker (``serve.batcher``), the guard (``serve.guard``), the search
page (``serve.page``) and the app (``serve.app``) all import it without importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from diffembed.errors import ConfigError

API_KEY_ENV = "DIFFEMBED_API_KEY"


@dataclass
class ServeConfig:
    """Server limits and options.

    Attributes:
        model_name: the id clients send as ``model`` and ``/v1/models`` lists.
        max_batch_tokens: token budget of one forward pass (rows x longest row).
        max_step_texts: most texts the worker takes from the queue for one step.
        max_queue_texts: texts waiting or in progress before new requests get 503.
        max_inputs: most inputs in one request.
        max_body_bytes: largest request body (413 above).
        batch_wait_ms: the most the worker waits for more requests before a step (0: never).
            The wait is adaptive (``Batcher._wait_for_returning``): only for the clients the
            last step answered, at most half that step's time; requests that arrive during a
            step are batched together anyway.
        api_key: required bearer token (None: open).
        max_k: largest ``k`` for search.
        retry_after_s: the ``Retry-After`` of a 503.
        threads: torch intra-op threads of the worker (None: ``worker_threads``' choice from
            the machine).
    """

    model_name: str = "diffembed"
    max_batch_tokens: int = 16384
    max_step_texts: int = 1024
    max_queue_texts: int = 8192
    max_inputs: int = 2048
    max_body_bytes: int = 8 << 20
    batch_wait_ms: float = 50.0
    api_key: str | None = None
    max_k: int = 1000
    retry_after_s: int = 1
    threads: int | None = None

    def worker_threads(self) -> int:
        """``threads``, or the CPUs this process may run on (its affinity): the worker's
        forward passes are most of the server's work. On 2 cores, keeping one from the worker
        for the event loop halved throughput at 16 clients (``results/perf/serve_load.md``;
        README "Encoding speed, long documents and serving")."""
        if self.threads:
            return self.threads
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first limit that cannot work (a count below 1, or
        more inputs per request than the queue holds)."""
        for name in ("max_batch_tokens", "max_step_texts", "max_queue_texts", "max_inputs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_inputs > self.max_queue_texts:
            raise ConfigError(
                f"max_inputs ({self.max_inputs}) must not exceed max_queue_texts "
                f"({self.max_queue_texts})"
            )
