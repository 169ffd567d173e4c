"""Backbone loading: attention direction, native-layout parity, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaModel, Qwen2Config, Qwen2Model

from checkpoints import LAYOUTS, llada_reference, write_checkpoint
from diffembed.model.backbone import (
    LLADA_KEY_MAPPING,
    CheckpointError,
    build_config,
    checkpoint_tensors,
    inspect_backbone,
    load_backbone,
    validate_weights,
)


def _hidden(model, ids, mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bidirectional_sees_later_tokens_and_causal_does_not(checkpoints, layout):
    a = torch.tensor([[1, 40, 41, 42, 43, 44]])
    b = a.clone()
    b[0, -1] = 99  # change only the last token
    bi = load_backbone(checkpoints[layout], attention="bidirectional")
    ca = load_backbone(checkpoints[layout], attention="causal")
    assert (_hidden(bi, a)[0, 0] - _hidden(bi, b)[0, 0]).abs().max() > 1e-3
    assert (_hidden(ca, a)[0, 0] - _hidden(ca, b)[0, 0]).abs().max() < 1e-6
    # The last position sees the change in both.
    assert (_hidden(ca, a)[0, -1] - _hidden(ca, b)[0, -1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "layout,default",
    [
        ("qwen2", "causal"),
        ("llama", "causal"),
        ("mistral", "causal"),
        ("dream", "bidirectional"),
        ("llada", "bidirectional"),
    ],
)
def test_default_attention_is_the_checkpoints_own(checkpoints, layout, default):
    assert inspect_backbone(checkpoints[layout]).default_attention == default
    model = load_backbone(checkpoints[layout])
    assert model.config.is_causal == (default == "causal")


def test_is_causal_in_config_sets_default(tmp_path, tokenizer):
    path = write_checkpoint(tmp_path / "m", "llama", tokenizer)
    cfg = json.loads((path / "config.json").read_text())
    cfg["is_causal"] = False
    (path / "config.json").write_text(json.dumps(cfg))
    assert inspect_backbone(path).default_attention == "bidirectional"
    assert load_backbone(path).config.is_causal is False


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    return ids, mask


def test_dream_matches_qwen2model_bidirectional(checkpoints):
    path = checkpoints["dream"]
    raw = json.loads((path / "config.json").read_text())
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        raw.pop(key)
    config = Qwen2Config(**raw)
    config.is_causal = False
    reference = Qwen2Model(config).eval()
    weights = load_file(str(path / "model.safetensors"))
    reference.load_state_dict(
        {k.removeprefix("model."): v for k, v in weights.items() if k != "lm_head.weight"},
        strict=True,
    )
    ours = load_backbone(path)
    ids, mask = _padded_batch()
    diff = (_hidden(ours, ids, mask) - _hidden(reference, ids, mask))[mask.bool()]
    assert diff.abs().max() < 1e-5


def test_llada_matches_llamamodel_after_remap(checkpoints, tokenizer):
    source = llada_reference(tokenizer).model
    source.config.is_causal = False
    reference = LlamaModel(source.config).eval()  # built after the flag is set
    reference.load_state_dict(source.state_dict())
    ours = load_backbone(checkpoints["llada"])
    ids, mask = _padded_batch()
    diff = (_hidden(ours, ids, mask) - _hidden(reference, ids, mask))[mask.bool()]
    assert diff.abs().max() < 1e-5
    # And the reference really is bidirectional (so the parity is not vacuous).
    b = ids.clone()
    b[0, -1] = 99
    assert (_hidden(reference, ids)[0, 0] - _hidden(reference, b)[0, 0]).abs().max() > 1e-3


def test_every_llada_tensor_is_consumed_and_none_missing(checkpoints):
    path = checkpoints["llada"]
    tensors = checkpoint_tensors(path)
    with torch.device("meta"):
        skeleton = build_config(path)
        model = LlamaModel(skeleton[0])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    consumed = validate_weights(tensors, expected, LLADA_KEY_MAPPING, path)
    assert set(consumed) == set(tensors)  # every checkpoint tensor used
    targets = set(consumed.values())
    assert set(expected) <= targets  # every model parameter filled
    assert consumed["model.transformer.ff_out.weight"] == "lm_head.weight"
    assert consumed["model.transformer.blocks.1.ff_out.weight"] == "layers.1.mlp.down_proj.weight"
    assert (
        consumed["model.transformer.blocks.0.attn_out.weight"] == "layers.0.self_attn.o_proj.weight"
    )


# ----------------------------------------------------------------------------- errors
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(path: Path, fn) -> None:
    weights = load_file(str(path / "model.safetensors"))
    fn(weights)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_unknown_model_type(tmp_path, checkpoints):
    path = _copy(checkpoints["llama"], tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "gpt_neox_custom"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"config\.json.*unknown model_type 'gpt_neox_custom'"
    ):
        load_backbone(path)


def test_remote_code_directory_is_refused(tmp_path, checkpoints):
    path = _copy(checkpoints["llama"], tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="fancy", auto_map={"AutoModel": "modeling_fancy.FancyModel"})
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json.*remote code.*modeling_fancy"):
        load_backbone(path)


def test_auto_map_of_a_known_model_type_is_ignored_with_a_warning(tmp_path, checkpoints, caplog):
    # issue 26: README said remote-code directories are refused while this loaded with an INFO
    # line; no remote code runs either way, and the user is now told at WARNING.
    path = _copy(checkpoints["llama"], tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_fancy.FancyModel"}
    (path / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="diffembed.model.backbone"):
        load_backbone(path)
    [record] = [r for r in caplog.records if "auto_map" in r.getMessage()]
    message = record.getMessage()
    assert record.levelname == "WARNING" and str(path / "config.json") in message
    assert "modeling_fancy.FancyModel" in message and "never run" in message


def test_missing_weights_file(tmp_path, checkpoints):
    path = _copy(checkpoints["qwen2"], tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_backbone(path)
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*never loaded"):
        load_backbone(path)


def test_missing_tensor_is_named(tmp_path, checkpoints):
    path = _copy(checkpoints["llada"], tmp_path / "m")
    _edit_weights(path, lambda w: w.pop("model.transformer.blocks.1.ff_norm.weight"))
    with pytest.raises(
        CheckpointError, match=r"missing tensors \(1\): layers\.1\.post_attention_layernorm"
    ):
        load_backbone(path)


def test_unexpected_tensor_is_named(tmp_path, checkpoints):
    path = _copy(checkpoints["qwen2"], tmp_path / "m")
    _edit_weights(path, lambda w: w.update({"model.extra.weight": torch.zeros(2)}))
    with pytest.raises(
        CheckpointError, match=r"unexpected tensors.*model\.extra\.weight \(model\.safetensors\)"
    ):
        load_backbone(path)


def test_shape_mismatch_is_named(tmp_path, checkpoints):
    path = _copy(checkpoints["qwen2"], tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch: model\.layers\.0\.mlp\.\w+_proj\.weight in model\.safetensors",
    ):
        load_backbone(path)


def test_bad_json_and_missing_dir(tmp_path, checkpoints):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_backbone(tmp_path / "nope")
    path = _copy(checkpoints["qwen2"], tmp_path / "m")
    (path / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"config\.json:1: invalid JSON"):
        load_backbone(path)


def test_unsupported_llada_option(tmp_path, checkpoints):
    path = _copy(checkpoints["llada"], tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["block_type"] = "sequential"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="block_type='sequential' is not supported"):
        load_backbone(path)


def test_sharded_checkpoint(tmp_path, checkpoints):
    path = _copy(checkpoints["qwen2"], tmp_path / "m")
    weights = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    names = sorted(weights)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for file, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(path / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    ids, mask = _padded_batch()
    a = _hidden(load_backbone(path), ids, mask)
    b = _hidden(load_backbone(checkpoints["qwen2"]), ids, mask)
    assert torch.allclose(a, b)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors: shard named"):
        load_backbone(path)


def test_bf16_dtype(checkpoints):
    model = load_backbone(checkpoints["llama"], dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_backbone(checkpoints["llama"], dtype="int3")
