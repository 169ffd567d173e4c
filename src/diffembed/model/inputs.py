"""What goes into and comes out of ``Embedder``: text validation, token-budget batching, the
tokenized and encoded results with their counts, the truncation warning and error, and the
check that refuses non-finite or zero vectors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from diffembed.errors import ConfigError, DiffembedError


class TruncationWarning(UserWarning):
    """Some inputs were longer than ``max_length`` tokens and were truncated."""


class TextTooLongError(DiffembedError):
    """Texts exceed ``max_length`` tokens and truncation was refused (``truncate=False``):
    ``indices`` are their 0-based positions in the texts, ``lengths`` their token counts."""

    def __init__(self, message: str, indices: list[int], lengths: list[int], max_length: int):
        super().__init__(message)
        self.indices, self.lengths, self.max_length = indices, lengths, max_length


class NonFiniteEmbeddingError(DiffembedError, FloatingPointError):
    """Embeddings came out NaN, infinite or zero: ``rows`` are the texts' 0-based positions;
    ``bad_weights`` names the model's weight tensors holding NaN/inf (empty when all finite)."""

    def __init__(self, message: str, rows: list[int], bad_weights: list[str]):
        super().__init__(message)
        self.rows, self.bad_weights = rows, bad_weights


def nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """Names of ``model``'s parameters and buffers that hold NaN or infinite values."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return [
        name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite(vectors: torch.Tensor, batch: list[int], model: torch.nn.Module) -> None:
    """Raise ``NonFiniteEmbeddingError`` when a row of ``vectors`` (``[B, H]``, or ``[B, K, H]``
    for a multi-vector readout: any of its K vectors) is non-finite or zero; ``batch`` gives the
    rows' text positions, ``model`` the weights to blame."""
    norms = vectors.norm(dim=-1).reshape(len(vectors), -1)  # [B, 1] or [B, K]
    bad = (~torch.isfinite(vectors.flatten(1)).all(dim=1)) | (norms == 0).any(dim=1)
    if not bool(bad.any()):
        return
    rows = [batch[i] for i in torch.nonzero(bad).flatten().tolist()]
    broken = nonfinite_weights(model)
    if broken:
        raise NonFiniteEmbeddingError(
            f"non-finite embedding for texts {rows[:10]}: the model's weights hold NaN or "
            f"infinite values ({len(broken)} tensors, e.g. {broken[0]}); the checkpoint "
            "is broken, no precision setting helps: re-train or re-export it",
            rows,
            broken,
        )
    raise NonFiniteEmbeddingError(
        f"non-finite or zero embedding for texts {rows[:10]} (the weights are finite); "
        "try precision='fp32'",
        rows,
        [],
    )


@dataclass
class EncodeStats:
    """What one ``encode_with_stats`` call did: counts in texts, tokens and batches;
    ``truncated`` texts were cut to ``max_length`` (``longest`` tokens before the cut)."""

    texts: int = 0
    tokens: int = 0
    truncated: int = 0
    longest: int = 0
    batches: int = 0


class Tokenized(NamedTuple):
    """``Embedder.tokenize``'s result: token ids and pool masks (``[n]`` lists of equal
    lengths), and how many texts were truncated (``longest``: their longest length before)."""

    ids: list[list[int]]
    masks: list[list[int]]
    truncated: int = 0
    longest: int = 0


class Encoded(NamedTuple):
    """``Embedder.encode_with_stats``'s result: ``float32 [N, H]`` vectors and the stats."""

    vectors: np.ndarray
    stats: EncodeStats


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate (U+D800 to U+DFFF) in ``text``, or None.

    Such a str is not valid Unicode: no UTF-8 encoder and no tokenizer takes it. Python makes
    them from bytes decoded with ``errors="surrogateescape"`` (file names, some stdin) and from
    broken UTF-16 (an escape like ``"\\ud800"`` in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def validate_texts(texts: Sequence[Any]) -> list[str]:
    """Return ``texts`` as a list of str, or raise naming the first bad index.

    ``None`` and non-strings raise ``TypeError``; empty or whitespace-only strings, and strings
    that are not valid Unicode (``lone_surrogate``), ``ValueError``.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    out: list[str] = []
    for i, t in enumerate(texts):
        if t is None:
            raise TypeError(f"texts[{i}] is None")
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        if not t.strip():
            raise DiffembedError(f"texts[{i}] is empty or whitespace only")
        at = lone_surrogate(t)
        if at is not None:
            raise DiffembedError(
                f"texts[{i}] is not valid Unicode: a lone surrogate U+{ord(t[at]):04X} at "
                f"character {at}, which no tokenizer takes (it comes from bytes decoded with "
                "errors='surrogateescape', or broken UTF-16); decode the bytes as UTF-8 "
                "(errors='replace' keeps going) or remove it"
            )
        out.append(t)
    return out


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Group indices into batches whose padded size (rows x longest) stays within ``max_tokens``.

    Indices are taken longest first, so each batch holds texts of similar length; a text longer
    than the budget gets a batch of its own. Returns lists of indices into ``lengths``.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
