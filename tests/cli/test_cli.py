"""The command line: encode end to end, input errors with line numbers, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffembed.cli.main import build_parser, main
from diffembed.formats.texts import InputError, read_texts
from diffembed.model.embedder import Embedder

TEXTS = ["A dictionary defines words.", "Retrieval finds relevant documents.", "fox 2024"]


@pytest.fixture(scope="module")
def model_dir(checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    Embedder.load(checkpoints["llama"], prompts={"query": "Find it"}).save(path)
    return path


@pytest.mark.slow
def test_encode_txt_matches_python_api(model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffembed",
            "encode",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--output",
            str(out),
            "--precision",
            "fp32",
            "--prompt-name",
            "query",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "3 x 64" in proc.stderr
    got = np.load(out)
    want = Embedder.load(model_dir, precision="fp32").encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.npy"]  # no temp files left


def test_encode_compile_gives_the_same_vectors_or_a_clear_error(model_dir, tmp_path, capsys):
    import torch._inductor.config as inductor

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    args = ["encode", "--model", str(model_dir), "--input", str(src), "--precision", "fp32"]
    assert main([*args, "--output", str(tmp_path / "c.npy"), "--compile"]) == 0
    want = Embedder.load(model_dir, precision="fp32").encode(TEXTS)
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), want, atol=1e-5)
    # Without a C++ compiler: exit 2, one line naming the flag, nothing written.
    no_compiler = inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False})
    torch._dynamo.reset()  # forget code compiled earlier in this process
    capsys.readouterr()
    with no_compiler:
        assert main([*args, "--output", str(tmp_path / "f.npy"), "--compile"]) == 2
    err = capsys.readouterr().err
    assert "error: torch.compile failed" in err and "--compile" in err and "Traceback" not in err
    assert not (tmp_path / "f.npy").exists()


def test_encode_jsonl_with_field_and_truncation_report(model_dir, tmp_path, caplog):
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": i, "body": t * 5}) + "\n" for i, t in enumerate(TEXTS))
    )
    out = tmp_path / "out.npy"
    rc = main(
        [
            "encode",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--output",
            str(out),
            "--text-field",
            "body",
            "--max-length",
            "8",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert np.load(out).shape == (3, 64)
    assert "truncated 3 of 3" in caplog.text
    rc = main(
        [
            "encode",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--output",
            str(out),
            "--text-field",
            "body",
            "--max-length",
            "8",
            "--no-truncate",
        ]
    )
    assert rc == 2


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("a.txt", "one\n\nthree\n", r"a\.txt:2: empty text"),
        ("b.jsonl", '{"text": "ok"}\n{"text": \n', r"b\.jsonl:2: invalid JSON"),
        ("c.jsonl", '{"text": "ok"}\n{"txt": "x"}\n', r"c\.jsonl:2: no field 'text'"),
        ("d.jsonl", '{"text": "ok"}\n{"text": 5}\n', r"d\.jsonl:2: field 'text' is int"),
        ("e.txt", "", r"e\.txt: no texts"),
    ],
)
def test_malformed_input_names_the_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        read_texts(tmp_path / name)


def test_errors_exit_2_and_keep_existing_output(model_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("ok\n\n")
    out = tmp_path / "out.npy"
    out.write_bytes(b"previous")
    assert (
        main(["encode", "--model", str(model_dir), "--input", str(src), "--output", str(out)]) == 2
    )
    assert "in.txt:2: empty text" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert (
        main(
            ["encode", "--model", str(tmp_path / "none"), "--input", str(src), "--output", str(out)]
        )
        == 2
    )


def test_help_lists_every_option(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["encode", "--help"])
    text = capsys.readouterr().out
    for option in [
        "--model",
        "--input",
        "--output",
        "--prompt",
        "--prompt-name",
        "--max-length",
        "--batch-tokens",
        "--precision",
        "--text-field",
        "--no-truncate",
        "--attention",
        "--pooling",
        "--device",
        "--batch-size",
        "--no-progress",
    ]:
        assert option in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "encode" in capsys.readouterr().out
