"""Option groups that several verbs share, written once: ``--device``, ``--precision``,
``--max-length``, ``--no-progress``, ``--fusion``/``--alpha`` (hybrid retrieval); and the value
checks of numeric options (``at_least(1)``, ``number_at_least(0)``, ``port_number``,
``device_name``), so that a bad value is refused while parsing with a message that names the
flag."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable

from diffembed.errors import ConfigError
from diffembed.eval.fusion import DEFAULT_ALPHA, DEFAULT_FUSION, FUSIONS, resolve_fusion
from diffembed.model.precision import PRECISIONS


# ------------------------------------------------------------------------------ value checks
def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (``argument --x: expected ...``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def number_at_least(minimum: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number >= ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got {text!r}")
        return value

    parse.__name__ = f"number >= {minimum:g}"
    return parse


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 0 to 65535 (0: any free port), got {text!r}"
        )
    return value


def device_name(text: str) -> str:
    """An argparse ``type``: ``auto``, or a torch device this machine has (``cpu``, ``cuda``,
    ``cuda:N``, ``mps``); checked here so that a missing GPU is a message, not a traceback."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: CUDA is not available on this machine (no GPU, or a torch "
                f"{torch.__version__} built without CUDA); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available; use --device cpu")
    return text


# ------------------------------------------------------------------------------ option groups
def add_device(p: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """``--device``: a torch device; ``default=None`` means cuda if available, else cpu."""
    shown = default or "cuda if available, else cpu"
    p.add_argument(
        "--device", type=device_name, default=default, help=f"torch device (default: {shown})"
    )


def add_precision(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--precision auto|bf16|fp32``: the compute precision (``model.precision``: bf16
    autocast or fp32; the weights' own type is never changed). ``--dtype``, its name before,
    is kept as a deprecated alias that warns."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="compute precision: bf16 autocast, fp32, or auto (bf16 where fast)"
        + ("" if default else " (default: the model's)"),
    )
    p.add_argument(
        "--dtype",
        dest="precision",
        choices=PRECISIONS,
        default=argparse.SUPPRESS,
        action=DeprecatedAlias,
        help=argparse.SUPPRESS,
    )


class DeprecatedAlias(argparse.Action):
    """An old option name kept for scripts that use it: stores like the option it stands for
    (``dest``), with a warning naming the new one; one without a value (``nargs=0``) stores
    ``const``. Give it ``default=argparse.SUPPRESS`` and ``help=argparse.SUPPRESS``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        value = self.const if self.nargs == 0 else values
        new = "--" + self.dest.replace("_", "-")
        shown = f"{new} {value}" if self.nargs == 0 else new
        logging.getLogger("diffembed").warning("%s is deprecated; use %s", option_string, shown)
        setattr(namespace, self.dest, value)


def add_compile(p: argparse.ArgumentParser) -> None:
    """``--compile``: compile the model's position-wise layers (``Embedder.compile``)."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's MLP and norm layers: faster on large inputs, after a "
        "one-off compile of seconds to a minute (needs a C++ compiler)",
    )


def add_max_length(p: argparse.ArgumentParser) -> None:
    """``--max-length``: max tokens per text, default the model's; ``--strict``: refuse one beyond
    the model's positions (``model_dir.check_max_length``) instead of warning."""
    p.add_argument(
        "--max-length", type=at_least(1), help="max tokens per text (default: the model's)"
    )
    add_strict(p, "refuse a max length (given or saved) above the model's positions")


def add_strict(p: argparse.ArgumentParser, what: str, default: str = "warn") -> None:
    """``--strict``: turn a verb's warnings into errors. Several option blocks may ask for it
    (each naming ``what`` it refuses and, as ``default``, what happens without it); it is added
    once, its help listing them all, each with its own default."""
    part = f"{what} (default: {default})"
    action = p._option_string_actions.get("--strict")
    if action is None:
        p.add_argument("--strict", action="store_true", help=part)
    elif part not in (action.help or ""):
        action.help = f"{part}; {action.help}"


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide progress bars."""
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_fusion(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--fusion convex|rrf`` and ``--alpha``: how hybrid retrieval fuses dense and BM25
    (``diffembed.eval.fusion``). Both default to None, so that a verb can refuse them outside
    hybrid; ``fusion_choice`` turns them into the internal alpha."""
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        help=f"hybrid: convex (a weighted sum of min-max normalised scores) or rrf "
        f"(reciprocal-rank fusion, k = 60) (default: {DEFAULT_FUSION})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help="hybrid: weight of dense (0..1) in the convex combination "
        f"(default {DEFAULT_ALPHA:g})",
    )


def fusion_choice(args: argparse.Namespace, hybrid: bool, needs: str) -> float | None:
    """The internal alpha (None: reciprocal-rank fusion) for ``--fusion``/``--alpha``, by
    ``resolve_fusion``; None when not ``hybrid``, where either flag is an error naming it and
    ``needs`` (the option that makes a search hybrid, e.g. ``--mode hybrid``)."""
    if not hybrid:
        for flag in ("alpha", "fusion"):
            if getattr(args, flag) is not None:
                raise ConfigError(
                    f"--{flag} chooses how dense and BM25 are fused: it applies to {needs} only"
                )
        return None
    return resolve_fusion(args.fusion, args.alpha)
