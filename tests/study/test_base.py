"""The third edition's machinery: held-out pairs for the gate, and a study whose rows branch from
a given AR base instead of an LM it pretrains."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from diffembed.formats.pairs import Pair, read_pairs
from diffembed.provenance import file_sha256
from diffembed.study.heldout import heldout_batches, split_heldout, without_queries
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study


def _pair(task: str, i: int) -> Pair:
    return Pair(f"q{i}", f"p{i}", (f"n{i}",), instruction="find it", task=task)


def test_heldout_split_is_seeded_disjoint_and_complete() -> None:
    pairs = [_pair("a", i) for i in range(50)]
    train, held = split_heldout(pairs, 12, seed=0)
    assert len(held) == 12 and len(train) == 38
    assert {p.query for p in train} | {p.query for p in held} == {p.query for p in pairs}
    assert not {p.query for p in train} & {p.query for p in held}
    assert split_heldout(pairs, 12, seed=0) == (train, held)
    assert split_heldout(pairs, 12, seed=1)[1] != held
    with pytest.raises(ValueError, match="cannot hold out 50 of 50"):
        split_heldout(pairs, 50, seed=0)


def test_a_held_out_query_is_trained_on_in_no_pair() -> None:
    # q0..q9 twice each (a query text recurs in a split, with other positives)
    pairs = [_pair("a", i % 10) for i in range(20)]
    train, held = split_heldout(pairs, 4, seed=0)
    queries = [p.query for p in held]
    assert len(queries) == len(set(queries)) == 4
    assert not {p.query for p in train} & set(queries) and len(train) == 12
    assert without_queries(pairs[:3], held) == [p for p in pairs[:3] if p.query not in queries]
    with pytest.raises(ValueError, match="cannot hold out 10 of 10 distinct"):
        split_heldout(pairs, 10, seed=0)


def test_heldout_batches_are_of_one_task_and_full() -> None:
    pairs = [_pair("a", i) for i in range(9)] + [_pair("b", i) for i in range(3)]
    pairs.insert(2, _pair("b", 99))
    batches = heldout_batches(pairs, 4)
    assert [[p.task for p in b] for b in batches] == [["a"] * 4, ["a"] * 4, ["b"] * 4]
    assert [p.query for p in batches[2]] == ["q99", "q0", "q1", "q2"]  # in their order


@pytest.fixture(scope="module")
def branched(smoke: Study, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A study whose ``ar`` LM is the smoke study's AR LM, given as a base."""
    preset = dataclasses.replace(
        PRESETS["smoke"],
        base=str(smoke.out / "lm" / "ar"),
        adapt_curve=None,
        rows=("ar-causal", "random-bi"),
        seeds=(0,),
        references=(),
    )
    study = Study(
        preset=preset,
        out=tmp_path_factory.mktemp("branched"),
        corpus=smoke.corpus,
        device="cpu",
        show_progress=False,
    )
    study.run()
    return study


def test_rows_branch_from_the_base_as_it_is(smoke: Study, branched: Study) -> None:
    base = smoke.out / "lm" / "ar"
    ar = branched.out / "lm" / "ar"
    assert file_sha256(ar / "model.safetensors") == file_sha256(base / "model.safetensors")
    assert file_sha256(branched.out / "tokenizer" / "tokenizer.json") == file_sha256(
        base / "tokenizer.json"
    )
    assert not (branched.out / "lm" / "ar" / "checkpoint").exists()  # not trained again
    # the control has the base's architecture, never trained
    base_cfg = json.loads((base / "config.json").read_text())
    random_cfg = json.loads((branched.out / "lm" / "random" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"):
        assert random_cfg[key] == base_cfg[key], key
    # the compute table counts the base's own tokens
    summary = json.loads((branched.out / "summary.json").read_text())
    tokens = json.loads((base / "pretrain.json").read_text())["tokens_trained"]
    assert summary["pretraining"]["ar-causal"]["tokens"] == tokens
    # held-out pairs are kept out of training
    held = {p.query for p in read_pairs(branched.out / "pairs" / "heldout.jsonl")}
    train = {p.query for p in read_pairs(branched.out / "pairs" / "pairs.jsonl")}
    assert len(held) == branched.preset.training_pairs.heldout and not held & train
    assert summary["learning"]["ar-causal"]["heldout"]["batches"] >= 2


def test_a_base_that_is_not_an_ar_run_is_refused(smoke: Study, tmp_path: Path) -> None:
    from diffembed.study.lms import base_config

    with pytest.raises(ValueError, match="pretrain.json: missing"):
        base_config(tmp_path)
    (tmp_path / "pretrain.json").write_text(json.dumps({"config": {"objective": "diffusion"}}))
    with pytest.raises(ValueError, match="objective 'diffusion'; the study's base is an AR LM"):
        base_config(tmp_path)
    assert base_config(smoke.out / "lm" / "ar")["objective"] == "ar"
