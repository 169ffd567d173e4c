"""Shorter vectors: the first ``n`` dimensions of an embedding, renormalised, and whether the
model was trained for that length (Matryoshka fine-tuning, ``diffembed finetune
--matryoshka-dims``, records the lengths in the model directory's ``diffembed.json``; see
``diffembed.model.model_dir.trained_dims``).

Every place that shortens vectors (``/v1/embeddings`` ``dimensions``, ``encode --dimensions``,
``index build --dimensions``, ``eval --dimensions``) goes through ``truncate`` and asks
``dimensions_warning`` what to tell the user, so they cut and warn alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffembed.errors import ConfigError


def check_dimensions(n: int, full: int, flag: str = "--dimensions") -> int:
    """``n`` if it is an integer in ``1..full`` (the model's width), else a ``ConfigError``
    naming ``flag``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= full:
        raise ConfigError(f"{flag} must be an integer between 1 and {full}, got {n!r}")
    return int(n)


def truncate(vectors: np.ndarray, n: int | None) -> np.ndarray:
    """``float32 [N, n]``: the first ``n`` dimensions of ``vectors`` (``[N, H]``), each row
    renormalised to unit length (a zero prefix stays zero); ``vectors`` as float32 when ``n`` is
    None or ``H``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if n is None or n == vectors.shape[-1]:
        return np.ascontiguousarray(vectors)
    if not 1 <= n < vectors.shape[-1]:
        raise ValueError(f"cannot keep {n} of {vectors.shape[-1]} dimensions")
    head = vectors[..., :n]
    norms = np.linalg.norm(head, axis=-1, keepdims=True)
    return np.ascontiguousarray(head / np.maximum(norms, 1e-12), dtype=np.float32)


def dimensions_warning(n: int | None, full: int, trained: Sequence[int]) -> str | None:
    """What to tell a user who asked for the first ``n`` of ``full`` dimensions of a model
    trained for the lengths ``trained`` (besides ``full``); None when nothing needs saying
    (no truncation, or a trained length)."""
    if n is None or n == full or n in trained:
        return None
    if trained:
        lengths = ", ".join(str(d) for d in sorted(trained))
        return (
            f"dimensions={n} is not a length this model was trained for ({lengths} or {full}); "
            "its vectors are cut and renormalised, and may rank worse than a trained length"
        )
    return (
        f"dimensions={n}: this model was not trained for shorter vectors (no Matryoshka "
        f"fine-tuning); its vectors are cut to {n} of {full} dimensions and renormalised, and "
        "may rank much worse"
    )
