"""The ``diffembed`` command line: ``diffembed VERB --help`` lists each verb's options."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from diffembed import __version__

logger = logging.getLogger("diffembed")


class InputError(ValueError):
    """A user input file is malformed; the message names the file and line."""


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """Read texts from ``.txt`` (one per line) or ``.jsonl`` (field ``text_field`` per line).

    Every line must hold a non-empty text; errors name the file and the 1-based line number.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    texts: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if jsonl:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
                if not isinstance(record, dict) or text_field not in record:
                    raise InputError(f"{path}:{lineno}: no field {text_field!r}")
                text = record[text_field]
                if not isinstance(text, str):
                    raise InputError(
                        f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string"
                    )
            else:
                text = line
            if not text.strip():
                raise InputError(f"{path}:{lineno}: empty text")
            texts.append(text)
    if not texts:
        raise InputError(f"{path}: no texts")
    return texts


# ------------------------------------------------------------------------------ encode
def add_encode_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed texts from a file into a .npy matrix",
        description="Embed every line of a .txt file (or the text field of each .jsonl line) "
        "and write a float32 [N, H] matrix to a .npy file, atomically.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--input", required=True, type=Path, help=".txt (one text per line) or .jsonl")
    p.add_argument("--output", required=True, type=Path, help="output .npy file")
    p.add_argument("--text-field", default="text", help="field of each .jsonl line (default: text)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="instruction prepended to every text")
    group.add_argument("--prompt-name", help="name of a prompt saved with the model (e.g. query)")
    p.add_argument("--max-length", type=int, help="max tokens per text (default: the model's)")
    p.add_argument("--no-truncate", action="store_true", help="fail instead of truncating")
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=16384,
        help="token budget per batch, rows x longest row (default: 16384)",
    )
    p.add_argument("--batch-size", type=int, help="cap on texts per batch")
    p.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="compute precision: bf16 autocast, fp32, or auto (bf16 where fast)",
    )
    p.add_argument(
        "--attention", choices=["bidirectional", "causal"], help="override the model's attention"
    )
    p.add_argument(
        "--pooling", choices=["mean", "last", "weighted_mean"], help="override the model's pooling"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    from diffembed.embedder import Embedder
    from diffembed.io import atomic_write

    if args.output.suffix != ".npy":
        raise InputError(f"{args.output}: the output must be a .npy file")
    texts = read_texts(args.input, args.text_field)
    overrides = {"precision": args.dtype}
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    if args.pooling is not None:
        overrides["pooling"] = args.pooling
    embedder = Embedder.load(args.model, attention=args.attention, device=args.device, **overrides)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = embedder.encode(
            texts,
            prompt=args.prompt,
            prompt_name=args.prompt_name,
            batch_size=args.batch_size,
            max_tokens_per_batch=args.batch_tokens,
            show_progress=not args.no_progress,
            truncate=not args.no_truncate,
        )
    for w in caught:
        logger.warning("%s", w.message)
    seconds = time.perf_counter() - start
    with atomic_write(args.output, "wb") as f:
        np.save(f, vectors)
    stats = embedder.last_stats
    logger.info(
        "wrote %s: %d x %d float32; %d tokens, %d truncated, %.1f s (%.0f tokens/s)",
        args.output,
        *vectors.shape,
        stats.tokens,
        stats.truncated,
        seconds,
        stats.tokens / max(seconds, 1e-9),
    )
    return 0


# ------------------------------------------------------------------------------ main
def _verb_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    registrars: list[Callable[[argparse._SubParsersAction], None]] = [add_encode_parser]
    try:
        from diffembed.corpus.cli import add_corpus_parser
    except ImportError:  # the corpus verbs are optional in a partial install
        pass
    else:
        registrars.append(add_corpus_parser)
    return registrars


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffembed",
        description="Text embeddings from diffusion and autoregressive language models.",
    )
    parser.add_argument("--version", action="version", version=f"diffembed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for register in _verb_registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from diffembed.backbone import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (InputError, CheckpointError, ValueError, TypeError, KeyError) as e:
        if args.verbose:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"diffembed {args.verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
