"""The training verbs: ``diffembed pretrain`` and ``diffembed finetune``.

The ``finetune`` options are generated from ``FinetuneConfig``'s fields (flag, help, type and
default are written once, on the field); ``python -m diffembed.cli.train [options]`` runs the
same fine-tuning, e.g. under ``torchrun``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from diffembed.cli.options import (
    DeprecatedAlias,
    add_device,
    add_no_progress,
    at_least,
    device_name,
    number_at_least,
)
from diffembed.errors import ConfigError
from diffembed.io import check_writable
from diffembed.train.finetune_config import FinetuneConfig

_TYPES = {"int": int, "float": float, "Path": Path, "Path | None": Path}


# ------------------------------------------------------------------------------ finetune
def _add_field_option(p: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    """One ``--option`` from a config field and its metadata (see ``finetune_config._opt``)."""
    meta = dict(f.metadata)
    flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
    help_text = meta.pop("help").replace("{default}", str(f.default))
    action = meta.pop("action", None)
    if action in ("store_true", "store_false"):
        p.add_argument(flag, dest=f.name, action=action, help=help_text)
        return
    kwargs = {"help": help_text, **meta}
    if action == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif "type" not in kwargs and f.type in _TYPES:
        kwargs["type"] = _TYPES[f.type]
    if f.name == "device":
        kwargs["type"] = device_name  # a missing GPU is refused while parsing
    if "choices" in kwargs:
        kwargs["choices"] = list(kwargs["choices"])
    if not kwargs.get("required"):
        kwargs["default"] = f.default
    p.add_argument(flag, **kwargs)


def _add_options(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(FinetuneConfig):
        _add_field_option(p, f)
    for flag, precision in (("--bf16", "bf16"), ("--no-bf16", "fp32")):  # before --precision
        p.add_argument(
            flag,
            dest="precision",
            nargs=0,
            const=precision,
            default=argparse.SUPPRESS,
            action=DeprecatedAlias,
            help=argparse.SUPPRESS,
        )
    p.set_defaults(func=run_finetune)


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``finetune`` verb on a ``diffembed`` sub-parser set."""
    p = subparsers.add_parser(
        "finetune",
        help="contrastive fine-tuning (InfoNCE, LoRA, GradCache, multi-process)",
        description="Fine-tune an embedding model on (query, positive, hard negatives) pairs "
        "with InfoNCE on cosine similarity. Task-homogeneous global batches; in-batch "
        "negatives gathered across processes (run with torchrun --nproc-per-node N for data "
        "parallelism). Writes a sentence-transformers model directory with LoRA merged and "
        "the task instructions as prompts, plus OUT/training/{log.csv,training.png}.",
    )
    _add_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """Build a ``FinetuneConfig`` from parsed CLI arguments; a refused value's message names
    its flag (``--steps must be >= 1``), not the field."""
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    try:
        return FinetuneConfig(**{k: getattr(args, k) for k in fields if hasattr(args, k)})
    except ConfigError as e:
        message = str(e)
        name = message.split(" ", 1)[0]
        if name in fields:
            flag = fields[name].metadata.get("flag", "--" + name.replace("_", "-"))
            raise ConfigError(flag + message[len(name) :]) from None
        raise


def run_finetune(args: argparse.Namespace) -> int:
    """The ``finetune`` verb: run the configured fine-tuning; returns the exit status. ``--out``
    is checked before any work by ``finetune`` itself; the checkpoints' folder here, when
    checkpoints are written."""
    from diffembed.train.finetune import finetune

    config = config_from_args(args)
    if config.save_every:
        check_writable(config.checkpoints, "choose another --checkpoint-dir", into=True)
    finetune(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m diffembed.cli.train [options]``: the same as ``diffembed finetune``."""
    parser = argparse.ArgumentParser(prog="python -m diffembed.cli.train")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_options(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return run_finetune(args)


# ------------------------------------------------------------------------------ pretrain
def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``pretrain`` verb on a ``diffembed`` sub-parser set."""
    from diffembed.train.pretrain_config import PRESETS

    p = sub.add_parser(
        "pretrain",
        help="pretrain a small diffusion or AR LM from scratch",
        description="Pretrain a Llama-style LM with the masked-diffusion, autoregressive or MNTP "
        "objective; everything but the objective is identical across objectives. Works under "
        "torchrun (DDP).",
    )
    p.add_argument(
        "--objective", required=True, choices=["diffusion", "ar", "mntp"], help="training objective"
    )
    p.add_argument(
        "--preset",
        default="smoke",
        choices=sorted(PRESETS),
        help="model/data size (default: smoke)",
    )
    p.add_argument("--config", type=Path, help="JSON file overriding preset fields")
    p.add_argument(
        "--corpus",
        required=True,
        type=Path,
        help="corpus directory (pretrain.jsonl), or a tokenized split (.npz, as "
        "`diffembed reproduce --write-pack` packs it)",
    )
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument(
        "--init",
        type=Path,
        help="start from this model (mntp: the AR model; diffusion: adapt an AR model)",
    )
    p.add_argument(
        "--anneal-steps",
        type=at_least(0),
        metavar="N",
        help="diffusion: open the attention from causal to full over the first N steps "
        "(DiffuLLaMA's annealing; default: the preset's, 0 = full from the start)",
    )
    p.add_argument(
        "--shift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="diffusion: predict masked token i+1 from position i, as the AR model did "
        "(default: on when --init is a causal LM)",
    )
    p.add_argument(
        "--unique-tokens",
        type=at_least(1),
        metavar="N",
        help="data repetition: train on a pool of about N unique tokens (whole documents), "
        "repeated for as many epochs as the steps need (default: no pool, unique tokens)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument(
        "--time-limit",
        type=number_at_least(0),
        metavar="MINUTES",
        help="checkpoint and stop after this many minutes of training (continue with --resume); "
        "SIGTERM does the same at the end of the current step",
    )
    p.add_argument("--steps", type=at_least(1), help="override the number of optimizer steps")
    p.add_argument("--seed", type=int, help="override the seed")
    add_device(p, default=None)
    p.add_argument(
        "--stop-after", type=at_least(1), help="stop after this step, as an interruption would"
    )
    add_no_progress(p)
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """The ``pretrain`` verb: build the preset's config (with overrides) and train."""
    from diffembed.train.pretrain import pretrain
    from diffembed.train.pretrain_config import make_config

    check_writable(args.out, into=True)  # checkpoints, logs and the model go inside --out
    config = make_config(args.preset, args.objective, args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.seed is not None:
        config.seed = args.seed
    if args.anneal_steps is not None:
        config.anneal_steps = args.anneal_steps
    if args.shift is not None:
        config.shift = args.shift
    if args.unique_tokens is not None:
        config.unique_tokens = args.unique_tokens
    config.validate()
    pretrain(
        config,
        args.corpus,
        args.tokenizer,
        args.out,
        init=args.init,
        resume=args.resume,
        stop_after=args.stop_after,
        device=args.device,
        show_progress=not args.no_progress,
        time_limit=None if args.time_limit is None else args.time_limit * 60,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
