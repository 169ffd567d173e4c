"""``scripts/mask_readout.py`` at toy size: every variant of a model evaluated by the project's
eval code, suite means and encode time per text written as JSON and Markdown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from test_evaluate import tasks_root  # noqa: F401 (fixture)

from diffembed.model.backbone import load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    path = ROOT / "scripts" / "mask_readout.py"
    spec = importlib.util.spec_from_file_location("mask_readout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mask_readout_table(script, checkpoints, tasks_root, tmp_path):  # noqa: F811
    # A model saved with its (untied) LM head, which the sparse variants need.
    src = checkpoints["llama"]
    model_dir = Embedder(
        load_backbone(src), load_tokenizer(src), pooling="mask", max_length=48, precision="fp32"
    ).save(tmp_path / "tiny")
    assert (model_dir / "lm_head.safetensors").is_file()
    argv = ["--model", f"tiny={model_dir}", "--tasks-root", str(tasks_root), "--top-k", "5"]
    argv += ["--precision", "fp32", "--timing-texts", "4", "--out", str(tmp_path / "o")]
    record = script.main(argv)
    rows = record["rows"]
    assert [r["variant"] for r in rows] == ["mean", "mask1", "mask4", "sparse", "hybrid"]
    assert record["variants"]["hybrid"] == "dense+sparse"
    for r in rows:
        assert set(r["suites"]) == {"instruct", "traditional"}
        assert r["ms_per_text"] > 0 and r["timing_texts"] == 4
        cell = json.loads(Path(r["result"]).read_text())
        assert cell["settings"]["retriever"] == r["retriever"]
        assert {t["task"] for t in cell["tasks"]} == {"qa", "pets", "topics", "sts"}
    saved = json.loads((tmp_path / "o" / "models" / "tiny-mask4" / "diffembed.json").read_text())
    assert saved["pooling"] == "mask" and saved["mask_tokens"] == 4
    md = (tmp_path / "o" / "mask_readout.md").read_text()
    assert md.splitlines()[0] == "| model | variant | instruct | traditional | ms/text |"
    assert "| tiny | hybrid |" in md
