"""The ``diffembed`` command line: ``diffembed VERB --help`` lists each verb's options.

A verb that fails with a ``diffembed.errors.DiffembedError`` (a problem the user caused: a bad
file, flag or model directory) prints its one-line message and exits 2, as argparse does for a
bad command line; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from diffembed import __version__
from diffembed.cli.data import add_corpus_parser, add_pairs_parser, add_tasks_parser
from diffembed.cli.eval import add_eval_parser
from diffembed.cli.index import add_index_parser, add_search_parser
from diffembed.cli.model import (
    add_demo_parser,
    add_encode_parser,
    add_generate_parser,
    add_tokenizer_parser,
)
from diffembed.cli.serve import add_serve_parser
from diffembed.cli.study import add_reproduce_parser
from diffembed.cli.train import add_finetune_parser, add_pretrain_parser
from diffembed.errors import DiffembedError
from diffembed.model.embedder import NonFiniteEmbeddingError

logger = logging.getLogger("diffembed")


# ------------------------------------------------------------------------------ main
def _verb_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    registrars: list[Callable[[argparse._SubParsersAction], None]] = [
        add_encode_parser,
        add_tokenizer_parser,
        add_pretrain_parser,
        add_generate_parser,
        add_corpus_parser,
        add_finetune_parser,
        add_pairs_parser,
        add_tasks_parser,
        add_reproduce_parser,
        add_demo_parser,
        add_eval_parser,
        add_index_parser,
        add_search_parser,
        add_serve_parser,
    ]
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


def _quiet_libraries(args: argparse.Namespace) -> None:
    """Keep library chatter off the terminal: faiss's loader logs, at INFO, every build it
    tries (with a ``ModuleNotFoundError`` for each missing one) whenever an index command
    imports it; and ``--no-progress`` also turns off transformers' own bars ("Loading
    weights", "Writing model shards")."""
    if not args.verbose:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if getattr(args, "no_progress", False) or getattr(args, "show_progress", True) is False:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _broken_weights(e: Exception) -> bool:
    """Whether ``e`` says the model's own weights hold NaN or infinite values."""
    return isinstance(e, NonFiniteEmbeddingError) and bool(e.bad_weights)


def _broken_weights_message(e: NonFiniteEmbeddingError, args: argparse.Namespace) -> str:
    model = getattr(args, "model", None) or "the model"
    return (
        f"{model}: the model's weights hold NaN or infinite values ({len(e.bad_weights)} "
        f"tensors, e.g. {e.bad_weights[0]}), so every embedding is NaN; the model files are "
        "broken (no --precision helps): re-train or re-export the model"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries(args)
    try:
        return int(args.func(args) or 0)
    except DiffembedError as e:
        # A problem the user caused: one line naming the input (with -v: the traceback).
        if args.verbose:
            raise
        message = _broken_weights_message(e, args) if _broken_weights(e) else str(e)
        print(f"diffembed {args.verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
