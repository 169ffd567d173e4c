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

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from diffembed.backbone import CheckpointError

# Texts that exercise pre-tokenization differences: digits, punctuation, case, spacing, unicode.
PROBE_TEXTS: tuple[str, ...] = (
    "The year 2024 had 365 days; pi is 3.14159 and 1,000,000 is a million.",
    "def f(x):\n    return x**2  # squared\n\tTabs and  double  spaces.",
    "Ünïcödé naïve café — “quotes” and emoji 🙂 mixed with CamelCase and snake_case_names.",
    "URL https://example.org/a?b=1&c=2, e-mail a.b@c.de, path /usr/share/doc/README.",
    "  leading spaces, trailing spaces   ",
)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a local model directory with ``AutoTokenizer`` (no remote code)."""
    path = Path(path)
    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=True
        )
    except Exception as e:  # transformers raises OSError/ValueError/KeyError variously
        files = sorted(p.name for p in path.glob("*token*")) if path.is_dir() else []
        raise CheckpointError(
            f"{path}: cannot load a tokenizer (files: {files or 'none'}): {type(e).__name__}: {e}"
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
