"""Where a trained tokenizer is saved (issue 26, item 2): ``tokenizer train --out`` and
``save_tokenizer`` refuse a file, and a non-empty folder (another tokenizer, or the user's
files) unless told to overwrite, before any training; nothing the folder held is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from checkpoints import TOY_WORDS
from diffembed.cli.main import main
from diffembed.model.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus")
    lines = [
        json.dumps({"id": f"d{i}", "text": " ".join(TOY_WORDS[i:] + TOY_WORDS[:i])})
        for i in range(20)
    ]
    (path / "pretrain.jsonl").write_text("\n".join(lines) + "\n")
    return path


def train(corpus: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300"]
    rc = main([*argv, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_train_refuses_a_folder_of_other_files(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    rc, err = train(corpus, out, capsys)
    assert rc == 2 and str(out) in err and "'notes.txt'" in err and "--overwrite" in err
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
    rc, _ = train(corpus, out, capsys, "--overwrite")
    assert rc == 0 and not (out / "notes.txt").exists()
    assert len(load_tokenizer(out)) == 300


def test_train_refuses_an_existing_tokenizer_and_a_file(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    assert train(corpus, out, capsys)[0] == 0
    before = (out / "tokenizer.json").read_bytes()
    rc, err = train(corpus, out, capsys)
    assert rc == 2 and "exists and is not empty" in err and "--overwrite" in err
    assert (out / "tokenizer.json").read_bytes() == before
    plain = tmp_path / "plain"
    plain.write_text("a file")
    rc, err = train(corpus, plain, capsys, "--overwrite")
    assert rc == 2 and f"{plain}: exists and is not a directory" in err
    assert plain.read_text() == "a file"
    assert sorted(os.listdir(tmp_path)) == ["plain", "tok"]


def test_save_tokenizer_refuses_unless_told(tmp_path):
    tok = train_bpe_tokenizer(TOY_WORDS * 4, vocab_size=280, min_frequency=1)
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"tok: exists and is not empty.*overwrite=True"):
        save_tokenizer(tok, out)
    assert (out / "notes.txt").read_text() == "my notes"
    assert save_tokenizer(tok, out, overwrite=True) == out
    assert (out / "tokenizer.json").is_file() and not (out / "notes.txt").exists()
