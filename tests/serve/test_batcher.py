"""The server's worker: the adaptive batch wait gathers clients it just answered, never delays a
lone client, and is bounded by half a step and ``batch_wait_ms``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig
from diffembed.serve.batcher import Batcher
from diffembed.serve.metrics import Metrics

STEP_S = 0.6  # every forward pass sleeps this long: the wait's bound is half of it


@pytest.fixture()
def batcher(checkpoints):
    emb = Embedder.load(checkpoints["llama"], precision="fp32")
    inner = emb.embed_tokens

    def slow(*args: Any, **kw: Any):
        time.sleep(STEP_S)
        return inner(*args, **kw)

    emb.embed_tokens = slow  # type: ignore[method-assign]
    b = Batcher(emb, ServeConfig(batch_wait_ms=10_000), Metrics())
    b.start()
    yield b
    b.stop()


def submit_together(batcher: Batcher, texts: list[str]) -> list:
    """One job per text, all queued before the worker can take any (it needs the same lock)."""
    with batcher._cond:
        return [batcher.submit([t], "", True) for t in texts]


def test_a_lone_client_never_waits(batcher):
    for i in range(3):  # its next request is all the last step answered
        batcher.submit([f"fox {i}"], "", True).result(timeout=30)
    h = batcher.metrics.batch_wait
    assert h.count == 3 and h.sum < 0.05
    assert batcher.metrics.step_requests.count == 3


def test_the_worker_waits_for_answered_clients_to_return_then_merges_them(batcher):
    first = submit_together(batcher, ["fox", "river"])  # one step answers both
    for f in first:
        f.result(timeout=30)
    steps = batcher.metrics.step_requests.count
    # One client returns at once, the other 0.1 s later: both go into the next step.
    a = batcher.submit(["fox again"], "", True)
    time.sleep(0.1)
    b = batcher.submit(["river again"], "", True)
    for f in (a, b):
        f.result(timeout=30)
    m = batcher.metrics
    assert m.step_requests.count - steps == 1  # merged
    waited = m.batch_wait.sum
    assert 0.05 < waited < STEP_S / 2 + 0.1
    # A client that does not return costs the other at most half a step.
    start = time.monotonic()
    batcher.submit(["only one"], "", True).result(timeout=30)  # two were answered last
    assert m.batch_wait.sum - waited == pytest.approx(STEP_S / 2, abs=0.1)
    assert time.monotonic() - start < STEP_S * 1.5 + 0.3


def test_batch_wait_zero_never_waits_and_vectors_are_the_same(batcher, checkpoints):
    batcher.config.batch_wait_ms = 0
    futures = submit_together(batcher, ["fox", "river"])
    for f in futures:
        f.result(timeout=30)
    got = batcher.submit(["fox"], "", True).result(timeout=30)  # two answered, one returns
    assert batcher.metrics.batch_wait.sum < 0.05
    want = Embedder.load(checkpoints["llama"], precision="fp32").encode(["fox"])
    np.testing.assert_allclose(got.vectors, want, atol=1e-5)
