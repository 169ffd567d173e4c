"""Damaged index files are found, never searched (issue 26, items 3 and 4): every file of a
generation is checked against the sha256 recorded when it was written, on every open (search,
``index info``, ``index add``); a garbled BM25 array is named without numpy's advice to unpickle;
a non-finite score never reaches the user."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffembed.cli.main import main
from diffembed.formats.corpus import Document
from diffembed.index.build import build_index
from diffembed.index.search import rank_documents
from diffembed.index.store import META, IndexFormatError, VectorIndex, current_generation

REBUILD = "diffembed index build --overwrite"


def run(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture(scope="module")
def index_dir(model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "ix"
    docs = [
        Document(id=f"d{i}", text=f"document number {i} about foxes and rivers " * 8)
        for i in range(40)
    ]
    build_index(docs, path, model_dir).close()
    return path


@pytest.fixture
def copy(index_dir, tmp_path) -> Path:
    out = tmp_path / "ix"
    shutil.copytree(index_dir, out)
    return out


def overwrite_middle(path: Path, n: int) -> None:
    """Overwrite ``n`` bytes in the middle of ``path`` with 0x7f, keeping its length."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - n // 2)
    n = min(n, len(data) - start)
    data[start : start + n] = b"\x7f" * n
    path.write_bytes(bytes(data))


def test_checksums_are_recorded_for_every_file(copy):
    gen = current_generation(copy)
    files = json.loads((gen / META).read_text())["files"]
    on_disk = sorted(
        p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file() and p.name != META
    )
    assert sorted(files) == on_disk and "vectors.faiss" in files and "docs.sqlite" in files
    assert any(name.startswith("bm25/") for name in files)
    for name, entry in files.items():
        assert entry["bytes"] == (gen / name).stat().st_size
        assert entry["sha256"].startswith("sha256:")


@pytest.mark.parametrize("name", ["vectors.faiss", "docs.sqlite"])
def test_a_file_corrupted_in_place_is_refused_by_every_command(copy, tmp_path, capsys, name):
    target = current_generation(copy) / name
    size = target.stat().st_size
    overwrite_middle(target, 8000)
    assert target.stat().st_size == size
    with pytest.raises(IndexFormatError, match=r"sha256"):
        VectorIndex.open(copy)
    more = tmp_path / "more.jsonl"
    more.write_text('{"_id": "n1", "text": "new"}\n')
    for argv in (
        ["search", str(copy), "foxes", "--mode", "dense"],
        ["index", "info", str(copy)],
        ["index", "add", str(copy), "--docs", str(more), "--no-progress"],
    ):
        rc, err = run(argv, capsys)
        assert rc == 2, argv
        assert str(target) in err and REBUILD in err, err
    assert current_generation(copy).name == "gen-000001"  # add carried nothing forward


def test_garbage_bm25_array_is_named_without_unpickling_advice(copy, capsys):
    gen = current_generation(copy)
    target = sorted((gen / "bm25").glob("*.npy"))[0]
    target.write_bytes(b"\x80\x04garbage" + bytes(200))
    rc, err = run(["search", str(copy), "foxes", "--mode", "bm25"], capsys)
    assert rc == 2 and str(target) in err and REBUILD in err
    assert "pickle" not in err.lower()


def test_index_without_checksums_still_opens_and_names_a_bad_bm25_file(copy, capsys):
    # An index written before checksums were recorded opens as before; a garbled BM25 array
    # is then found when BM25 first loads, and named the same way.
    gen = current_generation(copy)
    meta = json.loads((gen / META).read_text())
    del meta["files"]
    (gen / META).write_text(json.dumps(meta))
    with VectorIndex.open(copy) as index:
        assert index.ntotal == 40
    target = sorted((gen / "bm25").glob("*.npy"))[0]
    target.write_bytes(b"\x80\x04garbage" + bytes(200))
    rc, err = run(["search", str(copy), "foxes", "--mode", "bm25"], capsys)
    assert rc == 2 and str(target) in err and REBUILD in err
    assert "pickle" not in err.lower()


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_scores_never_reach_the_user(copy, value):
    import faiss

    with VectorIndex.open(copy) as index:
        vectors = index.vectors()
        vectors[3] = value  # faiss scores it inf, or leaves a NaN out of the results
        broken = faiss.IndexFlatIP(index.dim)
        broken.add(vectors)
        index.faiss_index = broken
        with pytest.raises(IndexFormatError, match=r"vectors\.faiss.*not finite.*--overwrite"):
            rank_documents(index, vectors[:1].copy() * 0 + 0.1, k=40)
