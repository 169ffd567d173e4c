"""A user's texts to embed: a ``.txt`` file (one text per line) or JSONL (one field per line)."""

from __future__ import annotations

from pathlib import Path

from diffembed.io import iter_jsonl


class InputError(ValueError):
    """A user input file is malformed; the message names the file and line."""


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """Read texts from ``.txt`` (one per line) or ``.jsonl``/``.ndjson`` (field ``text_field``).

    Every line must hold a non-empty text; errors name the file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        texts = _read_jsonl_texts(path, text_field)
    else:
        texts = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                texts.append(_non_empty(line.rstrip("\r\n"), path, lineno))
    if not texts:
        raise InputError(f"{path}: no texts")
    return texts


def _read_jsonl_texts(path: Path, text_field: str) -> list[str]:
    texts = []
    for lineno, record in iter_jsonl(path, InputError, skip_blank=False):
        if text_field not in record:
            raise InputError(f"{path}:{lineno}: no field {text_field!r}")
        text = record[text_field]
        if not isinstance(text, str):
            raise InputError(
                f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string"
            )
        texts.append(_non_empty(text, path, lineno))
    return texts


def _non_empty(text: str, path: Path, lineno: int) -> str:
    if not text.strip():
        raise InputError(f"{path}:{lineno}: empty text")
    return text
