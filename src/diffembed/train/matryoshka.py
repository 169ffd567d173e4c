"""Matryoshka fine-tuning (``diffembed finetune --matryoshka-dims 32,64``): the InfoNCE loss of
the full vectors plus that of each prefix of them, so that the first ``d`` dimensions,
renormalised, are an embedding of their own (Kusupati et al., 2022).

Weighting: every length counts the same, and the loss is their mean,
``(L_full + sum_d L_d) / (1 + len(dims))``. Equal weights are what Matryoshka representation
learning and sentence-transformers' ``MatryoshkaLoss`` use by default; the mean (not the sum)
keeps the loss on the scale of one InfoNCE, so the collapse monitor's chance level
(``ln(candidates)``) and the learning rate mean what they mean without Matryoshka. The logged
accuracy is the full vectors'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffembed.errors import ConfigError
from diffembed.train.contrastive import info_nce_loss

FLAG = "--matryoshka-dims"


def parse_dims(value: str | Sequence[int] | None) -> tuple[int, ...]:
    """``"32,64"`` (or a sequence of ints) as sorted distinct lengths ``(32, 64)``; None or
    ``""`` as ``()``. A ``ConfigError`` naming ``--matryoshka-dims`` for anything else."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    dims = []
    for item in items:
        try:
            d = int(str(item).strip())
        except ValueError:
            raise ConfigError(
                f"{FLAG} must be comma-separated positive integers (e.g. 32,64), got {value!r}"
            ) from None
        if d < 1:
            raise ConfigError(f"{FLAG}: lengths must be >= 1, got {d}")
        dims.append(d)
    return tuple(sorted(set(dims)))


def check_dims(dims: Sequence[int], hidden: int, vectors_per_text: int = 1) -> None:
    """Refuse a length that is not shorter than the model's ``hidden`` width, and any length
    for a model that reads several vectors per text (``--mask-tokens`` > 1)."""
    if dims and vectors_per_text > 1:
        raise ConfigError(f"{FLAG} needs one vector per text, not --mask-tokens > 1")
    for d in dims:
        if d >= hidden:
            raise ConfigError(
                f"{FLAG}: {d} is not shorter than the model's {hidden} dimensions (the full "
                "vectors are always trained); give lengths below it"
            )


def matryoshka_info_nce_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    positives: torch.Tensor,
    scale: float,
    exclude: torch.Tensor | None = None,
    dims: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """``info_nce_loss`` averaged over the full vectors and their first ``d`` dimensions for
    each ``d`` in ``dims`` (each prefix renormalised by ``info_nce_loss``).

    Args: as ``info_nce_loss`` (``queries [B, H]``, ``docs [M, H]``, ``positives [B]``), and
        ``dims``: the prefix lengths, each below ``H``; empty: plain InfoNCE.

    Returns:
        ``(loss, logits)``: the mean loss and the full vectors' ``[B, M]`` logits.
    """
    loss, logits = info_nce_loss(queries, docs, positives, scale, exclude)
    if not dims:
        return loss, logits
    check_dims(dims, queries.shape[1])
    total = loss
    for d in dims:
        total = total + info_nce_loss(queries[:, :d], docs[:, :d], positives, scale, exclude)[0]
    return total / (1 + len(dims)), logits
