"""Reading and validating training-pairs files: errors name the file and line; warnings count."""

from __future__ import annotations

import json
import logging

import pytest

from diffembed.formats.pairs import Pair, PairsError, read_pairs, write_pairs

GOOD = {
    "query": "what is a fox",
    "positive": "A fox is a small omnivore.",
    "negatives": ["A dog is a domesticated wolf."],
    "instruction": "Given a question, retrieve the passage that answers it",
    "task": "qa",
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reads_valid_file_and_skips_blank_lines(tmp_path):
    other = {**GOOD, "query": "what is a dog", "negatives": [], "task": "other"}
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(GOOD), "", "  ", json.dumps(other)])
    pairs = read_pairs(path)
    assert pairs == [
        Pair(
            query=GOOD["query"],
            positive=GOOD["positive"],
            negatives=tuple(GOOD["negatives"]),
            instruction=GOOD["instruction"],
            task="qa",
        ),
        Pair(other["query"], other["positive"], (), other["instruction"], "other"),
    ]


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"query": "a", ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "positive"}), "missing field.*positive"),
        (json.dumps({**GOOD, "query": "   "}), "field 'query' is empty"),
        (json.dumps({**GOOD, "instruction": ""}), "field 'instruction' is empty"),
        (json.dumps({**GOOD, "task": 3}), "field 'task' is int, not a string"),
        (json.dumps({**GOOD, "positive": None}), "field 'positive' is NoneType"),
        (json.dumps({**GOOD, "negatives": "a dog"}), "'negatives' is str, not a list"),
        (json.dumps({**GOOD, "negatives": ["ok", 5]}), r"negatives\[1\] is int"),
        (json.dumps({**GOOD, "negatives": ["ok", " "]}), r"negatives\[1\] is empty"),
    ],
)
def test_errors_name_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD), line])
    with pytest.raises(PairsError, match=message) as err:
        read_pairs(path)
    assert str(err.value).startswith(f"{path}:4: ")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PairsError, match="no such file"):
        read_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(PairsError, match="no pairs"):
        read_pairs(write_lines(tmp_path / "empty.jsonl", ["", " "]))


def test_duplicates_and_empty_negatives_are_warned_with_counts(tmp_path, caplog):
    rows = [GOOD, GOOD, GOOD, {**GOOD, "query": "q2", "negatives": []}, {**GOOD, "query": "q2"}]
    rows.append({**GOOD, "query": "q3", "negatives": []})
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(r) for r in rows])
    with caplog.at_level(logging.WARNING, logger="diffembed.formats.pairs"):
        pairs = read_pairs(path)
    assert len(pairs) == 6
    text = caplog.text
    assert "2 queries occur more than once (3 extra rows)" in text
    assert "2 of 6 pairs have an empty negatives list" in text


def test_write_pairs_round_trips(tmp_path):
    pairs = [
        Pair("q1", "p1", ("n1", "n2"), "Find it", "t"),
        Pair("q2 ü", "p2", (), "Find it", "t"),
    ]
    path = write_pairs(tmp_path / "pairs.jsonl", pairs)
    assert read_pairs(path) == pairs
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[1])["query"] == "q2 ü"
