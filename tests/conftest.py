"""Shared fixtures: a tokenizer trained in a second and tiny random checkpoints in every layout
(helpers in :mod:`checkpoints`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from checkpoints import LAYOUTS, train_tokenizer, write_checkpoint


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:
    """One tiny checkpoint directory per native layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("ckpt")
    return {layout: write_checkpoint(root / layout, layout, tokenizer) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def model_dir(checkpoints, tmp_path_factory) -> Path:
    """A saved embedding model (tiny llama, ``query`` prompt, 48 tokens, fp32), one per module;
    modules that need another model define their own ``model_dir``."""
    from diffembed.model.backbone import load_backbone
    from diffembed.model.embedder import Embedder
    from diffembed.model.tokenizer import load_tokenizer

    path = tmp_path_factory.mktemp("model") / "model"
    src = checkpoints["llama"]
    Embedder(
        load_backbone(src),
        load_tokenizer(src),
        prompts={"query": "Find it"},
        max_length=48,
        precision="fp32",
    ).save(path)
    return path
