"""torch.compile of the backbone's position-wise layers: same vectors, same files, clear failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffembed.model.backbone import load_backbone
from diffembed.model.compiled import CompileError, compile_position_wise, uncompile
from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import load_tokenizer

TEXTS = [
    "A dictionary defines words.",
    "Diffusion language models denoise masked tokens with bidirectional attention over the text.",
    "fox",
]


def make(path, **kw) -> Embedder:
    return Embedder(load_backbone(path), load_tokenizer(path), precision="fp32", **kw)


def test_compiled_encode_equals_eager_and_saves_the_same_model(checkpoints, tmp_path):
    eager = make(checkpoints["qwen2"])
    compiled = make(checkpoints["qwen2"], compile=True)
    assert compiled.compiled and not eager.compiled
    assert compiled.backbone.layers[0].mlp._compiled_call_impl is not None
    assert compiled.backbone.layers[0].self_attn._compiled_call_impl is None  # attention eager
    for texts in (TEXTS, TEXTS * 3, [" ".join(TEXTS * 2)]):  # new sizes: dynamic, no recompile
        np.testing.assert_allclose(compiled.encode(texts), eager.encode(texts), atol=1e-5)
    assert compiled.backbone.state_dict().keys() == eager.backbone.state_dict().keys()
    compiled.save(tmp_path / "m")
    reloaded = Embedder.load(tmp_path / "m", precision="fp32")
    np.testing.assert_allclose(reloaded.encode(TEXTS), eager.encode(TEXTS), atol=1e-6)


def test_compile_names_the_position_wise_modules(checkpoints):
    backbone = load_backbone(checkpoints["llama"])
    names = compile_position_wise(backbone)
    n = len(backbone.layers)
    assert len(names) == 3 * n + 1 and names[-1] == "norm"
    assert "layers.0.mlp" in names and not any("self_attn" in x for x in names)
    uncompile(backbone)
    assert all(m._compiled_call_impl is None for m in backbone.modules())
    with pytest.raises(CompileError, match="no decoder layers"):
        compile_position_wise(torch.nn.Linear(2, 2))


def test_a_failed_compile_is_a_clear_error_and_leaves_the_model_eager(checkpoints):
    import torch._inductor.config as inductor

    # No C++ compiler: what a machine without one gives (and no cached kernels to hide it).
    no_compiler = inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False})
    torch._dynamo.reset()  # forget code compiled earlier in this process
    emb = make(checkpoints["llama"])
    with no_compiler, pytest.raises(CompileError, match="failed.*leave out --compile"):
        emb.compile()
    assert not emb.compiled
    assert all(m._compiled_call_impl is None for m in emb.backbone.modules())
    assert np.isfinite(emb.encode(TEXTS)).all()
