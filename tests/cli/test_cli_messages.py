"""Errors the command line explains in one line naming the input (issue 16, items 10-12):
--no-truncate, NaN weights, a bad diffembed.json, ``generate`` on an embedding model, corrupt
index files, a busy port; and no faiss loader or transformers progress noise."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from diffembed.cli.main import main
from diffembed.formats.corpus import Document
from diffembed.index.build import build_index
from diffembed.index.store import current_generation
from diffembed.model.tokenizer import load_tokenizer


def run(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def encode(model: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["encode", "--model", str(model), "--input", str(src), "--output", str(out)] + [
        *extra,
        "--no-progress",
    ]


def test_no_truncate_names_the_flag_and_line(model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("short\n" + "word " * 200 + "\nalso short\n")
    argv = encode(model_dir, src, tmp_path / "o.npy", "--no-truncate", "--max-length", "16")
    rc, err = run(argv, capsys)
    assert rc == 2
    assert f"{src}:2:" in err and "--no-truncate" in err and "--max-length" in err
    assert "truncate=True" not in err and "index" not in err


def test_no_truncate_names_the_csv_line(model_dir, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,short\n2," + "word " * 200 + "\n")
    argv = encode(model_dir, src, tmp_path / "o.npy", "--no-truncate", "--max-length", "16")
    rc, err = run(argv, capsys)
    assert rc == 2 and f"{src}:3:" in err


def test_encode_reads_csv_column_and_refuses_json(model_dir, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,hello world\n2,second text\n")
    out = tmp_path / "o.npy"
    rc, _ = run(encode(model_dir, src, out), capsys)
    assert rc == 0 and np.load(out).shape[0] == 2
    bad = tmp_path / "in.json"
    bad.write_text('["a", "b"]')
    rc, err = run(encode(model_dir, bad, out), capsys)
    assert rc == 2 and "in.json" in err and ".jsonl" in err and ".csv" in err


@pytest.fixture(scope="module")
def nan_model(model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nan") / "model"
    shutil.copytree(model_dir, path)
    weights = load_file(str(path / "model.safetensors"))
    for tensor in weights.values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_nan_weights_blame_the_weights(nan_model, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    rc, err = run(encode(nan_model, src, tmp_path / "o.npy"), capsys)
    assert rc == 2
    assert str(nan_model) in err and "weights" in err and "NaN" in err
    assert "precision='fp32'" not in err and "try --precision" not in err


def test_bad_pooling_in_settings_names_the_file(model_dir, tmp_path, capsys):
    path = tmp_path / "model"
    shutil.copytree(model_dir, path)
    settings = json.loads((path / "diffembed.json").read_text())
    settings["pooling"] = "maxx"
    (path / "diffembed.json").write_text(json.dumps(settings))
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    rc, err = run(encode(path, src, tmp_path / "o.npy"), capsys)
    assert rc == 2 and str(path / "diffembed.json") in err and "'maxx'" in err


def test_generate_on_an_embedding_model_is_refused(model_dir, capsys):
    rc, err = run(
        ["generate", "--model", str(model_dir), "--prompt", "hi", "--length", "4"], capsys
    )
    assert rc == 2 and "no language-model head" in err and str(model_dir) in err
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def index_dir(model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("index") / "ix"
    docs = [Document(id=f"d{i}", text=f"document number {i} about foxes") for i in range(4)]
    build_index(docs, path, model_dir).close()
    return path


def corrupt(index_dir: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    copy = tmp_path / "ix"
    shutil.copytree(index_dir, copy)
    target = current_generation(copy) / name
    data = target.read_bytes()
    if name == "vectors.faiss":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.write_bytes(b"this is not a database" * 100)
    return copy, target


@pytest.mark.parametrize("name", ["vectors.faiss", "docs.sqlite"])
def test_corrupt_index_files_are_named(index_dir, tmp_path, capsys, name):
    copy, target = corrupt(index_dir, tmp_path, name)
    docs = tmp_path / "more.jsonl"
    docs.write_text('{"_id": "n1", "text": "new"}\n')
    for argv in (
        ["search", str(copy), "foxes"],
        ["index", "add", str(copy), "--docs", str(docs), "--no-progress"],
        ["index", "info", str(copy)],
    ):
        rc, err = run(argv, capsys)
        assert rc == 2, argv
        assert str(target) in err and "--overwrite" in err, err


def test_busy_port_is_one_line_and_nothing_claims_to_serve(model_dir, capsys, caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, err = run(["serve", "--model", str(model_dir), "--port", str(port)], capsys)
    assert rc == 2 and f"127.0.0.1:{port}" in err and "--port" in err
    assert "serving" not in caplog.text


@pytest.mark.slow
def test_index_commands_print_no_faiss_loader_lines(index_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "diffembed", "search", str(index_dir), "foxes"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "faiss.loader" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr


def test_no_progress_turns_off_transformers_bars(model_dir, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    hf_logging.enable_progress_bar()  # earlier --no-progress runs in this process turned it off
    try:
        argv = encode(model_dir, src, tmp_path / "o.npy")
        argv.remove("--no-progress")
        assert main(argv) == 0
        assert hf_logging.is_progress_bar_enabled()
        assert main(encode(model_dir, src, tmp_path / "o.npy", "--no-progress")) == 0
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


@pytest.mark.parametrize("layout", ["llama", "llada"])
def test_generate_past_the_model_positions_is_refused(checkpoints, capsys, layout):
    # issue 26, item 5: --length 100000 on a 512-position model ran for minutes
    model = checkpoints[layout]
    argv = ["generate", "--model", str(model), "--prompt", "hi", "--length", "100000"]
    start = time.perf_counter()
    rc, err = run(argv, capsys)
    assert rc == 2 and time.perf_counter() - start < 30
    assert str(model) in err and "--length 100000" in err and "512" in err
    prompt_tokens = len(load_tokenizer(model)("hi")["input_ids"])
    assert f"set --length to at most {512 - prompt_tokens}" in err
    long_prompt = " ".join(["fox"] * 600)
    rc, err = run(["generate", "--model", str(model), "--prompt", long_prompt], capsys)
    assert rc == 2 and "--prompt" in err and "512" in err


def test_generate_on_a_language_model_still_generates(checkpoints, capsys):
    argv = ["generate", "--model", str(checkpoints["llama"]), "--prompt", "hi", "--length", "3"]
    rc, err = run(argv, capsys)
    assert rc == 0 and "Loading weights" not in err


# issue 26, unclear errors: every verb with an output checks it before any work, and names it
# (not a temporary file). /proc takes no new file, even from root. The other arguments point
# nowhere: the output's error must come first.
NOWHERE = "/nonexistent-diffembed"
UNWRITABLE_OUTPUTS = [
    (["encode", "--model", "MODEL", "--input", NOWHERE, "--output", "/proc/x.npy"], "--output"),
    (["eval", "--model", "bm25", "--task-dir", NOWHERE, "--out", "/proc/x.json"], "--out"),
    (["pairs", "build", "--corpus", NOWHERE, "--out", "/proc/pairs.jsonl"], "--out"),
    (["corpus", "build", "--out", "/proc/corpus", "--root", NOWHERE], "--out"),
    (["tasks", "build", "--corpus", NOWHERE, "--out", "/proc/tasks"], "--out"),
    (["index", "build", "--model", "MODEL", "--docs", NOWHERE, "--out", "/proc/ix"], "--out"),
    (["index", "add", "/proc/ix", "--docs", NOWHERE], "index"),
    (["demo", "--model", "MODEL", "--out", "/proc/demo"], "--out"),
    (["reproduce", "--preset", "smoke", "--out", "/proc/study"], "--out"),
    (["reproduce", "--preset", "smoke", "--out", "TMP", "--write-pack", "/proc/p.tgz"], "--write"),
    (["reproduce", "--preset", "smoke", "--out", "TMP", "--archive", "/proc/a"], "--archive"),
    (["reproduce", "--preset", "smoke", "--out", "TMP", "--export-best", "/proc/b"], "--export"),
    (
        ["pretrain", "--objective", "ar", "--corpus", NOWHERE, "--tokenizer", NOWHERE]
        + ["--out", "/proc/lm"],
        "--out",
    ),
    (["finetune", "--model", "MODEL", "--pairs", NOWHERE, "--out", "/proc/ft"], "--out"),
    (
        ["tokenizer", "train", "--corpus", NOWHERE, "--vocab-size", "300", "--out", "/proc/tok"],
        "--out",
    ),
]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("argv,flag", UNWRITABLE_OUTPUTS, ids=lambda v: " ".join(v[:3]))
def test_every_output_is_checked_before_the_work(model_dir, tmp_path, capsys, argv, flag):
    argv = [{"MODEL": str(model_dir), "TMP": str(tmp_path)}.get(a, a) for a in argv]
    path = next(a for a in argv if a.startswith("/proc/"))
    start = time.perf_counter()
    rc, err = run(argv, capsys)
    assert rc == 2 and time.perf_counter() - start < 20, err
    assert f"error: {path}: cannot create files in /proc" in err and flag in err
    assert ".tmp" not in err and NOWHERE not in err


def test_tokenizer_directory_problems_are_named(model_dir, tmp_path, capsys):
    # encode --model DIR without tokenizer.json ended with advice to install sentencepiece;
    # pretrain --tokenizer /missing with "Repo id must be in the form ..."
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    (model / "tokenizer.json").unlink()
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    rc, err = run(encode(model, src, tmp_path / "o.npy"), capsys)
    assert rc == 2 and f"{model}: no tokenizer.json" in err and "copy tokenizer.json" in err
    assert "sentencepiece" not in err
    argv = ["pretrain", "--objective", "ar", "--corpus", str(tmp_path), "--tokenizer"]
    rc, err = run([*argv, str(tmp_path / "missing"), "--out", str(tmp_path / "lm")], capsys)
    assert rc == 2 and f"{tmp_path / 'missing'}: no such directory" in err
    assert "Repo id" not in err and "tokenizer directory" in err


def test_text_field_with_txt_input_is_refused(model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    rc, err = run(encode(model_dir, src, tmp_path / "o.npy", "--text-field", "body"), capsys)
    assert rc == 2 and f"{src}: --text-field 'body'" in err and "one text per line" in err
    assert not (tmp_path / "o.npy").exists()


def test_only_user_errors_are_one_line(monkeypatch, tmp_path, capsys):
    """A DiffembedError is the user's: one line, exit 2. Any other exception is a bug and keeps
    its traceback, even a ValueError (the command line used to swallow those too)."""
    import diffembed.cli.model as cli_model
    from diffembed.errors import ConfigError

    argv = encode(tmp_path / "m", tmp_path / "in.txt", tmp_path / "o.npy")

    def refuse(args):
        raise ConfigError("--input: refused for a reason the user can fix")

    monkeypatch.setattr(cli_model, "run_encode", refuse)
    rc, err = run(argv, capsys)
    assert rc == 2 and err.strip() == (
        "diffembed encode: error: --input: refused for a reason the user can fix"
    )

    def bug(args):
        raise ValueError("a programming error")

    monkeypatch.setattr(cli_model, "run_encode", bug)
    with pytest.raises(ValueError, match="a programming error"):
        main(argv)
