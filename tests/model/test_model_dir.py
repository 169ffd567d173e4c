"""ModelDir, the one reader of a model directory: what kind of directory it is, its JSON files
read once with errors that name the file, and the refusals a verb needs before loading."""

from __future__ import annotations

import json
import shutil

import pytest

from diffembed.errors import DiffembedError
from diffembed.model.model_dir import CheckpointError, ModelDir, read_settings


def test_an_embedding_model_and_a_bare_lm(model_dir, checkpoints):
    model = ModelDir.open(model_dir)
    assert model.is_ours and model.is_embedding_model
    assert model.settings["max_length"] == 48 == read_settings(model_dir)["max_length"]
    assert model.hidden_size == model.config["hidden_size"]
    model.require_embedding_model()
    lm = ModelDir.open(checkpoints["llama"])
    assert not lm.is_ours and not lm.is_embedding_model and lm.settings is None
    assert not lm.shift
    with pytest.raises(CheckpointError, match=r"--model .*: not an embedding model directory"):
        lm.require_embedding_model("--model")


def test_refusals_name_the_path_and_the_file(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="no such model directory") as missing:
        ModelDir.open(tmp_path / "nope", "--model")
    assert isinstance(missing.value, DiffembedError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"not a model directory \(no config\.json\)"):
        ModelDir.open(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "diffembed.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"diffembed\.json:1: invalid JSON"):
        _ = ModelDir.open(broken).settings
    (broken / "diffembed.json").write_text(json.dumps([1]))
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        read_settings(broken)
