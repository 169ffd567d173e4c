"""diffembed: text embeddings from diffusion and autoregressive language models.

The public API (imported lazily, so ``import diffembed`` stays cheap)::

    from diffembed import Embedder, load_backbone, load_tokenizer

Packages: ``model`` (backbone, tokenizer, pooling, packing, embedder, model_dir, generate),
``formats`` (the on-disk records: corpus documents, training pairs, evaluation tasks), ``train``
(pretraining and contrastive fine-tuning), ``eval`` (ranking, metrics, BM25, retrievers,
evaluation, MTEB), ``data`` (corpus extractors, task suites, training-pair building), ``index``
(crash-safe vector indexes), ``serve`` (the HTTP server), ``study`` (the reproduction study) and
``cli`` (the ``diffembed`` command, the only place with argparse).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Embedder": "diffembed.model.embedder",
    "load_backbone": "diffembed.model.backbone",
    "load_tokenizer": "diffembed.model.tokenizer",
    "Document": "diffembed.formats.corpus",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffembed' has no attribute {name!r}")
