"""``diffembed encode``, ``tokenizer train``, ``generate`` and ``demo``: the verbs of a model."""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from diffembed import demo
from diffembed.cli.options import (
    add_compile,
    add_device,
    add_fusion,
    add_max_length,
    add_no_progress,
    add_precision,
    at_least,
    fusion_choice,
    number_at_least,
)
from diffembed.demo import DEFAULT_MODEL, run_demo
from diffembed.formats.texts import (
    ACCEPTED,
    DEFAULT_FIELD,
    InputError,
    TextSource,
    read_text_source,
)
from diffembed.io import atomic_write, check_output_dir, check_output_file, check_writable
from diffembed.model import sharded
from diffembed.model.dimensions import truncate

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ encode
def add_encode_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed texts from a file into a .npy matrix",
        description="Embed every line of a .txt file (or standard input, --input -), the "
        "--text-field of each .jsonl line, or the --text-field column of a .csv/.tsv/.parquet "
        "file, and write a float32 [N, H] matrix to a .npy file, atomically.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--input", required=True, type=Path, help=ACCEPTED)
    p.add_argument("--output", required=True, type=Path, help="output .npy file")
    p.add_argument(
        "--text-field",
        help="field of each .jsonl line, or column of a .csv/.tsv/.parquet file (default: "
        f"{DEFAULT_FIELD}; refused for .txt and standard input, which are one text per line)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt", help="instruction prepended to every text")
    group.add_argument("--prompt-name", help="name of a prompt saved with the model (e.g. query)")
    add_max_length(p)
    p.add_argument("--no-truncate", action="store_true", help="fail instead of truncating")
    p.add_argument(
        "--batch-tokens",
        type=at_least(1),
        default=16384,
        help="token budget per batch, rows x longest row (default: 16384)",
    )
    p.add_argument("--batch-size", type=at_least(1), help="cap on texts per batch")
    p.add_argument(
        "--dimensions",
        type=at_least(1),
        help="keep the first N dimensions of each vector, renormalised; logs a warning unless "
        "the model was trained for N (finetune --matryoshka-dims)",
    )
    add_precision(p)
    add_compile(p)
    p.add_argument(
        "--attention", choices=["bidirectional", "causal"], help="override the model's attention"
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "last", "weighted_mean", "mask"],
        help="override the model's pooling (mask: the mask-token readout, see --mask-tokens)",
    )
    p.add_argument(
        "--mask-tokens",
        type=at_least(1),
        help="with --pooling mask: K mask tokens per text (K > 1 writes [N, K, H] vectors)",
    )
    add_device(p)
    add_no_progress(p)
    p.set_defaults(func=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    from diffembed.model.embedder import Embedder

    if args.output.suffix != ".npy":
        raise InputError(f"{args.output}: the output must be a .npy file")
    check_output_file(args.output, "choose another --output")
    ranks = sharded.launched_ranks()
    if ranks > 1 and str(args.input) == "-":
        raise InputError(
            "--input -: torchrun's processes cannot share standard input; write the texts to "
            "a file and pass it"
        )
    source = read_text_source(args.input, args.text_field)
    overrides = {"precision": args.precision}
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    if args.pooling is not None:
        overrides["pooling"] = args.pooling
    if args.mask_tokens is not None:
        overrides["mask_tokens"] = args.mask_tokens
    overrides["strict_length"] = args.strict
    ctx = sharded.join(args.device) if ranks > 1 else None
    device = ctx.device if ctx is not None else args.device
    embedder = Embedder.load(
        args.model, attention=args.attention, device=device, compile=args.compile, **overrides
    )
    if args.dimensions is not None:  # refused or warned about before any encoding
        _check_dimensions(args.model, args.dimensions, embedder.dim)
    start = time.perf_counter()
    run = None
    if ctx is None:
        vectors, stats = _encode(embedder, source, args)
    else:
        try:
            run, merged = _encode_sharded(embedder, source, args, ctx)
        finally:
            ctx.close()
        if merged is None:
            return 0  # not rank 0: its shards are written, rank 0 merges
        vectors, stats = merged
    seconds = time.perf_counter() - start
    vectors = truncate(vectors, args.dimensions)
    with atomic_write(args.output, "wb") as f:
        np.save(f, vectors)
    if run is not None:
        run.finish()
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


def _check_dimensions(model: Path, n: int, full: int) -> None:
    """Refuse ``--dimensions`` beyond the model's width; log a warning for a length the model
    was not trained for."""
    from diffembed.model.dimensions import check_dimensions, dimensions_warning
    from diffembed.model.model_dir import trained_dims

    warning = dimensions_warning(check_dimensions(n, full), full, trained_dims(model))
    if warning is not None:
        logger.warning("--dimensions: %s", warning)


def _encode_sharded(
    embedder: Any, source: TextSource, args: argparse.Namespace, ctx: Any
) -> tuple[sharded.ShardedRun, tuple[np.ndarray, Any] | None]:
    """This rank's part of a ``torchrun`` encode (``diffembed.model.sharded``): the run, and on
    rank 0 the merged ``(vectors, stats)`` in the input order (None on the other ranks)."""
    from diffembed.model.inputs import EncodeStats
    from diffembed.model.model_dir import hash_model_dir

    key = sharded.fingerprint(
        source.texts,
        verb="encode",
        model=hash_model_dir(args.model)["hash"],
        settings=embedder.settings(),
        precision=embedder.precision,
        device=ctx.device.type,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        truncate=not args.no_truncate,
    )
    run = sharded.ShardedRun(args.output, key, ctx, [len(t) for t in source.texts])

    def encode(start: int, stop: int) -> dict[str, np.ndarray]:
        part = TextSource(source.texts[start:stop], source.where[start:stop])
        vectors, stats = _encode(embedder, part, args, progress=ctx.main)
        return {"vectors": vectors, "stats": np.array([stats.tokens, stats.truncated])}

    pieces = run.run(encode)
    if pieces is None:
        return run, None
    if not pieces:
        return run, (np.zeros((0, embedder.dim), np.float32), EncodeStats())
    tokens, truncated = (int(n) for n in sharded.concat(pieces, "stats").reshape(-1, 2).sum(0))
    vectors = sharded.concat(pieces, "vectors")
    return run, (vectors, EncodeStats(texts=len(vectors), tokens=tokens, truncated=truncated))


def _encode(
    embedder: Any, source: TextSource, args: argparse.Namespace, progress: bool = True
) -> Any:
    """``encode_with_stats`` over the texts; its errors are told in terms of the input's lines
    and the command's flags."""
    from diffembed.model.embedder import NonFiniteEmbeddingError
    from diffembed.model.inputs import TextTooLongError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoded = embedder.encode_with_stats(
                source.texts,
                prompt=args.prompt,
                prompt_name=args.prompt_name,
                batch_size=args.batch_size,
                max_tokens_per_batch=args.batch_tokens,
                show_progress=progress and not args.no_progress,
                truncate=not args.no_truncate,
            )
    except TextTooLongError as e:
        first, more = e.indices[0], len(e.indices) - 1
        raise InputError(
            f"{source.where[first]}: the text is {e.lengths[0]} tokens, over "
            f"--max-length {e.max_length}"
            + (f" (and {more} more texts, up to {max(e.lengths)} tokens)" if more else "")
            + "; drop --no-truncate to truncate them, or raise --max-length"
        ) from None
    except NonFiniteEmbeddingError as e:
        if e.bad_weights:
            raise  # the weights are broken, not the input: cli.main says so
        raise InputError(
            f"{source.where[e.rows[0]]}: the embedding is NaN, infinite or zero"
            + (f" (and {len(e.rows) - 1} more texts)" if len(e.rows) > 1 else "")
            + " although the model's weights are finite; try --precision fp32"
        ) from None
    for w in caught:
        logger.warning("%s", w.message)
    return encoded


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
        "--vocab-size",
        required=True,
        type=at_least(1),
        help="vocabulary size, special tokens included",
    )
    t.add_argument("--out", required=True, type=Path, help="output tokenizer directory")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (another tokenizer, or any files) when training ends",
    )
    t.add_argument(
        "--min-frequency",
        type=at_least(1),
        default=2,
        help="minimum pair count to merge (default: 2)",
    )
    t.set_defaults(func=run_tokenizer_train)


def run_tokenizer_train(args: argparse.Namespace) -> int:
    from diffembed.model.tokenizer import save_tokenizer, train_bpe_tokenizer
    from diffembed.train.pretrain_data import read_corpus_texts

    check_output_dir(args.out, args.overwrite)  # before any work
    docs = read_corpus_texts(args.corpus, "pretrain")
    start = time.perf_counter()
    tokenizer = train_bpe_tokenizer((text for _, text in docs), args.vocab_size, args.min_frequency)
    save_tokenizer(tokenizer, args.out, overwrite=args.overwrite)
    logger.info(
        "trained %d-token BPE on %d pretrain documents in %.1f s -> %s",
        len(tokenizer),
        len(docs),
        time.perf_counter() - start,
        args.out,
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
    p.add_argument(
        "--length", type=at_least(1), default=64, help="tokens to generate (default: 64)"
    )
    p.add_argument(
        "--steps", type=at_least(1), help="diffusion: unmasking steps (default: --length)"
    )
    p.add_argument(
        "--temperature", type=number_at_least(0), default=0.0, help="0 = greedy (default)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from diffembed.model.generate import generate_text

    print(
        generate_text(args.model, args.prompt, args.length, args.steps, args.temperature, args.seed)
    )
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diffembed demo``."""
    p = sub.add_parser(
        "demo",
        help="search the Python docs with an embedding model and evaluate it",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="embedding model directory")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    p.add_argument("--limit", type=at_least(1), default=250, help="most modules to index")
    add_fusion(p)
    add_no_progress(p)
    p.set_defaults(func=run_demo_verb)


def run_demo_verb(args: argparse.Namespace) -> int:
    """``diffembed demo``: the output folder is checked before anything is indexed."""
    alpha = fusion_choice(args, True, "hybrid")
    check_writable(args.out, "choose another --out", into=True)
    return run_demo(
        args.model, args.out, args.limit, show_progress=not args.no_progress, alpha=alpha
    )
