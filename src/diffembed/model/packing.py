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


# Texts at least this long get an attention call of their own (a view of the packed row: no pad,
# no mask, no copy); CPU SDPA runs such a call as fast per FLOP as a batch of the same length
# (benchmarks/encode_throughput.py), so batching them would only add the padding's quadratic
# waste. Shorter texts are batched: their per-call overhead would dominate.
ALONE_FROM = 256
# A batch of short texts ends when padding would add more than this share of attention FLOPs.
PAD_WASTE = 0.1


@dataclass
class AttentionGroup:
    """Texts that attention handles in one call: packed tokens ``[start, end)``.

    One text (``rows == 1``): a view of the packed row. Several: regathered into ``rows`` padded
    rows of ``width`` tokens; ``gather`` (``long [rows*width]``, the group-relative packed position
    of each padded slot, pads pointing at 0), ``slots`` (``long [end-start]``, the padded slot of
    each packed token) and ``key_mask`` (``bool [rows, 1, 1, width]``, True on real tokens; None
    when all rows are ``width`` long).
    """

    start: int
    end: int
    rows: int
    width: int
    gather: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None

    @classmethod
    def of(cls, lengths: Sequence[int], start: int, device: torch.device | str) -> AttentionGroup:
        """The group of texts of ``lengths`` tokens packed in this order from ``start``."""
        width, end = max(lengths), start + sum(lengths)
        if len(lengths) == 1:
            return cls(start, end, 1, width)
        lens = torch.tensor(lengths, dtype=torch.long)
        starts = torch.cumsum(lens, 0) - lens
        t = torch.arange(width)
        real = t[None, :] < lens[:, None]  # [rows, width]
        gather = torch.where(real, starts[:, None] + t[None, :], 0).flatten()
        slots = torch.nonzero(real.flatten()).flatten()
        key_mask = None if min(lengths) == width else real[:, None, None, :].to(device)
        return cls(start, end, len(lengths), width, gather.to(device), slots.to(device), key_mask)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Packed ``[N, ...]`` (the whole row) -> this group's ``[rows, width, ...]``."""
        x = x[self.start : self.end]
        if self.gather is None:
            return x.unsqueeze(0)
        return x.index_select(0, self.gather).view(self.rows, self.width, *x.shape[1:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """This group's ``[rows, width, ...]`` -> packed ``[end - start, ...]``."""
        flat = x.reshape(-1, *x.shape[2:])
        return flat if self.slots is None else flat.index_select(0, self.slots)


def attention_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Split texts of ``lengths`` tokens (in packed order) into consecutive runs for attention:
    each text of ``ALONE_FROM`` tokens or more alone; shorter neighbours together while padding
    them to the longest adds at most ``PAD_WASTE`` of their attention FLOPs (``rows x width^2``
    against ``sum(len^2)``). Returns the runs' lengths."""
    runs: list[list[int]] = []
    run: list[int] = []
    for n in lengths:
        if run:
            width = max(*run, n)
            useful = sum(m * m for m in run) + n * n
            if n >= ALONE_FROM or (len(run) + 1) * width * width > (1 + PAD_WASTE) * useful:
                runs.append(run)
                run = []
        if n >= ALONE_FROM:
            runs.append([n])
        else:
            run.append(n)
    if run:
        runs.append(run)
    return runs


@dataclass
class PackedLayout:
    """Where the texts of a packed batch lie.

    ``encode`` hands the backbone all texts of a batch concatenated into one row of ``N`` tokens
    (``[1, N]``, position ids restarting at 0 for each text), so its linear layers never touch a
    pad and no ``[B, 1, T, T]`` mask is built. Attention runs per ``AttentionGroup``
    (``packed_attention_forward``): long texts one by one on views of the row, runs of short ones
    padded together. ``pad``/``unpad`` regather the whole row into ``B`` rows of ``T`` (pooling).

    Attributes:
        lengths: tokens per text, in the order of the packed row (``B`` entries).
        width: ``T``, the longest text.
        groups: the attention calls, covering the row in order.
        whole: the whole batch as one group (``pad``/``unpad``).
    """

    lengths: list[int]
    width: int
    groups: list[AttentionGroup]
    whole: AttentionGroup

    @classmethod
    def of(cls, lengths: Sequence[int], device: torch.device | str = "cpu") -> PackedLayout:
        """The layout of texts of ``lengths`` tokens packed in this order."""
        groups, start = [], 0
        for run in attention_groups(lengths):
            groups.append(AttentionGroup.of(run, start, device))
            start = groups[-1].end
        whole = groups[0] if len(groups) == 1 else AttentionGroup.of(lengths, 0, device)
        return cls(list(lengths), max(lengths), groups, whole)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Packed ``[N, ...]`` -> padded ``[B, T, ...]`` (pad slots repeat token 0's values)."""
        return self.whole.pad(x)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """Padded ``[B, T, ...]`` -> packed ``[N, ...]``."""
        return self.whole.unpad(x)


def _group_attention(
    group: AttentionGroup,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    dropout: float,
    scaling: float | None,
) -> torch.Tensor:
    """Attention of one group: packed ``q [N, h, d]``, ``k``/``v [N, kv, d]`` (the whole row) ->
    ``[end - start, h, d]``."""
    kv_repeat = q.shape[1] // k.shape[1]  # query heads per key/value head (GQA)
    # [N, h, d] -> [rows, width, h, d] -> [rows, h, width, d]
    q, k, v = (group.pad(x).transpose(1, 2) for x in (q, k, v))
    if group.rows > 1 and kv_repeat > 1:
        # repeat kv heads: with a mask, sdpa's enable_gqa is not taken by every CPU kernel
        k = k.repeat_interleave(kv_repeat, dim=1)
        v = v.repeat_interleave(kv_repeat, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        q,
        k,
        v,
        # Causal rows are right-padded: a real token never sees a pad, so no mask is needed.
        attn_mask=None if causal else group.key_mask,
        dropout_p=dropout,
        is_causal=causal,
        scale=scaling,
        enable_gqa=group.rows == 1 and kv_repeat > 1,
    )
    return group.unpad(out.transpose(1, 2))


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
    ``torch.nn.functional.scaled_dot_product_attention`` per ``AttentionGroup``: its flash /
    memory-efficient kernels take a key mask, so memory stays linear in ``T`` (no ``T x T``
    matrix is materialised). Without a layout it is plain sdpa.
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
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [N, h or kv, d]
    parts = [_group_attention(g, q, k, v, causal, dropout, scaling) for g in layout.groups]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.unsqueeze(0), None


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
