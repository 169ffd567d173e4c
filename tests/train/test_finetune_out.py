"""``finetune``'s output and checkpoint folders (issue 16, item 6): an existing --out is refused
without --overwrite, before any training; what a killed checkpoint write left is cleaned."""

from __future__ import annotations

import os
import time

import pytest

from diffembed.cli.main import main
from diffembed.formats.pairs import Pair, write_pairs
from diffembed.train.checkpoint import list_checkpoints
from diffembed.train.finetune import finetune
from diffembed.train.finetune_config import FinetuneConfig


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    pairs = [
        Pair(f"what is thing {i}", f"thing {i} is a thing", (f"other {i}",), "Find it", "qa")
        for i in range(8)
    ]
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pairs)


def config(checkpoints, pairs_file, out, **kw) -> FinetuneConfig:
    base = dict(
        model=checkpoints["llama"],
        pairs=pairs_file,
        out=out,
        attention="bidirectional",
        lora_r=0,
        warmup_steps=0,
        steps=2,
        global_batch_size=4,
        max_query_length=32,
        max_doc_length=32,
        precision="fp32",
        device="cpu",
        show_progress=False,
    )
    return FinetuneConfig(**{**base, **kw})


def test_existing_out_is_refused_before_training(checkpoints, pairs_file, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    start = time.perf_counter()
    with pytest.raises(FileExistsError, match=r"model: exists.*--overwrite"):
        finetune(config(checkpoints, pairs_file, out))
    assert time.perf_counter() - start < 5  # refused before loading the model
    assert (out / "config.json").read_text() == "{}"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        finetune(config(checkpoints, pairs_file, tmp_path / "file", overwrite=True))


def test_empty_out_folder_is_fine_and_overwrite_replaces(checkpoints, pairs_file, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    finetune(config(checkpoints, pairs_file, out, steps=1))
    assert (out / "diffembed.json").is_file()
    (out / "stale.txt").write_text("old")
    finetune(config(checkpoints, pairs_file, out, steps=1, overwrite=True))
    assert (out / "diffembed.json").is_file() and not (out / "stale.txt").exists()
    # A folder of the user's own files, replaced as --overwrite says (not refused at the end).
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    finetune(config(checkpoints, pairs_file, mine, steps=1, overwrite=True))
    assert (mine / "diffembed.json").is_file() and not (mine / "notes.txt").exists()


def test_cli_refuses_existing_out(checkpoints, pairs_file, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("mine")
    argv = ["finetune", "--model", str(checkpoints["llama"]), "--pairs", str(pairs_file)]
    assert main(argv + ["--out", str(out), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err and "Traceback" not in err


def test_resume_cleans_what_a_killed_checkpoint_write_left(checkpoints, pairs_file, tmp_path):
    cfg = config(checkpoints, pairs_file, tmp_path / "model", save_every=1)
    finetune(cfg)
    assert [p.name for p in list_checkpoints(cfg.checkpoints)] == ["step-0000001"]
    # kill -9 while step 2 was being written: atomic_dir's temporary folder stays behind
    debris = cfg.checkpoints / ".step-0000002.k9x2z.tmp"
    debris.mkdir()
    (debris / "trainable.safetensors").write_bytes(b"partial")
    old = cfg.checkpoints / ".step-0000001.old-4242"
    old.mkdir()
    resumed = config(
        checkpoints, pairs_file, tmp_path / "model", save_every=1, resume="latest", overwrite=True
    )
    finetune(resumed)
    assert sorted(os.listdir(cfg.checkpoints)) == ["step-0000001"]
