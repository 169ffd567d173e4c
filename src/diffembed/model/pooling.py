"""Pooling of token hidden states into one vector per text, as pure functions.

All functions take ``hidden [B, T, H]`` and a 0/1 ``mask [B, T]`` marking the tokens to pool
(padding is 0; with instruction exclusion, instruction tokens are 0 too) and return ``[B, H]``.
They are correct for left and right padding alike, and compute in float32.

``"mask"`` (``mask_pool``) is the mask-token readout (``diffembed.model.readout``): its mask marks
the K readout positions, and it returns their hidden states, ``[B, H]`` for K = 1 and
``[B, K, H]`` for K > 1 (multi-vector).
"""

from __future__ import annotations

import torch

from diffembed.errors import ConfigError

POOLINGS: tuple[str, ...] = ("mean", "last", "weighted_mean", "mask")


def _check(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden [B,T,H] and mask [B,T], got {hidden.shape}, {mask.shape}"
        )
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"no token to pool in batch rows {bad}")
    return mask.to(torch.float32)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the masked tokens' hidden states: ``[B, T, H], [B, T] -> [B, H]``."""
    m = _check(hidden, mask)
    summed = torch.einsum("bth,bt->bh", hidden.float(), m)
    return summed / m.sum(dim=1, keepdim=True)


def weighted_mean_pool(
    hidden: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None = None
) -> torch.Tensor:
    """Position-weighted mean (SGPT): a pooled token at position k of its text (k = 1, 2, ...,
    counted over ``attention``, the non-pad tokens, so padding does not shift them) gets weight
    k. Excluded instruction tokens keep their positions, as in sentence-transformers; without
    ``attention`` the positions count the pooled tokens only.
    """
    m = _check(hidden, mask)
    counted = m if attention is None else attention.to(torch.float32)
    weights = torch.cumsum(counted, dim=1) * m
    summed = torch.einsum("bth,bt->bh", hidden.float(), weights)
    return summed / weights.sum(dim=1, keepdim=True)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last pooled token of each row (any padding side): ``[B, H]``."""
    m = _check(hidden, mask)
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m > 0, positions, -1).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def mask_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden states at the marked positions, in order: ``[B, T, H], [B, T] -> [B, K, H]``
    (``[B, H]`` when K = 1), float32. Every row must mark the same number K of positions (the
    readout's K appended masks)."""
    m = _check(hidden, mask)
    counts = m.sum(dim=1)
    k = int(counts[0])
    if bool((counts != k).any()):
        raise ValueError(
            f"mask pooling needs the same number of readout positions per row, got {counts.tolist()}"
        )
    # A stable sort puts each row's marked positions first, in position order.
    order = torch.sort((m == 0).to(torch.int8), dim=1, stable=True).indices[:, :k]
    picked = hidden.gather(1, order[:, :, None].expand(-1, -1, hidden.shape[2])).float()
    return picked[:, 0] if k == 1 else picked


def pool(
    hidden: torch.Tensor, mask: torch.Tensor, mode: str, attention: torch.Tensor | None = None
) -> torch.Tensor:
    """Dispatch to the pooling named ``mode`` (one of ``POOLINGS``); ``attention`` (the non-pad
    tokens, ``[B, T]``) gives ``weighted_mean`` its positions."""
    if mode == "mean":
        return mean_pool(hidden, mask)
    if mode == "weighted_mean":
        return weighted_mean_pool(hidden, mask, attention)
    if mode == "last":
        return last_token_pool(hidden, mask)
    if mode == "mask":
        return mask_pool(hidden, mask)
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {mode!r}")


def span_mean_pool(hidden: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
    """Late chunking's pooling: the mean of ``hidden[row, start:end]`` for each ``(row, start,
    end)`` token span, ``[B, T, H] -> [len(spans), H]`` in float32 (several spans per row).

    A span covering exactly the tokens ``mean_pool`` would pool in a row gives that row's
    ``mean_pool`` vector.
    """
    if hidden.dim() != 3:
        raise ValueError(f"expected hidden [B,T,H], got {tuple(hidden.shape)}")
    B, T, _ = hidden.shape
    bad = [s for s in spans if not (0 <= s[0] < B and 0 <= s[1] < s[2] <= T)]
    if bad:
        raise ValueError(f"token spans {bad[:3]} are empty or outside hidden [{B}, {T}, H]")
    if not spans:
        return hidden.new_zeros((0, hidden.shape[2]), dtype=torch.float32)
    return torch.stack([hidden[r, s:e].float().mean(dim=0) for r, s, e in spans])
