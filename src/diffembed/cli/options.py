"""Option groups that several verbs share, written once: ``--device``, ``--dtype``,
``--max-length``, ``--no-progress``."""

from __future__ import annotations

import argparse

from diffembed.model.precision import PRECISIONS


def add_device(p: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """``--device``: a torch device; ``default=None`` means cuda if available, else cpu."""
    shown = default or "cuda if available, else cpu"
    p.add_argument("--device", default=default, help=f"torch device (default: {shown})")


def add_dtype(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--dtype auto|bf16|fp32``: the compute precision (``model.precision``)."""
    p.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default=default,
        help="compute precision: bf16 autocast, fp32, or auto (bf16 where fast)"
        + ("" if default else " (default: the model's)"),
    )


def add_max_length(p: argparse.ArgumentParser) -> None:
    """``--max-length``: max tokens per text, default the model's."""
    p.add_argument("--max-length", type=int, help="max tokens per text (default: the model's)")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide progress bars."""
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
