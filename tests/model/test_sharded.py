"""``diffembed.model.sharded``: the shard plan, the shard files and their reuse, in one process
(the torchrun runs are in tests/cli/test_torchrun.py)."""

from __future__ import annotations

import numpy as np
import pytest

from diffembed.distributed import Dist
from diffembed.model import sharded


def test_ranges_are_contiguous_cover_the_input_and_balance_characters():
    weights = [100, 1, 1, 1, 1, 1, 1, 1, 1, 100]
    ranges = sharded.split_ranges(weights, 2)
    assert ranges == [(0, 5), (5, 10)]
    assert sharded.split_ranges([5] * 7, 3) == [(0, 3), (3, 5), (5, 7)]
    # More ranks than items: some get nothing, the cover is still exact and ordered.
    few = sharded.split_ranges([3, 4], 4)
    assert few[0][0] == 0 and few[-1][1] == 2
    assert all(a <= b for a, b in few) and all(
        x[1] == y[0] for x, y in zip(few, few[1:], strict=False)
    )
    assert sharded.split_ranges([], 2) == [(0, 0), (0, 0)]


def test_plan_cuts_each_rank_range_into_pieces():
    pieces = sharded.plan([1] * 10, 2, piece_items=3)
    assert pieces == [[(0, 3), (3, 5)], [(5, 8), (8, 10)]]


def test_fingerprint_depends_on_texts_order_and_settings():
    base = sharded.fingerprint(["a", "b"], model="m", max_length=48)
    assert base == sharded.fingerprint(["a", "b"], max_length=48, model="m")
    assert base != sharded.fingerprint(["b", "a"], model="m", max_length=48)
    assert base != sharded.fingerprint(["ab"], model="m", max_length=48)  # lengths count
    assert base != sharded.fingerprint(["a", "b"], model="m", max_length=32)


def _encode_counting(calls: list[tuple[int, int]]):
    def encode(start: int, stop: int) -> dict[str, np.ndarray]:
        calls.append((start, stop))
        return {"vectors": np.arange(start, stop, dtype=np.float32)[:, None]}

    return encode


def test_finished_shards_are_reused_and_stale_ones_recomputed(tmp_path):
    out = tmp_path / "vectors.npy"
    first = sharded.ShardedRun(out, sharded.fingerprint(["x"] * 5), Dist(), [1] * 5)
    calls: list[tuple[int, int]] = []
    pieces = first.run(_encode_counting(calls))
    assert calls == [(0, 5)]
    assert sharded.concat(pieces, "vectors").ravel().tolist() == [0, 1, 2, 3, 4]
    assert first.path(0, 5).is_file()
    # Same fingerprint: the shard file is read, not recomputed.
    again = sharded.ShardedRun(out, first.key, Dist(), [1] * 5)
    calls.clear()
    assert sharded.concat(again.run(_encode_counting(calls)), "vectors").shape == (5, 1)
    assert calls == []
    # Another fingerprint (a changed input, model or setting): recomputed, never mixed.
    stale = sharded.ShardedRun(out, sharded.fingerprint(["y"] * 5), Dist(), [1] * 5)
    stale.run(_encode_counting(calls))
    assert calls == [(0, 5)]
    stale.finish()
    assert not sharded.shard_folder(out).exists()


def test_a_failing_piece_keeps_the_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded, "PIECE_ITEMS", 2)
    run = sharded.ShardedRun(tmp_path / "v.npy", "k" * 64, Dist(), [1] * 4)
    assert run.pieces == [[(0, 2), (2, 4)]]
    calls: list[tuple[int, int]] = []

    def encode(start: int, stop: int) -> dict[str, np.ndarray]:
        if start == 2:
            raise RuntimeError("boom")
        return _encode_counting(calls)(start, stop)

    with pytest.raises(RuntimeError, match="boom"):
        run.run(encode)
    assert run.path(0, 2).is_file() and not run.path(2, 4).exists()
    calls.clear()
    pieces = run.run(_encode_counting(calls))
    assert calls == [(2, 4)]
    assert sharded.concat(pieces, "vectors").ravel().tolist() == [0, 1, 2, 3]


def test_fault_hook_names_ranks(monkeypatch):
    monkeypatch.setenv(sharded.FAULT_ENV, "1")
    sharded._inject_fault(0)  # not listed: nothing happens
    with pytest.raises(sharded.ShardFailure, match="rank 1"):
        sharded._inject_fault(1)
