"""Index writes that fail or are killed: a fresh build killed while writing (or refused by a
validation) leaves a directory the next build recovers, or none at all; faiss settings that
would abort the process are refused first. The model hash covers what determines the vectors
only. Index files and folders get the umask's modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffembed.cli.main import main
from diffembed.formats.corpus import Document
from diffembed.index.build import IndexSettings, add_documents, build_index
from diffembed.index.documents import DocumentsError
from diffembed.index.search import Searcher
from diffembed.index.store import (
    CURRENT,
    IndexFormatError,
    ModelMismatchError,
    VectorIndex,
    check_model,
)
from diffembed.model.chunking import Chunking
from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import hash_model_dir


def docs(n: int, prefix: str = "d") -> list[Document]:
    words = ["fox", "river", "bank", "tokens", "keys", "needles", "haystacks", "query"]
    return [
        Document(id=f"{prefix}{i}", text=" ".join(words[(i + j) % 8] for j in range(6)))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir, precision="fp32")


CHUNKED_8 = IndexSettings(Chunking(8))


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ----------------------------------------------------------------------------- killed builds
KILL_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    import diffembed.index.store as store
    from diffembed.formats.corpus import Document
    from diffembed.index.build import build_index
    where, out, model_dir = sys.argv[1:4]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "swap":  # gen-000001 complete, CURRENT never written
        store.swap_current = die
    elif where == "faiss":  # inside the temporary generation: SQLite written, faiss not
        store.fsync_path = die
    elif where == "pointer":  # CURRENT's own temporary file written, not renamed
        os.replace = lambda *a: die() if str(a[1]).endswith("CURRENT") else os.rename(*a)
    docs = [Document(id=f"k{i}", text=f"killed build text {i} fox") for i in range(6)]
    build_index(docs, out, model_dir, overwrite="--overwrite" in sys.argv)
    """
)


def kill_build(where: str, out: Path, model_dir: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BUILD, where, str(out), str(model_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("where", ["faiss", "swap", "pointer"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_killed_fresh_build_is_recovered_by_the_next_build(
    model_dir, embedder, tmp_path, where, overwrite
):
    out = tmp_path / "ix"
    kill_build(where, out, model_dir)
    assert CURRENT not in names(out) and len(names(out)) >= 2  # .lock and the debris
    with pytest.raises(IndexFormatError, match="not an index.*interrupted.*index build"):
        VectorIndex.open(out)
    with build_index(docs(4), out, model_dir, embedder=embedder, overwrite=overwrite) as index:
        assert index.n_documents == index.ntotal == 4
        gen = index.generation.name
    assert names(out) == [".lock", CURRENT, gen]
    assert Searcher.open(out).search(docs(4)[2].text, k=1, prompt="")[0].id == "d2"


@pytest.mark.slow
def test_killed_overwrite_keeps_the_old_index_and_is_recovered(model_dir, embedder, tmp_path):
    out = tmp_path / "ix"
    build_index(docs(3), out, model_dir, embedder=embedder).close()
    kill_build("faiss", out, model_dir, "--overwrite")
    with VectorIndex.open(out) as index:  # the old index is still live
        assert index.ids() == ["d0", "d1", "d2"]
    with pytest.raises(FileExistsError, match="index add"):
        build_index(docs(2), out, model_dir, embedder=embedder)
    with build_index(docs(5), out, model_dir, embedder=embedder, overwrite=True) as index:
        assert index.n_documents == 5
        gen = index.generation.name
    assert names(out) == [".lock", CURRENT, gen]


def test_lone_lock_and_foreign_files(model_dir, embedder, tmp_path):
    out = tmp_path / "ix"
    out.mkdir()
    (out / ".lock").write_text("")
    build_index(docs(2), out, model_dir, embedder=embedder).close()
    assert VectorIndex.open(out).n_documents == 2
    # Debris next to a file that is not ours: refused, nothing removed.
    other = tmp_path / "other"
    (other / ".gen-000001.abc.tmp").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an index"):
        build_index(docs(2), other, model_dir, embedder=embedder, overwrite=True)
    assert names(other) == [".gen-000001.abc.tmp", "notes.txt"]


# ----------------------------------------------------------------------------- failed builds
def test_failed_fresh_build_leaves_no_directory(model_dir, embedder, tmp_path):
    blank = [*docs(2), Document(id="blank", text="   ")]
    with pytest.raises(DocumentsError, match="'blank' has no tokens"):
        build_index(blank, tmp_path / "ix", model_dir, CHUNKED_8, embedder=embedder)
    assert not (tmp_path / "ix").exists()
    # An empty folder the user made stays, empty.
    (tmp_path / "mine").mkdir()
    with pytest.raises(DocumentsError):
        build_index(blank, tmp_path / "mine", model_dir, CHUNKED_8, embedder=embedder)
    assert names(tmp_path / "mine") == []
    # A failure while overwriting leaves the old index as it was.
    build_index(docs(3), tmp_path / "ix", model_dir, embedder=embedder).close()
    with pytest.raises(DocumentsError):
        build_index(blank, tmp_path / "ix", model_dir, CHUNKED_8, embedder=embedder, overwrite=True)
    with VectorIndex.open(tmp_path / "ix") as index:
        assert index.n_documents == 3 and index.meta["generation"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ef_construction": 0}, "ef_construction"),
        ({"ef_search": -1}, "ef_search"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"chunk_tokens": 8, "chunk_overlap": -1}, "chunk_overlap"),
        ({"chunk_tokens": 8, "chunk_overlap": 8}, "chunk_overlap"),
        ({"chunk_tokens": 4096}, "chunk_tokens"),
    ],
)
def test_bad_settings_refused_before_anything_is_written(
    model_dir, embedder, tmp_path, kwargs, match
):
    chunking = {k.removeprefix("chunk_"): v for k, v in kwargs.items() if k.startswith("chunk_")}
    faiss = {k: v for k, v in kwargs.items() if not k.startswith("chunk_")}
    with pytest.raises(ValueError, match=match):
        settings = IndexSettings(Chunking(**chunking), faiss_type="hnsw", **faiss)
        build_index(docs(3), tmp_path / "ix", model_dir, settings, embedder=embedder)
    assert not (tmp_path / "ix").exists()


@pytest.mark.slow
@pytest.mark.parametrize("m", ["0", "1"])
def test_cli_hnsw_m_below_2_is_an_error_not_a_faiss_abort(model_dir, tmp_path, m):
    """In a subprocess: faiss aborts the whole process (exit 134) on these."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs(4)))
    args = ["index", "build", "--model", str(model_dir), "--docs", str(src), "--no-progress"]
    args += ["--out", str(tmp_path / "ix"), "--faiss", "hnsw", "--hnsw-m", m]
    code = "import sys; from diffembed.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr  # was 134 (SIGABRT in faiss)
    assert "hnsw" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "ix").exists()


# ----------------------------------------------------------------------------- the model hash
def test_model_hash_ignores_docs_and_training_records(model_dir, embedder, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "training").mkdir()
    (model / "training" / "log.csv").write_text("step,loss\n1,0.5\n")
    out = tmp_path / "ix"
    build_index(docs(3), out, model, embedder=embedder).close()
    first = hash_model_dir(model)
    (model / "README.md").write_text("# edited model card\n")
    shutil.rmtree(model / "training")
    (model / "results.png").write_bytes(b"\x89PNG")
    assert hash_model_dir(model) == first
    meta = VectorIndex.open(out).meta
    check_model(meta, model)
    assert Searcher.open(out).search(docs(3)[1].text, k=1, prompt="")[0].id == "d1"
    add_documents(out, docs(1, prefix="z")).close()
    assert main(["search", str(out), "fox", "-k", "1"]) == 0


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change",
    ["weights", "config", "tokenizer", "pooling", "prompts", "settings", "max_length"],
)
def test_model_hash_covers_what_determines_the_vectors(model_dir, tmp_path, change):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    before = hash_model_dir(model)
    if change == "weights":
        with (model / "model.safetensors").open("r+b") as f:
            f.seek(-4, os.SEEK_END)
            f.write(b"\1\2\3\4")
    elif change == "config":
        _edit_json(model / "config.json", rms_norm_eps=0.5)
    elif change == "tokenizer":
        _edit_json(model / "tokenizer_config.json", model_max_length=7)
    elif change == "pooling":
        _edit_json(model / "1_Pooling" / "config.json", include_prompt=False)
    elif change == "prompts":
        _edit_json(model / "config_sentence_transformers.json", prompts={"query": "other: "})
    elif change == "settings":
        _edit_json(model / "diffembed.json", pooling="last")
    elif change == "max_length":
        _edit_json(model / "sentence_bert_config.json", max_seq_length=12)
    assert hash_model_dir(model)["hash"] != before["hash"]


def test_index_with_an_all_files_hash_still_checks(model_dir, embedder, tmp_path):
    """Indexes built before the hash covered only the model's own files recorded a hash of all
    files: they keep working with their unchanged model, and still refuse another one."""
    out = tmp_path / "ix"
    build_index(docs(3), out, model_dir, embedder=embedder).close()
    gen = out / (out / CURRENT).read_text().strip()
    meta = json.loads((gen / "meta.json").read_text())
    meta["model"].update(hash_model_dir(model_dir, all_files=True))
    assert meta["model"]["hash_method"].startswith("sha256 of all files")
    (gen / "meta.json").write_text(json.dumps(meta))
    check_model(meta, model_dir)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    _edit_json(other / "config.json", rms_norm_eps=0.5)
    with pytest.raises(ModelMismatchError):
        check_model(meta, other)


# ----------------------------------------------------------------------------- modes
def test_index_files_get_the_umask_modes(model_dir, embedder, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "ix"
        build_index(docs(3), out, model_dir, embedder=embedder).close()
        add_documents(out, docs(1, prefix="z"), embedder=embedder).close()
    finally:
        os.umask(old)
    gen = out / (out / CURRENT).read_text().strip()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, gen, *out.iterdir()]}
    modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in gen.iterdir()})
    assert modes == {
        "ix": 0o755,
        gen.name: 0o755,
        ".lock": 0o644,
        CURRENT: 0o644,
        "meta.json": 0o644,
        "docs.sqlite": 0o644,
        "vectors.faiss": 0o644,
        "bm25": 0o755,
    }
    assert {stat.S_IMODE(p.stat().st_mode) for p in (gen / "bm25").iterdir()} == {0o644}
