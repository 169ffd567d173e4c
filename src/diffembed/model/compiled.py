"""``torch.compile`` for encoding: a backbone's position-wise layers compiled, attention eager.

The position-wise layers are each decoder layer's children other than its attention
(``mlp``, ``input_layernorm``, ``post_attention_layernorm`` in Llama, Qwen2 and Mistral) and the
final ``norm``. Inductor fuses their elementwise work (RMSNorm's float32 round trip, SiLU times
the up projection) into one pass each; on the 2-core benchmark machine that work was about a
fifth of the encode time (``benchmarks/encode_throughput.py``; README "Encoding speed, long
documents and serving").
Attention stays eager: the packed layout it reads is a new Python object for every batch, which
compiled code would guard on and recompile for. Shapes are dynamic (``dynamic=True``), so a new
batch size or length does not recompile.

Compiling needs a C++ compiler (inductor's CPU code) and takes tens of seconds the first time
on 2 cores, a few seconds once inductor's on-disk cache holds the kernels.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from diffembed.errors import DiffembedError

# The attention child of a transformers decoder layer (Llama, Qwen2, Mistral): left eager.
ATTENTION_CHILD = "self_attn"


class CompileError(DiffembedError, RuntimeError):
    """``torch.compile`` could not compile or run the backbone; the message says why."""


def compile_position_wise(backbone: PreTrainedModel) -> list[str]:
    """Compile ``backbone``'s position-wise modules in place (``Module.compile``, dynamic
    shapes); their weights and state-dict names do not change. Returns the compiled modules'
    names. Raises ``CompileError`` for a backbone without decoder ``layers``."""
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise CompileError(f"{type(backbone).__name__} has no decoder layers to compile")
    names: list[str] = []
    for i, layer in enumerate(layers):
        for name, child in layer.named_children():
            if name != ATTENTION_CHILD:
                child.compile(dynamic=True)
                names.append(f"layers.{i}.{name}")
    norm = getattr(backbone, "norm", None)
    if isinstance(norm, torch.nn.Module):
        norm.compile(dynamic=True)
        names.append("norm")
    return names


def uncompile(backbone: PreTrainedModel) -> None:
    """Undo ``compile_position_wise``: every module of ``backbone`` runs eager again."""
    for module in backbone.modules():
        # Module.compile stores the compiled call here; None is the eager default.
        module._compiled_call_impl = None
