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
