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
from diffembed.data.corpus.cli import add_corpus_parser
from diffembed.data.pairs.build import add_pairs_parser
from diffembed.data.tasks.cli import add_tasks_parser
from diffembed.demo import add_demo_parser
from diffembed.eval.evaluate import add_eval_parser
from diffembed.index.index import add_index_parser, add_search_parser
from diffembed.serve.app import add_serve_parser
from diffembed.study.study import add_reproduce_parser
from diffembed.train.finetune import add_finetune_parser

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
    from diffembed.io import atomic_write
    from diffembed.model.embedder import Embedder

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
        vectors, stats = embedder.encode_with_stats(
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


# ------------------------------------------------------------------------------ tokenizer
def add_tokenizer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    verbs = p.add_subparsers(dest="tokenizer_verb", metavar="VERB", required=True)
    t = verbs.add_parser(
        "train",
        help="train on the pretrain split of a corpus",
        description="Train a byte-level BPE (pad, bos, eos and mask special tokens) on the "
        "pretrain split only and save it as a Hugging Face tokenizer directory.",
    )
    t.add_argument("--corpus", required=True, type=Path, help="corpus directory (pretrain.jsonl)")
    t.add_argument(
        "--vocab-size", required=True, type=int, help="vocabulary size, special tokens included"
    )
    t.add_argument("--out", required=True, type=Path, help="output tokenizer directory")
    t.add_argument(
        "--min-frequency", type=int, default=2, help="minimum pair count to merge (default: 2)"
    )
    t.set_defaults(func=run_tokenizer_train)


def run_tokenizer_train(args: argparse.Namespace) -> int:
    from diffembed.model.tokenizer import save_tokenizer, train_bpe_tokenizer
    from diffembed.train.pretrain import read_corpus_texts

    docs = read_corpus_texts(args.corpus, "pretrain")
    start = time.perf_counter()
    tokenizer = train_bpe_tokenizer((text for _, text in docs), args.vocab_size, args.min_frequency)
    save_tokenizer(tokenizer, args.out)
    logger.info(
        "trained %d-token BPE on %d pretrain documents in %.1f s -> %s",
        len(tokenizer),
        len(docs),
        time.perf_counter() - start,
        args.out,
    )
    return 0


# ------------------------------------------------------------------------------ pretrain
def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    from diffembed.train.pretrain import PRESETS

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
    p.add_argument("--corpus", required=True, type=Path, help="corpus directory (pretrain.jsonl)")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--init", type=Path, help="start from this model (mntp: the AR model)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--steps", type=int, help="override the number of optimizer steps")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--stop-after", type=int, help="stop after this step, as an interruption would")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from diffembed.train.pretrain import make_config, pretrain

    config = make_config(args.preset, args.objective, args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.seed is not None:
        config.seed = args.seed
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
    )
    return 0


# ------------------------------------------------------------------------------ generate
def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample text from a pretrained LM",
        description="AR models sample left to right; diffusion models by iterative unmasking "
        "with low-confidence remasking.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--length", type=int, default=64, help="tokens to generate (default: 64)")
    p.add_argument("--steps", type=int, help="diffusion: unmasking steps (default: --length)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from diffembed.model.generate import generate_text

    print(
        generate_text(args.model, args.prompt, args.length, args.steps, args.temperature, args.seed)
    )
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from diffembed.model.backbone import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (
        InputError,
        CheckpointError,
        ValueError,
        TypeError,
        KeyError,
        FileNotFoundError,
        FileExistsError,
    ) as e:
        if args.verbose:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"diffembed {args.verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
