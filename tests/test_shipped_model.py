"""The shipped model cuts texts where its scores were measured (issue 26, item 6): the saved
``max_length`` (diffembed.json and sentence_bert_config.json) of ``models/diffembed-tiny`` and
of any model ``scripts/ship_model.py`` exports equals the length its card's scores were
measured at (the evaluation's ``--max-length``)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import max_positions, read_settings

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "diffembed-tiny"
SWEEP = ROOT / "results" / "ship" / "sweep.json"


def saved_lengths(model: Path) -> dict[str, int]:
    """Every length the model directory saves, and the lengths its card states."""
    card = (model / "README.md").read_text(encoding="utf-8")
    scored = re.search(r"^## Scores \(.*\bat (\d+) tokens\)", card, re.M)
    stated = re.search(r"\bmax_length (\d+) tokens\b", card)
    assert scored and stated, "the card states no scoring length or max_length"
    sentence_bert = json.loads((model / "sentence_bert_config.json").read_text())
    return {
        "diffembed.json": json.loads((model / "diffembed.json").read_text())["max_length"],
        "sentence_bert_config.json": sentence_bert["max_seq_length"],
        "read_settings": read_settings(model)["max_length"],
        "card: scores measured at": int(scored.group(1)),
        "card: max_length": int(stated.group(1)),
    }


def test_shipped_model_saves_the_length_its_scores_were_measured_at():
    sweep = json.loads(SWEEP.read_text())
    evaluation = ROOT / "results" / "ship" / f"eval-{sweep['best']}.json"
    measured = json.loads(evaluation.read_text())["settings"]["max_length"]
    lengths = saved_lengths(SHIPPED)
    assert lengths == dict.fromkeys(lengths, measured), lengths
    config = json.loads((SHIPPED / "config.json").read_text())
    assert measured <= max_positions(config)


@pytest.fixture(scope="module")
def ship_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_saves_the_length_the_model_was_evaluated_at(ship_model, model_dir, tmp_path):
    # A fine-tuned model saves its longest training length (48 here, 256 for the shipped one);
    # it was evaluated at 64: the exported model and its card must both say 64.
    assert read_settings(model_dir)["max_length"] == 48
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"settings": {"max_length": 64}}))
    record = json.loads(SWEEP.read_text())
    best = next(r for r in record["runs"] if r["name"] == record["best"])
    ft = tmp_path / "ft"
    shutil.copytree(model_dir, ft)
    dest = tmp_path / "export"
    length = ship_model.evaluated_length(evaluation)
    ship_model.export_model(ft, dest, record, best, length)
    lengths = saved_lengths(dest)
    assert lengths == dict.fromkeys(lengths, 64), lengths
    assert Embedder.load(dest).max_length == 64
    assert read_settings(ft)["max_length"] == 48  # the fine-tuned run itself is left as it was
