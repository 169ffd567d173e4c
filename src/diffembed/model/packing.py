"""Packed attention: the texts of a batch run as one pad-free row of tokens.

``PackedLayout`` records where each text lies in the row; ``packed_attention_forward`` (registered
with transformers under ``PACKED_ATTENTION``) regathers the row into per-text rows for attention
only, so the linear layers never see a pad and memory stays linear in the text length.
``attention_implementation`` switches a model to it for the duration of a call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

PACKED_ATTENTION = "diffembed_packed"


@dataclass
class PackedLayout:
    """Where the texts of a packed batch lie.

    ``encode`` hands the backbone all texts of a batch concatenated into one row of ``N`` tokens
    (``[1, N]``, position ids restarting at 0 for each text), so its linear layers never touch a
    pad and no ``[B, 1, T, T]`` mask is built. Attention alone regathers the row into ``B`` rows
    of ``T`` (the longest text) and scatters its result back (``packed_attention_forward``).

    Attributes:
        lengths: tokens per text, in the order of the packed row (``B`` entries).
        width: ``T``, the longest text.
        gather: ``long [B*T]``: the packed position of each padded slot (pads point at 0), or
            None when ``B == 1``.
        slots: ``long [N]``: the padded slot (``b*T + t``) of each packed token, or None when
            ``B == 1``.
        key_mask: ``bool [B, 1, 1, T]``, True on real tokens; None when every text is ``T`` long.
    """

    lengths: list[int]
    width: int
    gather: torch.Tensor | None
    slots: torch.Tensor | None
    key_mask: torch.Tensor | None

    @classmethod
    def of(cls, lengths: Sequence[int], device: torch.device | str = "cpu") -> PackedLayout:
        """The layout of texts of ``lengths`` tokens packed in this order."""
        width = max(lengths)
        if len(lengths) == 1:
            return cls(list(lengths), width, None, None, None)
        lens = torch.tensor(lengths, dtype=torch.long)
        starts = torch.cumsum(lens, 0) - lens
        t = torch.arange(width)
        real = t[None, :] < lens[:, None]  # [B, T]
        gather = torch.where(real, starts[:, None] + t[None, :], 0).flatten()
        slots = torch.nonzero(real.flatten()).flatten()
        key_mask = None if min(lengths) == width else real[:, None, None, :].to(device)
        return cls(list(lengths), width, gather.to(device), slots.to(device), key_mask)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Packed ``[N, ...]`` -> padded ``[B, T, ...]`` (pad slots repeat token 0's values)."""
        if self.gather is None:
            return x.unsqueeze(0)
        return x.index_select(0, self.gather).view(len(self.lengths), self.width, *x.shape[1:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """Padded ``[B, T, ...]`` -> packed ``[N, ...]``."""
        flat = x.reshape(-1, *x.shape[2:])
        return flat if self.slots is None else flat.index_select(0, self.slots)


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    diffembed_layout: PackedLayout | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over the texts of a packed row (a transformers attention function).

    ``query [1, h, N, d]``, ``key``/``value [1, kv, N, d]`` -> ``[1, N, h, d]``: each text
    attends to itself only (bidirectionally, or causally when the model is causal), with
    ``torch.nn.functional.scaled_dot_product_attention`` on the regathered ``[B, h, T, d]``
    rows: its flash / memory-efficient kernels take a key mask, so memory stays linear in ``T``
    (no ``T x T`` matrix is materialised). Without a layout it is plain sdpa.
    """
    layout = diffembed_layout
    if layout is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    groups = query.shape[1] // key.shape[1]
    # [1, h, N, d] -> [N, h, d] -> [B, T, h, d] -> [B, h, T, d]
    q, k, v = (layout.pad(x[0].transpose(0, 1)).transpose(1, 2) for x in (query, key, value))
    if groups > 1:  # repeat kv heads: sdpa's enable_gqa is not taken by every CPU kernel
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        q,
        k,
        v,
        # Causal rows are right-padded: a real token never sees a pad, so no mask is needed.
        attn_mask=None if causal else layout.key_mask,
        dropout_p=dropout,
        is_causal=causal,
        scale=scaling,
    )
    return layout.unpad(out.transpose(1, 2)).unsqueeze(0), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """Mask builder of the packed attention: the layout carries the mask, transformers none."""
    return None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
AttentionMaskInterface.register(PACKED_ATTENTION, _no_mask)


@contextlib.contextmanager
def attention_implementation(model: PreTrainedModel, name: str) -> Iterator[None]:
    """Run ``model`` with the attention implementation ``name`` for the duration."""
    config = model.config
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old
