"""Tokenizers of model directories: one load route, and a check that it is faithful.

Every part of diffembed loads a directory's tokenizer with ``load_tokenizer``, which is plain
``transformers.AutoTokenizer`` (no remote code) — the route sentence-transformers and users take
too, so all of them tokenize a directory identically.

The trap this guards against (transformers 5.x): ``AutoTokenizer`` on a directory whose
config.json says ``model_type: "qwen2"`` builds ``Qwen2Tokenizer``, which re-applies Qwen2's own
pre-tokenizer even when tokenizer.json was trained with another one. ``verify_saved_tokenizer``
detects such a directory when it is written, instead of letting it tokenize differently later.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from diffembed.errors import ConfigError
from diffembed.io import atomic_dir, check_output_dir
from diffembed.model.backbone import CheckpointError

# Texts that exercise pre-tokenization differences: digits, punctuation, case, spacing, unicode.
PROBE_TEXTS: tuple[str, ...] = (
    "The year 2024 had 365 days; pi is 3.14159 and 1,000,000 is a million.",
    "def f(x):\n    return x**2  # squared\n\tTabs and  double  spaces.",
    "Ünïcödé naïve café — “quotes” and emoji 🙂 mixed with CamelCase and snake_case_names.",
    "URL https://example.org/a?b=1&c=2, e-mail a.b@c.de, path /usr/share/doc/README.",
    "  leading spaces, trailing spaces   ",
)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a local model directory with ``AutoTokenizer`` (no remote code).

    ``CheckpointError`` names ``path`` and what to give instead when it is not a directory
    (transformers would take it for a Hub repository id) or holds no ``tokenizer.json`` that
    loads (transformers would advise installing sentencepiece)."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "no such directory"
        raise CheckpointError(
            f"{path}: {what}; give a model or tokenizer directory (one holding tokenizer.json, "
            "as `diffembed tokenizer train --out` and every saved model do)"
        )
    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=True
        )
    except Exception as e:  # transformers raises OSError/ValueError/KeyError variously
        files = sorted(p.name for p in path.glob("*token*"))
        if not (path / "tokenizer.json").is_file():
            raise CheckpointError(
                f"{path}: no tokenizer.json (tokenizer files here: {files or 'none'}), and no "
                "fast tokenizer can be built from the others; copy tokenizer.json (with "
                "tokenizer_config.json) from the model this directory was made from"
            ) from None
        raise CheckpointError(
            f"{path}: cannot load a tokenizer (files: {files}): {type(e).__name__}: {e}"
        ) from None


def tokenization_differences(
    a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, texts: list[str] | tuple[str, ...]
) -> list[str]:
    """Return the texts that ``a`` and ``b`` tokenize into different ids (with special tokens)."""
    return [t for t in texts if a(t)["input_ids"] != b(t)["input_ids"]]


def verify_saved_tokenizer(
    tokenizer: PreTrainedTokenizerBase, directory: str | Path, extra_texts: list[str] | None = None
) -> None:
    """Raise if ``load_tokenizer(directory)`` does not tokenize exactly like ``tokenizer``."""
    reloaded = load_tokenizer(directory)
    diff = tokenization_differences(tokenizer, reloaded, [*PROBE_TEXTS, *(extra_texts or [])])
    if diff:
        raise CheckpointError(
            f"{directory}: AutoTokenizer loads this directory as {type(reloaded).__name__}, which "
            f"tokenizes differently from the {type(tokenizer).__name__} being saved (e.g. "
            f"{diff[0]!r}). transformers overrides the pre-tokenizer for some model types "
            "(qwen2): save such a model with its native tokenizer class, or use a model type "
            "whose tokenizer class is taken from tokenizer_config.json (llama, mistral)."
        )


# ----------------------------------------------------------------------------- training
PAD, BOS, EOS, MASK = "<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, MASK)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    Special tokens: ``<|pad|>`` (id 0), ``<|bos|>`` (1, prepended to every text), ``<|eos|>`` (2,
    ends documents when they are packed for pretraining) and ``<|mask|>`` (3, diffusion noise).
    Byte-level, so every string is representable and no text is ever mapped to an unknown token.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(
            f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256}, got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, mask_token=MASK
    )


def save_tokenizer(
    tokenizer: PreTrainedTokenizerBase, directory: str | Path, overwrite: bool = False
) -> Path:
    """Save ``tokenizer`` as a standard HF tokenizer directory, atomically, and verify that
    ``AutoTokenizer`` loads it back identically. A non-empty ``directory`` (another tokenizer
    or anything else) is replaced only with ``overwrite``; a file never (``FileExistsError``,
    before anything is written)."""
    directory = Path(directory)
    check_output_dir(
        directory,
        overwrite,
        overwrite_hint="pass overwrite=True to replace it (its files are deleted)",
        elsewhere="choose another directory",
    )
    with atomic_dir(directory) as tmp:
        tokenizer.save_pretrained(str(tmp))
        verify_saved_tokenizer(tokenizer, tmp)
    return directory
