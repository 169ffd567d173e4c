"""Option values the command line refuses while parsing (issue 16, items 9 and 10): each with a
message that names the flag, exit status 2 and no traceback."""

from __future__ import annotations

import pytest
import torch

from diffembed.cli.main import build_parser

ENCODE = ["encode", "--model", "m", "--input", "in.txt", "--output", "o.npy"]
BUILD = ["index", "build", "--model", "m", "--docs", "d.jsonl", "--out", "ix"]
SERVE = ["serve", "--model", "m"]
GENERATE = ["generate", "--model", "m", "--prompt", "hi"]


def parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv,flag,expected",
    [
        (ENCODE + ["--batch-tokens", "0"], "--batch-tokens", "an integer >= 1"),
        (ENCODE + ["--batch-tokens", "-5"], "--batch-tokens", "an integer >= 1"),
        (ENCODE + ["--batch-size", "0"], "--batch-size", "an integer >= 1"),
        (ENCODE + ["--batch-size", "-1"], "--batch-size", "an integer >= 1"),
        (ENCODE + ["--max-length", "0"], "--max-length", "an integer >= 1"),
        (ENCODE + ["--batch-size", "two"], "--batch-size", "an integer >= 1"),
        (BUILD + ["--ef-search", "-1"], "--ef-search", "an integer >= 1"),
        (BUILD + ["--hnsw-m", "1"], "--hnsw-m", "an integer >= 2"),
        (BUILD + ["--chunk-tokens", "0"], "--chunk-tokens", "an integer >= 1"),
        (BUILD + ["--chunk-overlap", "-1"], "--chunk-overlap", "an integer >= 0"),
        (["search", "ix", "q", "-k", "0"], "-k", "an integer >= 1"),
        (GENERATE + ["--temperature", "-1"], "--temperature", "a number >= 0"),
        (GENERATE + ["--temperature", "nan"], "--temperature", "a number >= 0"),
        (GENERATE + ["--length", "0"], "--length", "an integer >= 1"),
        (GENERATE + ["--steps", "0"], "--steps", "an integer >= 1"),
        (SERVE + ["--port", "70000"], "--port", "a port number from 0 to 65535"),
        (SERVE + ["--port", "-1"], "--port", "a port number from 0 to 65535"),
        (SERVE + ["--max-batch-tokens", "0"], "--max-batch-tokens", "an integer >= 1"),
        (SERVE + ["--max-queue", "0"], "--max-queue", "an integer >= 1"),
        (SERVE + ["--batch-wait-ms", "-1"], "--batch-wait-ms", "a number >= 0"),
        (SERVE + ["--threads", "0"], "--threads", "an integer >= 1"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_flag(argv, flag, expected, capsys):
    line = parse_error(argv, capsys)
    assert f"argument {flag}" in line and expected in line, line


def test_valid_values_still_parse():
    args = build_parser().parse_args(ENCODE + ["--batch-size", "1", "--batch-tokens", "64"])
    assert (args.batch_size, args.batch_tokens) == (1, 64)
    args = build_parser().parse_args(SERVE + ["--port", "0"])
    assert args.port == 0
    args = build_parser().parse_args(GENERATE + ["--temperature", "0"])
    assert args.temperature == 0.0


def test_unknown_device_is_refused(capsys):
    line = parse_error(ENCODE + ["--device", "bogus"], capsys)
    assert "argument --device" in line and "'bogus'" in line and "cpu" in line


def test_cuda_without_cuda_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = parse_error(ENCODE + ["--device", "cuda"], capsys)
    assert "argument --device" in line and "CUDA is not available" in line
    assert "--device cpu" in line
    line = parse_error(
        ["finetune", "--model", "m", "--pairs", "p", "--out", "o", "--device", "cuda:0"], capsys
    )
    assert "argument --device" in line and "CUDA is not available" in line


def test_cuda_index_past_the_devices_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = parse_error(ENCODE + ["--device", "cuda:3"], capsys)
    assert "cuda:3" in line and "1 CUDA device" in line
    assert build_parser().parse_args(ENCODE + ["--device", "cuda:0"]).device == "cuda:0"


def test_auto_device_of_finetune_still_parses():
    argv = ["finetune", "--model", "m", "--pairs", "p", "--out", "o"]
    assert build_parser().parse_args(argv).device == "auto"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse's line wrapping undone


def test_strict_help_gives_each_refusal_its_own_default(capsys):
    # issue 26: index add --help printed "(default: leave them out, counted) (default: warn)"
    text = _help(["index", "add"], capsys)
    assert "refuse documents with empty text and title (default: leave them out, counted)" in text
    assert "(default: warn)" not in text
    text = _help(["index", "build"], capsys)
    assert text.count("(default: leave them out, counted)") == 1
    assert "above the model's positions (default: warn)" in text
    assert text.count("(default: warn)") == 1 and ") (default:" not in text
