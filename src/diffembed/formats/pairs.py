"""Training pairs for contrastive fine-tuning: reading and validating a user-supplied JSONL file.

One JSON object per line::

    {"query": "...", "positive": "...", "negatives": ["...", ...],
     "instruction": "...", "task": "..."}

``query``, ``positive``, ``instruction`` and ``task`` are non-empty strings; ``negatives`` is a
list of non-empty strings (possibly empty: the trainer then draws random negatives). Problems
that make a line unusable raise ``PairsError`` naming the file and the 1-based line number.
Duplicate queries and empty ``negatives`` lists are legal but reported with a logged warning.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffembed.io import atomic_write, iter_jsonl

logger = logging.getLogger(__name__)

REQUIRED_FIELDS: tuple[str, ...] = ("query", "positive", "negatives", "instruction", "task")
_STRING_FIELDS: tuple[str, ...] = ("query", "positive", "instruction", "task")


class PairsError(ValueError):
    """A pairs file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class Pair:
    """One training example: a query, its positive document and hard negative documents.

    Attributes:
        query: the query text (without instruction).
        positive: the relevant document.
        negatives: hard negative documents (may be empty).
        instruction: the task instruction prefixed to the query (``"{instruction}: {query}"``).
        task: the task type; batches are built from one task at a time.
    """

    query: str
    positive: str
    negatives: tuple[str, ...]
    instruction: str
    task: str


def parse_pair(record: Any, where: str) -> Pair:
    """Validate one decoded JSON value as a ``Pair``; errors are prefixed with ``where``."""
    if not isinstance(record, dict):
        raise PairsError(f"{where}: expected a JSON object, found {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise PairsError(f"{where}: missing field(s) {', '.join(missing)}")
    for key in _STRING_FIELDS:
        value = record[key]
        if not isinstance(value, str):
            raise PairsError(f"{where}: field {key!r} is {type(value).__name__}, not a string")
        if not value.strip():
            raise PairsError(f"{where}: field {key!r} is empty")
    negatives = record["negatives"]
    if not isinstance(negatives, list):
        raise PairsError(
            f"{where}: field 'negatives' is {type(negatives).__name__}, not a list of strings"
        )
    for j, neg in enumerate(negatives):
        if not isinstance(neg, str):
            raise PairsError(f"{where}: negatives[{j}] is {type(neg).__name__}, not a string")
        if not neg.strip():
            raise PairsError(f"{where}: negatives[{j}] is empty")
    return Pair(
        query=record["query"],
        positive=record["positive"],
        negatives=tuple(negatives),
        instruction=record["instruction"],
        task=record["task"],
    )


def pair_record(pair: Pair) -> dict[str, Any]:
    """The JSON object of one pair, as a pairs file holds it."""
    return {
        "query": pair.query,
        "positive": pair.positive,
        "negatives": list(pair.negatives),
        "instruction": pair.instruction,
        "task": pair.task,
    }


def write_pairs(path: str | Path, pairs: Sequence[Pair]) -> Path:
    """Write ``pairs`` as a pairs JSONL file (atomically); ``read_pairs`` reads it back."""
    path = Path(path)
    with atomic_write(path) as f:
        for pair in pairs:
            f.write(json.dumps(pair_record(pair), ensure_ascii=False) + "\n")
    return path


def read_pairs(path: str | Path) -> list[Pair]:
    """Read and validate a pairs JSONL file.

    Blank lines are skipped. Raises ``PairsError`` (``"{path}:{line}: ..."``) for invalid JSON,
    a missing or empty field, or a value of the wrong type, and for a file with no pairs.
    Logs one warning each with counts for duplicate queries (same task, instruction and query)
    and for pairs without negatives.
    """
    path = Path(path)
    pairs = [
        parse_pair(record, f"{path}:{lineno}") for lineno, record in iter_jsonl(path, PairsError)
    ]
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    counts = Counter((p.task, p.instruction, p.query) for p in pairs)
    duplicated = {k: c for k, c in counts.items() if c > 1}
    if duplicated:
        logger.warning(
            "%s: %d queries occur more than once (%d extra rows); duplicates can be in-batch "
            "false negatives of each other",
            path,
            len(duplicated),
            sum(duplicated.values()) - len(duplicated),
        )
    no_negatives = sum(1 for p in pairs if not p.negatives)
    if no_negatives:
        logger.warning(
            "%s: %d of %d pairs have an empty negatives list (random negatives will be used)",
            path,
            no_negatives,
            len(pairs),
        )
    return pairs
