"""Load a language-model checkpoint from a local directory as an embedding backbone.

A *backbone* is a transformers base model (``Qwen2Model``, ``LlamaModel`` or ``MistralModel``)
whose forward pass maps ``input_ids [B, T]`` + ``attention_mask [B, T]`` to
``last_hidden_state [B, T, H]`` (final, post-norm hidden states).

Supported directories (safetensors weights only; never remote code, never pickle):

* ``qwen2`` / ``llama`` / ``mistral`` Hugging Face directories (including ours);
* **Dream** (``model_type: "Dream"``): Qwen2 tensor names, loaded into ``Qwen2Model``;
* **LLaDA** (``model_type: "llada"``): ``model.transformer.blocks.N.*`` tensor names, remapped
  onto ``LlamaModel`` (see ``LLADA_KEY_MAPPING``).

Attention is ``"bidirectional"`` or ``"causal"``. Bidirectional attention is set by the route
verified on transformers 5.x: ``config.is_causal = False`` before the model is built (setting the
flag on attention modules afterwards is wrong with both sdpa and eager). The default is what the
checkpoint was trained with: bidirectional for diffusion LMs, causal for autoregressive ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from transformers import (
    LlamaConfig,
    LlamaModel,
    MistralConfig,
    MistralModel,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2Model,
)
from transformers.utils import logging as hf_logging

from diffembed.errors import ConfigError
from diffembed.model.model_dir import ATTENTIONS, CheckpointError, ModelDir

logger = logging.getLogger(__name__)

Attention = Literal["bidirectional", "causal"]

# Native transformers families: model_type -> (config class, base model class).
_NATIVE: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "qwen2": (Qwen2Config, Qwen2Model),
    "llama": (LlamaConfig, LlamaModel),
    "mistral": (MistralConfig, MistralModel),
}
# Diffusion LMs that have no native class; mapped onto one. Keys are lower-cased model_type.
_DIFFUSION_FAMILIES = ("dream", "llada")
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (*_NATIVE, "Dream", "llada")

# LLaDA tensor names -> Llama (CausalLM-style) tensor names. Applied in order with re.sub; the
# patterns are anchored and disjoint, so at most one applies to a name.
LLADA_KEY_MAPPING: dict[str, str] = {
    r"^model\.transformer\.wte\.": "model.embed_tokens.",
    r"^model\.transformer\.ln_f\.": "model.norm.",
    r"^model\.transformer\.ff_out\.": "lm_head.",
    r"^model\.transformer\.blocks\.(\d+)\.q_proj\.": r"model.layers.\1.self_attn.q_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.k_proj\.": r"model.layers.\1.self_attn.k_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.v_proj\.": r"model.layers.\1.self_attn.v_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.attn_out\.": r"model.layers.\1.self_attn.o_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_proj\.": r"model.layers.\1.mlp.gate_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.up_proj\.": r"model.layers.\1.mlp.up_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_out\.": r"model.layers.\1.mlp.down_proj.",
    r"^model\.transformer\.blocks\.(\d+)\.attn_norm\.": r"model.layers.\1.input_layernorm.",
    r"^model\.transformer\.blocks\.(\d+)\.ff_norm\.": r"model.layers.\1.post_attention_layernorm.",
}

# Config keys that only describe remote code or the original class; never copied over.
_FOREIGN_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class BackboneInfo:
    """What a model directory is, read from its config without loading weights.

    Attributes:
        path: the directory.
        model_type: ``model_type`` as written in config.json (e.g. ``"Dream"``).
        family: the transformers family it loads into (``"qwen2"``, ``"llama"``, ``"mistral"``).
        default_attention: the attention it was trained with.
        objective: pretraining objective when known (``"diffusion"``, ``"ar"``, ``"mntp"``).
        mask_token_id: the mask token of a diffusion LM, when known.
    """

    path: Path
    model_type: str
    family: str
    default_attention: Attention
    objective: str | None
    mask_token_id: int | None


def _llada_to_llama_config(raw: dict[str, Any], cfg_file: Path) -> LlamaConfig:
    """Translate a LLaDA config.json into an equivalent ``LlamaConfig`` (or raise)."""
    # Architectural options LlamaModel cannot express: refuse rather than load something else.
    unsupported = {
        "block_type": ("llama", None),
        "activation_type": ("silu", "swiglu", None),
        "layer_norm_type": ("rms", None),
        "alibi": (False, None),
        "rope": (True, None),
        "input_emb_norm": (False, None),
        "attention_layer_norm": (False, None),
        "include_bias": (False, None),
        "include_qkv_bias": (False, None),
        "clip_qkv": (None,),
        "multi_query_attention": (False, None),
    }
    for key, allowed in unsupported.items():
        if raw.get(key) not in allowed:
            raise CheckpointError(
                f"{cfg_file}: LLaDA option {key}={raw.get(key)!r} is not supported "
                f"(supported: {[a for a in allowed if a is not None]})"
            )
    for key in ("d_model", "n_layers", "n_heads", "mlp_hidden_size"):
        if key not in raw:
            raise CheckpointError(f"{cfg_file}: LLaDA config lacks required field {key!r}")
    vocab = raw.get("embedding_size") or raw.get("vocab_size")
    if vocab is None:
        raise CheckpointError(f"{cfg_file}: LLaDA config lacks 'embedding_size' and 'vocab_size'")
    extra = {k: v for k, v in raw.items() if k.endswith("_token_id")}
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=int(raw["d_model"]),
        intermediate_size=int(raw["mlp_hidden_size"]),
        num_hidden_layers=int(raw["n_layers"]),
        num_attention_heads=int(raw["n_heads"]),
        num_key_value_heads=int(raw.get("n_kv_heads") or raw["n_heads"]),
        hidden_act="silu",
        max_position_embeddings=int(raw.get("max_sequence_length", 4096)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        **extra,
    )


def build_config(path: Path) -> tuple[PretrainedConfig, BackboneInfo, dict[str, str] | None]:
    """Read ``path/config.json`` into a native transformers config, a ``BackboneInfo`` and the
    checkpoint's tensor-name mapping (None when names are already native)."""
    cfg_file = path / "config.json"
    raw = ModelDir.open(path).config
    model_type = raw.get("model_type")
    if model_type is None:
        raise CheckpointError(f"{cfg_file}: no 'model_type' field")
    key_mapping: dict[str, str] | None = None
    mtype = str(model_type)
    if mtype in _NATIVE:
        family = mtype
        config = _NATIVE[family][0].from_dict({k: v for k, v in raw.items() if k != "auto_map"})
    elif mtype.lower() == "dream":
        family = "qwen2"
        kept = {k: v for k, v in raw.items() if k not in _FOREIGN_CONFIG_KEYS}
        config = Qwen2Config(**kept)
    elif mtype.lower() == "llada":
        family = "llama"
        config = _llada_to_llama_config(raw, cfg_file)
        key_mapping = LLADA_KEY_MAPPING
    elif "auto_map" in raw:
        raise CheckpointError(
            f"{cfg_file}: model_type {mtype!r} asks for remote code (auto_map: "
            f"{json.dumps(raw['auto_map'])}); diffembed never runs remote code. "
            f"Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    else:
        raise CheckpointError(
            f"{cfg_file}: unknown model_type {mtype!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if mtype != family:
        config.diffembed_source_model_type = mtype
    if "auto_map" in raw:
        logger.warning(
            "%s: auto_map ignored: its remote code (%s) is never run; the model is loaded into "
            "transformers' native %s code",
            cfg_file,
            json.dumps(raw["auto_map"]),
            family,
        )

    objective = raw.get("diffembed_objective")
    if objective is None and mtype.lower() in _DIFFUSION_FAMILIES:
        objective = "diffusion"
    if "is_causal" in raw:
        default: Attention = "causal" if raw["is_causal"] else "bidirectional"
    elif objective in ("diffusion", "mntp"):
        default = "bidirectional"
    else:
        default = "causal"
    mask_id = raw.get("mask_token_id")
    info = BackboneInfo(
        path=path,
        model_type=mtype,
        family=family,
        default_attention=default,
        objective=objective,
        mask_token_id=int(mask_id) if mask_id is not None else None,
    )
    return config, info, key_mapping


def inspect_backbone(path: str | Path) -> BackboneInfo:
    """Describe the model directory at ``path`` without loading weights."""
    return build_config(Path(path))[1]


def checkpoint_tensors(path: str | Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """List the tensors of a safetensors checkpoint: name -> (shape, file).

    Reads ``model.safetensors`` or the shards named by ``model.safetensors.index.json``; reads
    headers only. Refuses pickle-based weights.
    """
    path = Path(path)
    index_file = path / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = ModelDir(path).json(index_file.name).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_file}: no 'weight_map' object")
        files = sorted({path / f for f in weight_map.values()})
    elif (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    else:
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        hint = (
            f" (found {', '.join(pickled)}: pickle-based weights are never loaded; convert them "
            "to safetensors)"
            if pickled
            else ""
        )
        raise CheckpointError(
            f"{path}: missing weights: neither model.safetensors nor "
            f"model.safetensors.index.json{hint}"
        )
    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        if not file.exists():
            raise CheckpointError(f"{file}: shard named in {index_file.name} is missing")
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    out[name] = (tuple(f.get_slice(name).get_shape()), file)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{file}: not a readable safetensors file: {e}") from None
    return out


def map_tensor_name(name: str, key_mapping: dict[str, str] | None) -> str:
    """Apply a checkpoint's tensor-name mapping (regex -> replacement, in order)."""
    for pattern, repl in (key_mapping or {}).items():
        name = re.sub(pattern, repl, name)
    return name


def _is_head_or_buffer(name: str) -> bool:
    # LM heads are not part of the embedding backbone; old checkpoints stored RoPE buffers.
    return name.startswith("lm_head.") or name.endswith("rotary_emb.inv_freq")


def validate_weights(
    tensors: dict[str, tuple[tuple[int, ...], Path]],
    expected: dict[str, tuple[int, ...]],
    key_mapping: dict[str, str] | None,
    where: Path,
) -> dict[str, str]:
    """Check that checkpoint tensors fill the backbone exactly; return checkpoint -> model names.

    Args:
        tensors: checkpoint tensor name -> (shape, file), from ``checkpoint_tensors``.
        expected: backbone parameter name (no ``model.`` prefix) -> shape.
        key_mapping: the checkpoint's name mapping (``LLADA_KEY_MAPPING`` or None).
        where: the directory, for messages.

    Raises ``CheckpointError`` naming the files for unexpected, missing or mis-shaped tensors.
    Head tensors (``lm_head``) are consumed but not loaded.
    """
    consumed: dict[str, str] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for name, (shape, file) in sorted(tensors.items()):
        mapped = map_tensor_name(name, key_mapping)
        if _is_head_or_buffer(mapped):
            consumed[name] = mapped
            continue
        target = mapped[len("model.") :] if mapped.startswith("model.") else mapped
        if target not in expected:
            unexpected.append(f"{name} ({file.name})")
            continue
        if tuple(expected[target]) != tuple(shape):
            mismatched.append(
                f"{name} in {file.name}: checkpoint shape {list(shape)}, "
                f"config.json implies {list(expected[target])}"
            )
        consumed[name] = target
    missing = sorted(set(expected) - set(consumed.values()))
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:10]))
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {', '.join(missing[:10])}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:10])}")
    if problems:
        raise CheckpointError(f"{where}: weights do not match config.json: " + " | ".join(problems))
    return consumed


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar for the duration of a load."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in names:
        raise ConfigError(f"dtype {dtype!r} not one of {sorted(names)}")
    return names[dtype]


def load_backbone(
    path: str | Path,
    attention: Attention | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load the model directory at ``path`` as a base transformer (no LM head), in eval mode.

    Args:
        path: local directory with config.json and safetensors weights.
        attention: ``"bidirectional"`` or ``"causal"``; None uses the checkpoint's own
            (``inspect_backbone(path).default_attention``).
        dtype: parameter dtype (``torch.float32`` default; ``"bf16"`` etc. accepted).
        device: where the weights go.
        attn_implementation: transformers attention kernel (``"sdpa"`` default, ``"eager"``).

    Returns:
        A ``Qwen2Model`` / ``LlamaModel`` / ``MistralModel``; ``model.config.is_causal`` tells
        the attention; ``model.config.diffembed_objective`` and ``mask_token_id`` are kept.
    """
    path = Path(path)
    config, info, key_mapping = build_config(path)
    attention = attention or info.default_attention
    if attention not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    config.is_causal = attention == "causal"
    if info.objective is not None:
        config.diffembed_objective = info.objective
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    model_cls = _NATIVE[info.family][1]

    with torch.device("meta"):
        skeleton = model_cls(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    validate_weights(checkpoint_tensors(path), expected, key_mapping, path)

    # The weights were validated above; transformers' own report would only list the LM head.
    with _quiet_transformers():
        model, loading = model_cls.from_pretrained(
            str(path),
            config=config,
            dtype=_resolve_dtype(dtype),
            key_mapping=key_mapping,
            output_loading_info=True,
            local_files_only=True,
        )
    # Second guard: whatever transformers itself could not place is an error, never random init.
    if loading.get("missing_keys") or loading.get("mismatched_keys"):
        raise CheckpointError(
            f"{path}: transformers could not load {sorted(loading['missing_keys'])[:10]} "
            f"{sorted(loading.get('mismatched_keys', []))[:10]}"
        )
    model.to(device)
    model.eval()
    return model


def attention_of(model: PreTrainedModel) -> Attention:
    """The attention a loaded backbone uses (from ``config.is_causal``; default causal)."""
    return "causal" if getattr(model.config, "is_causal", True) else "bidirectional"
