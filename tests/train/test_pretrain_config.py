"""PretrainConfig and FinetuneConfig: ``precision`` is the one name of the compute precision;
the boolean ``bf16`` it replaced still loads (config files, keyword, ``--bf16``/``--no-bf16``)
and hashes as before, so committed checkpoints resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from diffembed.cli.main import build_parser
from diffembed.errors import ConfigError
from diffembed.train.finetune_config import FinetuneConfig
from diffembed.train.pretrain_config import PretrainConfig, config_hash, make_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_base_run_keeps_its_config_hash():
    """results/base/run/checkpoint-stable resumes only when the config hashes as it did."""
    saved = json.loads((ROOT / "results/base/run/checkpoint-stable/trainer.json").read_text())
    config = make_config("cpu", "ar", ROOT / "results/base/config.json")
    assert config.precision == "bf16"
    assert config_hash(config) == saved["config_hash"]


@pytest.mark.parametrize(("old", "new"), [(True, "bf16"), (False, "fp32")])
def test_bf16_in_a_config_file_is_read_as_precision(tmp_path, old, new):
    old_file, new_file = tmp_path / "old.json", tmp_path / "new.json"
    old_file.write_text(json.dumps({"bf16": old}))
    new_file.write_text(json.dumps({"precision": new}))
    from_old = make_config("smoke", "ar", old_file)
    assert from_old.precision == new
    assert config_hash(from_old) == config_hash(make_config("smoke", "ar", new_file))
    assert "bf16" not in dataclasses.asdict(from_old)
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"bf16": old, "precision": new}))
    with pytest.raises(ConfigError, match="not also bf16"):
        make_config("smoke", "ar", both)


def test_bf16_keyword_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="precision"):
        assert PretrainConfig(bf16=False).precision == "fp32"
    with pytest.warns(DeprecationWarning, match="precision"):
        config = FinetuneConfig(model="m", pairs="p", out="o", bf16=False)
    assert config.precision == "fp32"
    assert dataclasses.replace(config, steps=3).precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        PretrainConfig(precision="fp16").validate()


def test_precision_flags_and_their_old_names():
    parser = build_parser()
    base = ["finetune", "--model", "m", "--pairs", "p", "--out", "o"]
    assert parser.parse_args(base).precision == "bf16"
    assert parser.parse_args([*base, "--precision", "auto"]).precision == "auto"
    assert parser.parse_args([*base, "--no-bf16"]).precision == "fp32"
    assert parser.parse_args([*base, "--bf16"]).precision == "bf16"
    encode = ["encode", "--model", "m", "--input", "i", "--output", "o"]
    assert parser.parse_args(encode).precision == "auto"
    assert parser.parse_args([*encode, "--dtype", "fp32"]).precision == "fp32"
    assert parser.parse_args([*encode, "--precision", "bf16"]).precision == "bf16"
