"""Pairs files in other layouts (issue 16, item 15): sentence-transformers' anchor / positive /
negative columns with one ``--instruction`` for the file, or any columns mapped with
``--columns``; errors say which option helps."""

from __future__ import annotations

import json

import pytest

from diffembed.cli.main import build_parser
from diffembed.cli.train import config_from_args
from diffembed.formats.pairs import Pair, PairsError, parse_columns, read_pairs

INSTRUCTION = "Given a question, retrieve the answer"


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sentence_transformers_triplets_with_one_instruction(tmp_path):
    path = write(
        tmp_path / "st.jsonl",
        [
            {"anchor": "what is a fox", "positive": "A fox is a canid.", "negative": "A dog."},
            {"anchor": "what is a cat", "positive": "A cat is a felid."},
        ],
    )
    pairs = read_pairs(path, instruction=INSTRUCTION)
    assert pairs == [
        Pair("what is a fox", "A fox is a canid.", ("A dog.",), INSTRUCTION, "query"),
        Pair("what is a cat", "A cat is a felid.", (), INSTRUCTION, "query"),
    ]


def test_numbered_negative_columns_keep_their_order(tmp_path):
    row = {
        "anchor": "q",
        "positive": "p",
        "negative_2": "n2",
        "negative_1": "n1",
        "negative_10": "x",
    }
    pairs = read_pairs(write(tmp_path / "st.jsonl", [row]), instruction=INSTRUCTION)
    assert pairs[0].negatives == ("n1", "n2", "x")


def test_sentence_transformers_columns_without_instruction_say_which_option(tmp_path):
    path = write(tmp_path / "st.jsonl", [{"anchor": "q", "positive": "p", "negative": "n"}])
    with pytest.raises(PairsError) as exc:
        read_pairs(path)
    message = str(exc.value)
    assert message.startswith(f"{path}:1:") and "anchor" in message and "--instruction" in message


def test_columns_map_any_layout(tmp_path):
    row = {"question": "q", "answer": "p", "hard": ["n1", "n2"], "other": "n3", "kind": "qa"}
    path = write(tmp_path / "p.jsonl", [row])
    columns = "query=question,positive=answer,negatives=hard+other,task=kind"
    pairs = read_pairs(path, instruction=INSTRUCTION, columns=columns)
    assert pairs == [Pair("q", "p", ("n1", "n2", "n3"), INSTRUCTION, "qa")]


def test_missing_mapped_column_is_named(tmp_path):
    path = write(tmp_path / "p.jsonl", [{"question": "q", "answer": "p"}])
    with pytest.raises(
        PairsError, match=r"p\.jsonl:1: no column 'hard' \(--columns negatives=hard"
    ):
        read_pairs(
            path, instruction=INSTRUCTION, columns="query=question,positive=answer,negatives=hard"
        )


def test_unknown_layout_suggests_columns(tmp_path):
    path = write(tmp_path / "p.jsonl", [{"question": "q", "answer": "p"}])
    with pytest.raises(PairsError, match=r"found question, answer.*--columns"):
        read_pairs(path)


def test_instruction_conflicts_with_an_instruction_field(tmp_path):
    row = {
        "query": "q",
        "positive": "p",
        "negatives": [],
        "instruction": "Own instruction",
        "task": "t",
    }
    path = write(tmp_path / "p.jsonl", [row])
    assert read_pairs(path)[0].instruction == "Own instruction"
    with pytest.raises(PairsError, match=r"p\.jsonl:1: .*instruction.*--instruction"):
        read_pairs(path, instruction=INSTRUCTION)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("query", "expected FIELD=COLUMN"),
        ("query=a,query=b", "'query' mapped twice"),
        ("anchor=query", "unknown field 'anchor'"),
        ("query=", "expected FIELD=COLUMN"),
    ],
)
def test_bad_columns_spec(spec, message):
    with pytest.raises(PairsError, match=message):
        parse_columns(spec)


def test_finetune_cli_passes_instruction_and_columns():
    argv = ["finetune", "--model", "m", "--pairs", "p.jsonl", "--out", "o"]
    argv += ["--instruction", INSTRUCTION, "--columns", "query=question"]
    config = config_from_args(build_parser().parse_args(argv))
    assert config.instruction == INSTRUCTION and config.columns == "query=question"


def test_finetune_config_refuses_a_bad_columns_spec():
    argv = ["finetune", "--model", "m", "--pairs", "p.jsonl", "--out", "o", "--columns", "x"]
    with pytest.raises(ValueError, match="--columns"):
        config_from_args(build_parser().parse_args(argv))
