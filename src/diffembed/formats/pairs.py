"""Training pairs for contrastive fine-tuning: reading and validating a user-supplied JSONL file.

One JSON object per line::

    {"query": "...", "positive": "...", "negatives": ["...", ...],
     "instruction": "...", "task": "..."}

``query``, ``positive``, ``instruction`` and ``task`` are non-empty strings; ``negatives`` is a
list of non-empty strings (possibly empty: the trainer then draws random negatives). Problems
that make a line unusable raise ``PairsError`` naming the file and the 1-based line number.
Duplicate queries and empty ``negatives`` lists are legal but reported with a logged warning.

Other layouts are read too (``read_pairs(path, instruction=..., columns=...)``, the
``finetune`` options ``--instruction`` and ``--columns``):

* sentence-transformers' columns ``anchor``, ``positive`` and ``negative`` (or ``negative_1``,
  ``negative_2``, ...), with one ``instruction`` for the whole file;
* any columns, mapped onto the fields: ``query=question,positive=answer,negatives=neg1+neg2``.

Without a ``task`` column every pair gets the task ``"query"``, the prompt name that
``Embedder.encode_queries`` and sentence-transformers' ``prompt_name="query"`` use.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffembed.errors import DiffembedError
from diffembed.io import atomic_write, iter_jsonl

logger = logging.getLogger(__name__)

REQUIRED_FIELDS: tuple[str, ...] = ("query", "positive", "negatives", "instruction", "task")
_STRING_FIELDS: tuple[str, ...] = ("query", "positive", "instruction", "task")
DEFAULT_TASK = "query"
_ST_NEGATIVE = re.compile(r"^negative(?:_(\d+))?$")
Columns = Mapping[str, "str | Sequence[str]"]


class PairsError(DiffembedError):
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


def parse_columns(spec: str | Columns | None) -> dict[str, tuple[str, ...]]:
    """``"query=question,positive=answer,negatives=neg1+neg2"`` (or the same as a mapping) as
    ``{field: (column, ...)}``; only ``negatives`` may gather several columns (``+``)."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        items: list[tuple[str, str | Sequence[str]]] = []
        for part in spec.split(","):
            field_name, _, columns = part.partition("=")
            if not field_name.strip() or not columns.strip():
                raise PairsError(
                    f"--columns {spec!r}: expected FIELD=COLUMN[,FIELD=COLUMN...], got {part!r}"
                )
            items.append((field_name.strip(), columns.split("+")))
    else:
        items = list(spec.items())
    out: dict[str, tuple[str, ...]] = {}
    for field_name, columns in items:
        names = (columns,) if isinstance(columns, str) else tuple(columns)
        names = tuple(c.strip() for c in names)
        if field_name not in REQUIRED_FIELDS:
            raise PairsError(
                f"--columns {spec!r}: unknown field {field_name!r}; the fields are "
                f"{', '.join(REQUIRED_FIELDS)}"
            )
        if field_name in out:
            raise PairsError(f"--columns {spec!r}: {field_name!r} mapped twice")
        if not all(names) or (len(names) > 1 and field_name != "negatives"):
            raise PairsError(
                f"--columns {spec!r}: {field_name!r} needs one column name (only negatives "
                "may join several with '+')"
            )
        out[field_name] = names
    return out


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _mapped(record: dict[str, Any], where: str, columns: dict[str, tuple[str, ...]]) -> dict:
    """``record`` with the fields ``columns`` maps taken from their columns."""
    out = {k: v for k, v in record.items() if k in REQUIRED_FIELDS and k not in columns}
    for field_name, names in columns.items():
        for name in names:
            if name not in record:
                spec = f"{field_name}={'+'.join(names)}"
                raise PairsError(
                    f"{where}: no column {name!r} (--columns {spec}); the line has "
                    f"{', '.join(record) or 'no columns'}"
                )
        if field_name == "negatives":
            negatives: list[Any] = []
            for name in names:
                value = _as_list(record[name])
                negatives.extend(value if isinstance(value, list) else [value])
            out[field_name] = negatives
        else:
            out[field_name] = record[names[0]]
    return out


def _sentence_transformers(record: dict[str, Any]) -> dict[str, Any]:
    """anchor / positive / negative (or negative_1, negative_2, ...) as our fields."""
    numbered = sorted(
        (int(m.group(1) or 0), key) for key in record if (m := _ST_NEGATIVE.match(key))
    )
    negatives: list[Any] = []
    for _, key in numbered:
        value = _as_list(record[key])
        negatives.extend(value if isinstance(value, list) else [value])
    return {"query": record["anchor"], "positive": record.get("positive"), "negatives": negatives}


def normalize_record(
    record: Any, where: str, instruction: str | None = None, columns: Columns | None = None
) -> Any:
    """One decoded line in our layout (see the module docstring): columns mapped, a
    sentence-transformers triplet renamed, the file's instruction and the default task added.
    A line already in our layout is returned as it is (``parse_pair`` checks it)."""
    if not isinstance(record, dict):
        return record
    mapping = parse_columns(columns)
    st_layout = not mapping and "query" not in record and "anchor" in record
    if mapping:
        out = _mapped(record, where, mapping)
    elif st_layout:
        out = _sentence_transformers(record)
        if "positive" not in record:
            out.pop("positive")
    else:
        out = dict(record)
    if instruction is not None:
        if "instruction" in out:
            raise PairsError(
                f"{where}: the line has its own instruction and --instruction gives one for the "
                "whole file; drop one of them"
            )
        out["instruction"] = instruction
    if mapping or st_layout or instruction is not None:
        out.setdefault("task", DEFAULT_TASK)
        out.setdefault("negatives", [])
    missing = [k for k in REQUIRED_FIELDS if k not in out]
    if st_layout and missing == ["instruction"]:
        raise PairsError(
            f"{where}: sentence-transformers columns ({', '.join(record)}) carry no instruction: "
            "pass --instruction TEXT (one instruction for the whole file), or name a column "
            "with --columns instruction=COLUMN"
        )
    if missing and not mapping and not st_layout and "query" not in record:
        raise PairsError(
            f"{where}: missing field(s) {', '.join(missing)}; found {', '.join(record)}: map "
            "them with --columns FIELD=COLUMN,... (e.g. query=question,positive=answer), or "
            "use sentence-transformers' anchor/positive/negative with --instruction"
        )
    return out


def read_pairs(
    path: str | Path, instruction: str | None = None, columns: Columns | str | None = None
) -> list[Pair]:
    """Read and validate a pairs JSONL file.

    Blank lines are skipped. Raises ``PairsError`` (``"{path}:{line}: ..."``) for invalid JSON,
    a missing or empty field, or a value of the wrong type, and for a file with no pairs.
    Logs one warning each with counts for duplicate queries (same task, instruction and query)
    and for pairs without negatives. ``instruction`` (one for every line) and ``columns``
    (``"query=question,..."``) read other layouts (see the module docstring).
    """
    path = Path(path)
    parse_columns(columns)  # a bad spec fails before the file is read
    pairs = [
        parse_pair(normalize_record(record, f"{path}:{n}", instruction, columns), f"{path}:{n}")
        for n, record in iter_jsonl(path, PairsError)
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
