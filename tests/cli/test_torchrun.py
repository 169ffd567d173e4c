"""``torchrun --nproc-per-node 2 -m diffembed encode|index build``: two CPU processes (gloo)
give what one process gives; a failed or killed rank leaves no merged output and the previous
index live; a rerun resumes from the finished shards (``diffembed.model.sharded``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffembed.cli.main import main
from diffembed.index.search import rank_documents
from diffembed.index.store import VectorIndex
from diffembed.model import sharded
from diffembed.model.embedder import Embedder

_VOCAB = "dictionary retrieval vector index shard merge rank gloo fox river stone light"
WORDS = _VOCAB.split(" ")
# Mixed lengths (some past the tiny model's 48 tokens), so ranks split by characters.
TEXTS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + 7 * (i % 4))) for i in range(14)]
QUERIES = ["fox river", "shard merge rank", "dictionary"]


def torchrun(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 --standalone -m diffembed ARGS`` (``fault``: the ranks
    that fail, ``DIFFEMBED_SHARD_FAULT``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(sharded.FAULT_ENV, None)
    if fault is not None:
        env[sharded.FAULT_ENV] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    cmd += ["-m", "diffembed", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _reused(stderr: str, rank: int, finished: int) -> bool:
    return f"rank {rank} of 2:" in stderr and f"{finished} finished before (reused)" in stderr


@pytest.mark.slow
def test_encode_two_processes_equal_one_and_resume_after_a_failed_rank(model_dir, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    flags = ["--model", str(model_dir), "--input", str(src), "--no-progress"]
    assert main(["encode", *flags, "--output", str(tmp_path / "one.npy")]) == 0
    one = np.load(tmp_path / "one.npy")
    out = tmp_path / "two.npy"

    failed = torchrun(tmp_path, "encode", *flags, "--output", str(out), fault="1")
    assert failed.returncode != 0
    assert "1 of 2 ranks failed" in failed.stderr and "run the same command again" in failed.stderr
    assert not out.exists()  # no merged output
    done = sorted(p.name for p in sharded.shard_folder(out).iterdir())
    assert len(done) == 1 and done[0].endswith(".npz")  # rank 0's shard, kept

    # Rank 0 may not encode now (it would fail): it must reuse its finished shard.
    resumed = torchrun(tmp_path, "encode", *flags, "--output", str(out), fault="0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _reused(resumed.stderr, 0, 1) and _reused(resumed.stderr, 1, 0)
    assert f"wrote {out}: 14 x" in resumed.stderr
    np.testing.assert_allclose(np.load(out), one, atol=1e-5)
    assert np.load(out).dtype == np.float32
    assert not sharded.shard_folder(out).exists()  # removed after the merge


def _write_docs(path: Path, texts: list[str]) -> None:
    with path.open("w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"_id": f"d{i:02d}", "title": f"T{i}", "text": t}) + "\n")


def _snapshot(index_dir: Path, queries: np.ndarray) -> dict:
    with VectorIndex.open(index_dir) as index:
        rows = index.db.execute("SELECT * FROM vectors ORDER BY row").fetchall()
        return {
            "ids": index.ids(),
            "docs": [index.document(i) for i in index.ids()],
            "rows": rows,
            "vectors": index.vectors(),
            "count": index.meta["count"],
            "documents": index.meta["documents"],
            "hits": [[(h.id, h.score) for h in hits] for hits in rank_documents(index, queries, 5)],
        }


@pytest.mark.slow
def test_index_build_two_processes_equal_one_and_a_crash_keeps_the_old_index(model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    _write_docs(docs, TEXTS)
    flags = ["--model", str(model_dir), "--docs", str(docs), "--no-progress"]
    flags += ["--chunk-tokens", "8", "--chunk-overlap", "2"]  # several rows per document
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["index", "build", *flags, "--out", str(one)]) == 0
    queries = Embedder.load(model_dir).encode_queries(QUERIES)
    want = _snapshot(one, queries)
    # The previous index at `two`: three documents.
    old_docs = tmp_path / "old.jsonl"
    _write_docs(old_docs, TEXTS[:3])
    old_flags = [*flags[:2], "--docs", str(old_docs), *flags[4:]]
    assert main(["index", "build", *old_flags, "--out", str(two)]) == 0
    before = _snapshot(two, queries[:0])
    rebuild = ["index", "build", *flags, "--out", str(two), "--overwrite"]

    for fault in ("1:kill", "1"):  # killed outright (torchrun stops rank 0), then failed
        crashed = torchrun(tmp_path, *rebuild, fault=fault)
        assert crashed.returncode != 0
        after = _snapshot(two, queries[:0])
        assert after["ids"] == before["ids"] == ["d00", "d01", "d02"]  # the old index, live
        np.testing.assert_array_equal(after["vectors"], before["vectors"])
    assert "1 of 2 ranks failed" in crashed.stderr
    assert len(list(sharded.shard_folder(two).glob("*.npz"))) == 1  # rank 0's, kept

    resumed = torchrun(tmp_path, *rebuild, fault="0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _reused(resumed.stderr, 0, 1) and _reused(resumed.stderr, 1, 0)
    got = _snapshot(two, queries)
    assert got["ids"] == want["ids"] and got["docs"] == want["docs"]
    assert got["rows"] == want["rows"] and got["count"] == want["count"]
    assert got["documents"] == want["documents"]
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=1e-5)
    assert [[i for i, _ in h] for h in got["hits"]] == [[i for i, _ in h] for h in want["hits"]]
    for g, w in zip(got["hits"], want["hits"], strict=True):
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-5)
    assert not sharded.shard_folder(two).exists()
