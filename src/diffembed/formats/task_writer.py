"""Writing evaluation tasks in the on-disk layout ``diffembed.formats.tasks`` reads (BEIR folders
plus ``task.json``), atomically: a reader never sees half a task."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffembed.formats.tasks import (
    FORMAT_VERSION,
    KINDS,
    METRICS,
    QRELS_HEADER,
    TASK_KEYS,
    Task,
    TaskFormatError,
    load_task,
)
from diffembed.io import atomic_dir, write_json


def _dump_row(row: Mapping[str, Any], first: Sequence[str]) -> str:
    """One JSONL line: the ``first`` keys in that order, then the others sorted."""
    ordered = {k: row[k] for k in first if k in row}
    ordered.update({k: row[k] for k in sorted(row) if k not in ordered})
    return json.dumps(ordered, ensure_ascii=False)


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TaskFormatError(f"{path.name} row {i}: expected a dict, got {type(row)}")
            f.write(_dump_row(row, first) + "\n")


def _write_qrels(path: Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write(QRELS_HEADER + "\n")
        for qid, judged in qrels.items():
            for did, score in judged.items():
                if isinstance(score, bool) or not isinstance(score, int):
                    raise TaskFormatError(
                        f"{path.name}: score of ({qid!r}, {did!r}) is {score!r}, not an int"
                    )
                f.write(f"{qid}\t{did}\t{score}\n")


def _check_rows(directory: Path, kind: str, given: Mapping[str, Any]) -> None:
    """The row collections ``kind`` needs are given, and no others."""
    if kind not in KINDS:
        raise TaskFormatError(f"{directory}: kind {kind!r} is not one of {KINDS}")
    needs = {
        "retrieval": ("corpus", "queries", "qrels"),
        "instruct": ("corpus", "queries", "qrels_og", "qrels_changed"),
        "classification": ("items",),
        "similarity": ("pairs",),
    }[kind]
    missing = [n for n in needs if given[n] is None]
    unused = [n for n, v in given.items() if v is not None and n not in needs]
    if missing or unused:
        raise TypeError(f"write_task(kind={kind!r}): missing {missing}, not applicable {unused}")


def _task_config(
    name: str,
    suite: str | None,
    kind: str,
    metric: str | None,
    instruction: str | None,
    description: str | None,
    k: int | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """task.json's content: ``extra`` plus the task fields (which ``extra`` must not set)."""
    cfg: dict[str, Any] = dict(extra or {})
    clash = sorted(set(cfg) & set(TASK_KEYS))
    if clash:
        raise TypeError(f"write_task: extra must not set {clash}")
    cfg.update(format_version=FORMAT_VERSION, name=name, suite=suite, kind=kind)
    cfg["metric"] = metric or METRICS[kind][0]
    for key, value in (("instruction", instruction), ("description", description), ("k", k)):
        if value is not None:
            cfg[key] = value
    return cfg


def write_task(
    directory: str | Path,
    *,
    name: str,
    suite: str | None,
    kind: str = "retrieval",
    metric: str | None = None,
    instruction: str | None = None,
    description: str | None = None,
    corpus: Sequence[Mapping[str, Any]] | None = None,
    queries: Sequence[Mapping[str, Any]] | None = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    qrels_og: Mapping[str, Mapping[str, int]] | None = None,
    qrels_changed: Mapping[str, Mapping[str, int]] | None = None,
    items: Sequence[Mapping[str, Any]] | None = None,
    pairs: Sequence[Mapping[str, Any]] | None = None,
    k: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Task:
    """Write a task folder atomically and return it loaded (so it is validated before it lands).

    Rows are written in the order given, keys ``_id``/``title``/``text`` (etc.) first and any
    extra keys sorted after, so equal inputs give byte-identical folders. An existing folder at
    ``directory`` is replaced only once the new one is complete and valid.

    Args:
        directory: the task folder, e.g. ``tasks/longdoc/python-synopsis``.
        name, suite, kind, metric, instruction, description: task.json fields (module doc).
        corpus: retrieval/instruct: ``[{"_id", "title"?, "text", ...}]``.
        queries: retrieval: ``[{"_id", "text"}]``; instruct: plus ``instruction_og`` and
            ``instruction_changed``.
        qrels: retrieval: ``{query_id: {doc_id: int score}}``.
        qrels_og, qrels_changed: instruct: the same under each instruction.
        items: classification: ``[{"_id", "text", "label", "split"?}]``.
        pairs: similarity: ``[{"_id"?, "text1", "text2", "score"}]``.
        k: classification: kNN neighbours.
        extra: more task.json keys (builder settings, sources, seed); must not shadow the above.

    Raises:
        TaskFormatError: when the written folder does not load (names the file and line).
    """
    directory = Path(directory)
    rows = {
        "corpus": corpus,
        "queries": queries,
        "qrels": qrels,
        "qrels_og": qrels_og,
        "qrels_changed": qrels_changed,
        "items": items,
        "pairs": pairs,
    }
    _check_rows(directory, kind, rows)
    cfg = _task_config(name, suite, kind, metric, instruction, description, k, extra)
    with atomic_dir(directory) as tmp:
        write_json(tmp / "task.json", cfg)
        if corpus is not None:
            _write_jsonl(tmp / "corpus.jsonl", corpus, ("_id", "title", "text"))
        if queries is not None:
            first = ("_id", "text", "instruction_og", "instruction_changed")
            _write_jsonl(tmp / "queries.jsonl", queries, first)
        if qrels is not None:
            _write_qrels(tmp / "qrels" / "test.tsv", qrels)
        if qrels_og is not None and qrels_changed is not None:
            _write_qrels(tmp / "qrels" / "og.tsv", qrels_og)
            _write_qrels(tmp / "qrels" / "changed.tsv", qrels_changed)
        if items is not None:
            _write_jsonl(tmp / "items.jsonl", items, ("_id", "text", "label", "split"))
        if pairs is not None:
            _write_jsonl(tmp / "pairs.jsonl", pairs, ("_id", "text1", "text2", "score"))
        try:
            load_task(tmp)
        except TaskFormatError as e:
            raise TaskFormatError(str(e).replace(str(tmp), str(directory))) from None
    return load_task(directory)
