"""Test helpers: a tokenizer trained in a second and tiny random checkpoints in every layout.

Checkpoints are written in each model family's *native* on-disk layout (names spelled out here,
not derived from diffembed's own mappings), so loader mistakes show up as test failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank in 2024.",
    "A dictionary defines words; a thesaurus lists synonyms and antonyms of 1,234 terms.",
    "Diffusion language models denoise masked tokens with bidirectional attention.",
    "Autoregressive models predict the next token from the previous ones, left to right.",
    "def encode(texts): return [embed(t) for t in texts]  # list comprehension 42",
    "Retrieval finds the documents relevant to a query among many candidates quickly.",
    "Pass keys, needles and haystacks test long-context retrieval at 8192 tokens.",
] * 20
LAYOUTS = ("qwen2", "llama", "mistral", "dream", "llada")
SIZES = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=512,
)


def train_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE with pad/bos/eos/mask tokens; BOS is prepended to every text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", bos)]),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        mask_token="<|mask|>",
    )


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _patch_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


def write_checkpoint(path: Path, layout: str, tok: PreTrainedTokenizerFast, seed: int = 0) -> Path:
    """Write a tiny random checkpoint at ``path`` in the native layout of ``layout``."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    if layout in ("qwen2", "dream"):
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES, **_ids(tok), tie_word_embeddings=False))
    elif layout == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SIZES, **_ids(tok)))
    elif layout == "mistral":
        model = MistralForCausalLM(MistralConfig(**SIZES, **_ids(tok)))
    elif layout == "llada":
        return write_llada(path, tok, seed)
    else:
        raise ValueError(layout)
    # Random weights have tiny norms; scale them up so attention patterns differ visibly.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if layout == "dream":
        _patch_config(
            path,
            model_type="Dream",
            architectures=["DreamModel"],
            auto_map={
                "AutoConfig": "configuration_dream.DreamConfig",
                "AutoModel": "modeling_dream.DreamModel",
            },
            mask_token_id=tok.mask_token_id,
        )
        # Real Dream directories declare Qwen2's tokenizer class; so does this one.
        tcfg = json.loads((path / "tokenizer_config.json").read_text())
        tcfg["tokenizer_class"] = "Qwen2Tokenizer"
        (path / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    return path


def llada_reference(tok: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """The Llama model whose weights the LLaDA fixture stores under LLaDA's names."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            **SIZES, **_ids(tok), rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    return model


def llada_state(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """LLaDA's tensor names (model.transformer.*) spelled out by hand."""
    m = model.model
    sd = {
        "model.transformer.wte.weight": m.embed_tokens.weight,
        "model.transformer.ln_f.weight": m.norm.weight,
        "model.transformer.ff_out.weight": model.lm_head.weight,
    }
    for i, layer in enumerate(m.layers):
        b = f"model.transformer.blocks.{i}."
        sd[b + "q_proj.weight"] = layer.self_attn.q_proj.weight
        sd[b + "k_proj.weight"] = layer.self_attn.k_proj.weight
        sd[b + "v_proj.weight"] = layer.self_attn.v_proj.weight
        sd[b + "attn_out.weight"] = layer.self_attn.o_proj.weight
        sd[b + "ff_proj.weight"] = layer.mlp.gate_proj.weight
        sd[b + "up_proj.weight"] = layer.mlp.up_proj.weight
        sd[b + "ff_out.weight"] = layer.mlp.down_proj.weight
        sd[b + "attn_norm.weight"] = layer.input_layernorm.weight
        sd[b + "ff_norm.weight"] = layer.post_attention_layernorm.weight
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def write_llada(path: Path, tok: PreTrainedTokenizerFast, seed: int = 0) -> Path:
    model = llada_reference(tok, seed)
    save_file(llada_state(model), str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "d_model": SIZES["hidden_size"],
        "n_layers": SIZES["num_hidden_layers"],
        "n_heads": SIZES["num_attention_heads"],
        "n_kv_heads": SIZES["num_key_value_heads"],
        "mlp_hidden_size": SIZES["intermediate_size"],
        "mlp_ratio": 2,
        "vocab_size": len(tok),
        "embedding_size": len(tok),
        "max_sequence_length": 512,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "activation_type": "silu",
        "block_type": "llama",
        "layer_norm_type": "rms",
        "alibi": False,
        "rope": True,
        "include_bias": False,
        "include_qkv_bias": False,
        "input_emb_norm": False,
        "attention_layer_norm": False,
        "weight_tying": False,
        "clip_qkv": None,
        "mask_token_id": tok.mask_token_id,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(path)
    return path


#: A small word list for random test documents (the hybrid-index and late-chunking tests).
TOY_WORDS = ["fox", "river", "bank", "words", "tokens", "attention", "models", "retrieval", "query", "keys", "context", "list"]  # fmt: skip
