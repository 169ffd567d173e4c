"""The contrastive objective's collapse meter, monitor and similarity-scale schedule."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from diffembed.train.contrastive import CollapseMonitor, mean_offdiag_cosine, scale_factor


def test_mean_offdiag_cosine_matches_brute_force():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    v = torch.nn.functional.normalize(x, dim=1).numpy()
    expected = np.mean([v[i] @ v[j] for i in range(7) for j in range(7) if i != j])
    assert mean_offdiag_cosine(x) == pytest.approx(float(expected), abs=1e-6)
    assert mean_offdiag_cosine(torch.ones(4, 3) * torch.arange(1, 5)[:, None]) == pytest.approx(1)
    assert math.isnan(mean_offdiag_cosine(torch.ones(1, 3)))


def test_monitor_warns_after_a_window_at_chance_and_once(caplog):
    monitor = CollapseMonitor(window=50, tolerance=0.05, max_cosine=0.95)
    chance = math.log(32)
    with caplog.at_level(logging.WARNING, logger="diffembed.train.contrastive"):
        for step in range(1, 50):
            assert monitor.update(step, chance * 1.04, 32, 0.3) == []
        (message,) = monitor.update(50, chance * 0.97, 32, 0.3)
        assert "not learning" in message and "ln(32)" in message
        assert monitor.update(51, chance, 32, 0.3) == []  # once per run
    assert any("not learning" in r.getMessage() for r in caplog.records)


def test_monitor_run_resets_when_the_loss_leaves_chance():
    monitor = CollapseMonitor(window=5)
    for step in range(1, 5):
        monitor.update(step, math.log(8), 8, 0.1)
    monitor.update(5, 0.5 * math.log(8), 8, 0.1)  # learning: the run restarts
    assert [monitor.update(s, math.log(8), 8, 0.1) for s in range(6, 10)] == [[], [], [], []]
    assert monitor.update(10, math.log(8), 8, 0.1)


def test_monitor_warns_when_documents_collapse():
    monitor = CollapseMonitor(max_cosine=0.95)
    assert monitor.update(1, 1.0, 32, 0.95) == []
    (message,) = monitor.update(2, 1.0, 32, 0.99)
    assert "embeddings are collapsing" in message and "0.990" in message


def test_scale_warm_up_is_geometric_from_initial_to_final():
    assert scale_factor(0, 50.0, 5.0, 100) == pytest.approx(5.0)
    assert scale_factor(50, 50.0, 5.0, 100) == pytest.approx(math.sqrt(5.0 * 50.0))
    assert scale_factor(100, 50.0, 5.0, 100) == 50.0
    assert scale_factor(10_000, 50.0, 5.0, 100) == 50.0
    assert scale_factor(0, 50.0, None, 100) == 50.0  # no warm-up without an initial scale
    assert scale_factor(0, 50.0, 5.0, 0) == 50.0
    values = [scale_factor(s, 50.0, 5.0, 100) for s in range(101)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
