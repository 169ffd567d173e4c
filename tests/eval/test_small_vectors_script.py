"""``scripts/small_vectors.py`` at toy size: every cell of the grid evaluated through
``evaluate_task`` with ``SmallVectorRetriever``, bytes per document, suite scores and top-10
overlap written as JSON and Markdown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from test_evaluate import tasks_root  # noqa: F401 (fixture)

from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import write_trained_dims

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    path = ROOT / "scripts" / "small_vectors.py"
    spec = importlib.util.spec_from_file_location("small_vectors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_vectors_table(script, model_dir, tasks_root, tmp_path):  # noqa: F811
    mrl = tmp_path / "mrl"
    Embedder.load(model_dir, precision="fp32").save(mrl)
    write_trained_dims(mrl, [32])
    argv = ["--model", f"plain={model_dir}", "--model", f"mrl={mrl}", "--tasks-root"]
    argv += [str(tasks_root), "--fractions", "1/2", "--precision", "fp32", "--top-k", "5"]
    record = script.main([*argv, "--out", str(tmp_path / "w"), "--results", str(tmp_path / "r")])
    rows = record["rows"]
    assert [(r["model"], r["dims"], r["quantize"]) for r in rows[:6]] == [
        ("plain", 64, "none"),
        ("plain", 64, "int8"),
        ("plain", 64, "binary"),
        ("plain", 32, "none"),
        ("plain", 32, "int8"),
        ("plain", 32, "binary"),
    ]
    assert len(rows) == 12 and rows[6]["model"] == "mrl" and rows[6]["trained_dims"] == [32]
    assert rows[0]["top10_overlap"] == 1.0 and rows[0]["bytes_ratio"] == 1.0
    assert rows[2]["bytes_per_doc"] == {"in_memory": 8, "on_disk": 72}
    assert rows[5]["bytes_ratio"] == 4 / 256
    assert set(rows[0]["suites"]) == {"instruct", "traditional"}
    # The same model and settings score alike in both labels (the cache changes nothing).
    assert [r["suites"] for r in rows[:6]] == [r["suites"] for r in rows[6:]]
    for r in rows:
        assert 0.0 <= r["top10_overlap"] <= 1.0
        cell = json.loads((tmp_path / "w" / r["result"]).read_text())
        assert {t["task"] for t in cell["tasks"]} == {"qa", "pets", "topics", "sts"}
    on_disk = json.loads((tmp_path / "r" / "small_vectors.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(rows))
    md = (tmp_path / "r" / "small_vectors.md").read_text()
    assert "| mrl | 32 (trained) | binary | 4 (+32 on disk) | 0.016 |" in md
    assert md.count("\n") == 14
