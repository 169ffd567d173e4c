"""The one place that decides bf16: whether the hardware has it, what a ``--precision`` means,
and the autocast context every forward pass (encode, serve, train, pretrain) runs under."""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def precision_from_bf16(bf16: bool, owner: str) -> str:
    """The ``precision`` that the deprecated boolean ``bf16`` of ``owner`` (a config class's
    name) meant, with a DeprecationWarning pointing at the caller's caller (its constructor)."""
    warnings.warn(
        f"{owner}(bf16=...) is deprecated; use precision='bf16' or 'fp32'",
        DeprecationWarning,
        stacklevel=4,
    )
    return "bf16" if bf16 else "fp32"


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast is fast on ``device`` (native bf16 on this CPU or GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return False


def bf16_wanted(precision: str, device: torch.device | str) -> bool:
    """Whether ``precision`` (auto|bf16|fp32) means bf16 autocast on ``device``."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return bf16_supported(device)


def autocast(
    device: torch.device | str, bf16: bool, weights: torch.dtype = torch.float32
) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16`` is asked for over float32 ``weights`` (weights
    already in bf16 need none); a no-op elsewhere (e.g. ``mps``)."""
    device = torch.device(device)
    if bf16 and weights == torch.float32 and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
