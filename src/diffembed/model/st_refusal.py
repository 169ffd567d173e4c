"""The sentence-transformers module a mask-readout model directory names, which refuses to load.

``pooling="mask"`` appends a readout prompt and K mask tokens after each text and reads the
outputs at those positions (``diffembed.model.readout``); sentence-transformers' own modules
tokenize the text alone and pool over it, so they would give other vectors without a word.
A mask-readout directory's modules.json therefore names ``MaskReadoutRefusal`` instead of
``Transformer`` + ``Pooling``: sentence-transformers imports it from the installed ``diffembed``
package (no remote code) and gets a ``ConfigError`` that says why and what to use.
"""

from __future__ import annotations

from typing import Any

import torch

from diffembed.errors import ConfigError

REFUSAL = (
    "this model directory reads its embeddings with diffembed's mask-token readout "
    "(pooling='mask' in diffembed.json): a readout prompt and mask tokens are appended after "
    "each text and the outputs at those positions are the vectors, which sentence-transformers' "
    "Transformer and Pooling modules cannot do; load it with diffembed "
    "(diffembed.model.embedder.Embedder.load, or `diffembed encode`/`eval`/`serve`)"
)


class MaskReadoutRefusal(torch.nn.Module):
    """Named by a mask-readout directory's modules.json; constructing or loading it raises
    ``ConfigError`` (``REFUSAL``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(REFUSAL)

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> MaskReadoutRefusal:
        """Refuse: sentence-transformers cannot compute this model's vectors."""
        raise ConfigError(REFUSAL)
