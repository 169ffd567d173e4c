"""Evaluation tasks on disk: BEIR folders plus ``task.json``, read strictly and written atomically.

A task is one folder. Four kinds exist; ``task.json`` says which (a folder without task.json is
a plain BEIR retrieval task: name = folder name, no suite, metric ``ndcg_at_10``, no instruction).

``task.json`` (UTF-8 JSON object)::

    {
      "format_version": 1,                 # optional; only 1 is known
      "name": "python-synopsis",           # default: the folder name
      "suite": "longdoc",                  # longdoc | reasoning | instruct | traditional | null
      "kind": "retrieval",                 # retrieval (default) | instruct | classification
                                           #   | similarity
      "metric": "ndcg_at_10",              # main metric; default per kind (see METRICS)
      "instruction": "Given a ..., retrieve the ...",   # task instruction for the query side,
                                           #   or null; models that take instructions use it
      "description": "free text",          # optional
      "k": 5,                              # classification only: neighbours of the kNN (default 5)
      ...                                  # any other key is kept in Task.meta (builder settings)
    }

**retrieval** (BEIR):
  - ``corpus.jsonl``: ``{"_id": str, "title": str (optional), "text": str}`` per line;
  - ``queries.jsonl``: ``{"_id": str, "text": str}`` per line;
  - ``qrels/test.tsv``: header ``query-id<TAB>corpus-id<TAB>score``, then one line per judged
    pair; ``score`` is an integer (graded relevance, > 0 relevant).

  Only queries with at least one relevant document are scored. Ids may be JSON strings or
  integers (read as strings); other fields of a line are kept in ``meta``. A document whose
  text and title are both empty (BEIR's Cranfield has two) is kept out of the corpus and listed
  in ``Task.empty_docs``; qrels may still name it, and a relevant empty document counts as
  never retrieved.

**instruct** (FollowIR-style paired instructions):
  - ``corpus.jsonl`` as above;
  - ``queries.jsonl``: ``{"_id", "text", "instruction_og": str, "instruction_changed": str}``:
    every query carries the original instruction and the changed one (the changed instruction
    adds a constraint that makes some originally relevant documents non-relevant);
  - ``qrels/og.tsv``: relevance under the original instruction; ``qrels/changed.tsv``: under
    the changed one (same TSV format; ``qrels/test.tsv`` must not exist).

  The documents whose relevance the changed instruction removed are those with og score > 0 and
  changed score <= 0 (or absent); p-MRR is computed over them, and at least one must exist. A
  query is searched as ``"{text} {instruction}"`` (MTEB's convention: query first), once with
  each instruction; the task-level ``instruction`` is the model's prompt on top.

**classification** (kNN over embeddings):
  - ``items.jsonl``: ``{"_id": str, "text": str, "label": str | int, "split": "train"|"test"}``;
    ``split`` is either on every line or on none. With splits, each test item is classified by
    its ``k`` nearest train items; without, by leave-one-out over all items.

**similarity** (human-judged pairs):
  - ``pairs.jsonl``: ``{"_id": str (optional), "text1": str, "text2": str, "score": number}``;
    at least 3 pairs; scored by Pearson and Spearman correlation of the model's similarity with
    ``score``.

Every problem raises ``TaskFormatError`` naming the file and, where there is one, the 1-based
line: missing files, invalid JSON or UTF-8, missing or empty ``_id``/``text``, duplicate ids, a
qrels line naming an unknown query or document, a non-integer score, a bad header.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffembed.errors import ConfigError, DiffembedError
from diffembed.formats.corpus import Document
from diffembed.io import iter_jsonl, read_json

FORMAT_VERSION = 1
SUITES: tuple[str, ...] = ("longdoc", "reasoning", "instruct", "traditional")
KINDS: tuple[str, ...] = ("retrieval", "instruct", "classification", "similarity")
RETRIEVAL_METRICS: tuple[str, ...] = (
    "ndcg_at_1",
    "ndcg_at_10",
    "recall_at_10",
    "recall_at_100",
    "mrr_at_10",
    "map",
)
# Metric names a task may declare as its main metric, per kind; the first is the default.
METRICS: dict[str, tuple[str, ...]] = {
    "retrieval": ("ndcg_at_10", *(m for m in RETRIEVAL_METRICS if m != "ndcg_at_10")),
    "instruct": (
        "p-mrr",
        *(f"og_{m}" for m in RETRIEVAL_METRICS),
        *(f"changed_{m}" for m in RETRIEVAL_METRICS),
    ),
    "classification": ("accuracy", "macro_f1"),
    "similarity": ("spearman", "pearson"),
}
QRELS_HEADER = "query-id\tcorpus-id\tscore"
DEFAULT_KNN_K = 5
TASK_KEYS = (
    "format_version",
    "name",
    "suite",
    "kind",
    "metric",
    "instruction",
    "description",
    "k",
)

Qrels = dict[str, dict[str, int]]


class TaskFormatError(DiffembedError):
    """A task folder is malformed; the message names the file and, if any, the line."""


@dataclass(frozen=True)
class Query:
    """A query; instruct tasks give it the original and the changed instruction."""

    id: str
    text: str
    instruction_og: str | None = None
    instruction_changed: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """A classification item; ``split`` is "train", "test" or None (leave-one-out)."""

    id: str
    text: str
    label: str
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredPair:
    """A similarity pair of texts with its human score (sentence-similarity tasks; not a
    training pair, see ``diffembed.formats.pairs.Pair``)."""

    id: str
    text1: str
    text2: str
    score: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    """A loaded task. Which collections are filled depends on ``kind`` (see the module doc)."""

    path: Path
    name: str
    suite: str | None
    kind: str
    metric: str
    instruction: str | None = None
    description: str | None = None
    k: int = DEFAULT_KNN_K
    corpus: list[Document] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    qrels: Qrels = field(default_factory=dict)
    qrels_og: Qrels = field(default_factory=dict)
    qrels_changed: Qrels = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    pairs: list[ScoredPair] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    empty_docs: list[str] = field(default_factory=list)  # ids left out: no text, no title

    @property
    def key(self) -> str:
        """``"suite/name"`` (``"-/name"`` without a suite): unique within an evaluation."""
        return f"{self.suite or '-'}/{self.name}"

    def changed_docs(self) -> dict[str, list[str]]:
        """Instruct tasks: per query, the documents relevant under the original instruction and
        not under the changed one (og score > 0, changed score <= 0 or unjudged), in og order."""
        out: dict[str, list[str]] = {}
        for qid, judged in self.qrels_og.items():
            changed = self.qrels_changed.get(qid, {})
            docs = [d for d, s in judged.items() if s > 0 and changed.get(d, 0) <= 0]
            if docs:
                out[qid] = docs
        return out


# ------------------------------------------------------------------------------ reading
def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``diffembed.io.iter_jsonl``, strict: blank lines are errors, every error a TaskFormatError."""
    return iter_jsonl(path, TaskFormatError, skip_blank=False)


def _get_id(record: Mapping[str, Any], key: str, where: str) -> str:
    if key not in record:
        raise TaskFormatError(f"{where}: missing field {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TaskFormatError(
            f"{where}: field {key!r} must be a string or integer, got {type(value).__name__}"
        )
    value = str(value)
    if not value.strip() or value != value.strip() or "\t" in value or "\n" in value:
        raise TaskFormatError(
            f"{where}: field {key!r} is empty or has surrounding whitespace, tab or newline"
        )
    return value


def _get_text(record: Mapping[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    if key not in record:
        raise TaskFormatError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise TaskFormatError(f"{where}: field {key!r} is {type(value).__name__}, not a string")
    if not allow_empty and not value.strip():
        raise TaskFormatError(f"{where}: field {key!r} is empty")
    return value


def _check_unique(seen: dict[str, int], id_: str, path: Path, lineno: int) -> None:
    if id_ in seen:
        raise TaskFormatError(f"{path}:{lineno}: duplicate _id {id_!r} (first on line {seen[id_]})")
    seen[id_] = lineno


def read_corpus(path: Path, empty: list[str] | None = None) -> list[Document]:
    """Read ``corpus.jsonl``: unique ``_id``, string ``text``, optional string ``title``.

    A document with empty text and title is left out and its id appended to ``empty`` (an
    error when ``empty`` is None)."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        id_ = _get_id(rec, "_id", where)
        text = _get_text(rec, "text", where, allow_empty=True)
        title = _get_text(rec, "title", where, allow_empty=True) if "title" in rec else ""
        _check_unique(seen, id_, path, lineno)
        if not (title + text).strip():
            if empty is None:
                raise TaskFormatError(f"{where}: document {id_!r} has no text and no title")
            empty.append(id_)
            continue
        meta = {k: v for k, v in rec.items() if k not in ("_id", "title", "text")}
        docs.append(Document(id=id_, text=text, title=title, meta=meta))
    if not docs:
        raise TaskFormatError(f"{path}: no documents" + (" with text" if empty else ""))
    return docs


def read_queries(path: Path, paired: bool = False) -> list[Query]:
    """Read ``queries.jsonl``; ``paired`` requires ``instruction_og`` and ``instruction_changed``."""
    queries: list[Query] = []
    seen: dict[str, int] = {}
    extra_keys = ("instruction_og", "instruction_changed")
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        id_ = _get_id(rec, "_id", where)
        text = _get_text(rec, "text", where)
        og = _get_text(rec, "instruction_og", where) if paired else None
        changed = _get_text(rec, "instruction_changed", where) if paired else None
        if paired and og == changed:
            raise TaskFormatError(f"{where}: instruction_og and instruction_changed are identical")
        _check_unique(seen, id_, path, lineno)
        skip = ("_id", "text", *extra_keys) if paired else ("_id", "text")
        meta = {k: v for k, v in rec.items() if k not in skip}
        queries.append(Query(id_, text, og, changed, meta))
    if not queries:
        raise TaskFormatError(f"{path}: no queries")
    return queries


def read_qrels(path: Path, query_ids: set[str], doc_ids: set[str]) -> Qrels:
    """Read a BEIR qrels TSV (header ``query-id\\tcorpus-id\\tscore``), checking every id."""
    if not path.is_file():
        raise TaskFormatError(f"{path}: no such file")
    qrels: Qrels = {}
    lines: dict[tuple[str, str], int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise TaskFormatError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if lineno == 1:
                if line != QRELS_HEADER:
                    raise TaskFormatError(
                        f"{path}:1: bad header {line!r}; expected {QRELS_HEADER!r}"
                    )
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise TaskFormatError(
                    f"{path}:{lineno}: expected 3 tab-separated fields, got {len(fields)}"
                )
            qid, did, score_s = fields
            if qid not in query_ids:
                raise TaskFormatError(f"{path}:{lineno}: unknown query id {qid!r}")
            if did not in doc_ids:
                raise TaskFormatError(f"{path}:{lineno}: unknown corpus id {did!r}")
            try:
                score = int(score_s)
            except ValueError:
                raise TaskFormatError(
                    f"{path}:{lineno}: score {score_s!r} is not an integer"
                ) from None
            if (qid, did) in lines:
                raise TaskFormatError(
                    f"{path}:{lineno}: duplicate pair ({qid!r}, {did!r}) "
                    f"(first on line {lines[qid, did]})"
                )
            lines[qid, did] = lineno
            qrels.setdefault(qid, {})[did] = score
    if not lines:
        raise TaskFormatError(f"{path}: no judgements")
    if not any(s > 0 for judged in qrels.values() for s in judged.values()):
        raise TaskFormatError(f"{path}: no relevant (score > 0) judgement")
    return qrels


def read_items(path: Path) -> list[Item]:
    """Read ``items.jsonl`` for a classification task."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    with_split: bool | None = None
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        id_ = _get_id(rec, "_id", where)
        text = _get_text(rec, "text", where)
        label = _get_id(rec, "label", where)
        split = rec.get("split")
        if with_split is None:
            with_split = split is not None
        if (split is not None) != with_split:
            raise TaskFormatError(f"{where}: 'split' must be on every line or on none")
        if split is not None and split not in ("train", "test"):
            raise TaskFormatError(f"{where}: split must be 'train' or 'test', got {split!r}")
        _check_unique(seen, id_, path, lineno)
        meta = {k: v for k, v in rec.items() if k not in ("_id", "text", "label", "split")}
        items.append(Item(id_, text, label, split, meta))
    if len(items) < 2:
        raise TaskFormatError(f"{path}: fewer than 2 items")
    if with_split:
        for part in ("train", "test"):
            if not any(it.split == part for it in items):
                raise TaskFormatError(f"{path}: no {part!r} items")
    if len({it.label for it in items}) < 2:
        raise TaskFormatError(f"{path}: fewer than 2 labels")
    return items


def read_scored_pairs(path: Path) -> list[ScoredPair]:
    """Read ``pairs.jsonl`` for a similarity task."""
    pairs: list[ScoredPair] = []
    seen: dict[str, int] = {}
    for lineno, rec in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        id_ = _get_id(rec, "_id", where) if "_id" in rec else str(lineno)
        text1 = _get_text(rec, "text1", where)
        text2 = _get_text(rec, "text2", where)
        if "score" not in rec:
            raise TaskFormatError(f"{where}: missing field 'score'")
        score = rec["score"]
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise TaskFormatError(f"{where}: score {score!r} is not a finite number")
        _check_unique(seen, id_, path, lineno)
        meta = {k: v for k, v in rec.items() if k not in ("_id", "text1", "text2", "score")}
        pairs.append(ScoredPair(id_, text1, text2, float(score), meta))
    if len(pairs) < 3:
        raise TaskFormatError(f"{path}: fewer than 3 pairs")
    if len({p.score for p in pairs}) < 2:
        raise TaskFormatError(f"{path}: all scores are equal; correlations are undefined")
    return pairs


def read_task_json(path: Path) -> dict[str, Any]:
    """Read and check ``task.json``; returns the object with defaults filled in."""
    data = read_json(path, TaskFormatError)
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise TaskFormatError(f"{path}: unsupported format_version {version!r}")
    name = data.get("name", path.parent.name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise TaskFormatError(f"{path}: 'name' must be a non-empty string without '/'")
    suite = data.get("suite")
    if suite is not None and suite not in SUITES:
        raise TaskFormatError(f"{path}: suite {suite!r} is not one of {SUITES} or null")
    kind = data.get("kind", "retrieval")
    if kind not in KINDS:
        raise TaskFormatError(f"{path}: kind {kind!r} is not one of {KINDS}")
    metric = data.get("metric", METRICS[kind][0])
    if metric not in METRICS[kind]:
        raise TaskFormatError(
            f"{path}: metric {metric!r} is not one of {METRICS[kind]} (kind {kind!r})"
        )
    for key in ("instruction", "description"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise TaskFormatError(f"{path}: {key!r} must be a non-empty string or null")
    k = data.get("k", DEFAULT_KNN_K)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TaskFormatError(f"{path}: 'k' must be a positive integer, got {k!r}")
    if "k" in data and kind != "classification":
        raise TaskFormatError(f"{path}: 'k' applies to classification tasks only")
    return {
        **data,
        "name": name,
        "suite": suite,
        "kind": kind,
        "metric": metric,
        "instruction": data.get("instruction"),
        "description": data.get("description"),
        "k": k,
    }


def load_task(directory: str | Path) -> Task:
    """Load and validate a task folder (see the module docstring for the format).

    Raises:
        TaskFormatError: naming the file and line of the first problem found.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise TaskFormatError(f"{directory}: no such task folder")
    task_json = directory / "task.json"
    if task_json.exists():
        cfg = read_task_json(task_json)
    else:
        cfg = {
            "name": directory.resolve().name,
            "suite": None,
            "kind": "retrieval",
            "metric": "ndcg_at_10",
            "instruction": None,
            "description": None,
            "k": DEFAULT_KNN_K,
        }
    task = Task(
        path=directory,
        name=cfg["name"],
        suite=cfg["suite"],
        kind=cfg["kind"],
        metric=cfg["metric"],
        instruction=cfg["instruction"],
        description=cfg["description"],
        k=cfg["k"],
        meta={k: v for k, v in cfg.items() if k not in TASK_KEYS},
    )
    if task.kind in ("retrieval", "instruct"):
        task.corpus = read_corpus(directory / "corpus.jsonl", task.empty_docs)
        task.queries = read_queries(directory / "queries.jsonl", paired=task.kind == "instruct")
        qids = {q.id for q in task.queries}
        dids = {d.id for d in task.corpus} | set(task.empty_docs)
        if task.kind == "retrieval":
            task.qrels = read_qrels(directory / "qrels" / "test.tsv", qids, dids)
        else:
            if (directory / "qrels" / "test.tsv").exists():
                raise TaskFormatError(
                    f"{directory / 'qrels' / 'test.tsv'}: instruct tasks use qrels/og.tsv and "
                    "qrels/changed.tsv, not test.tsv"
                )
            task.qrels_og = read_qrels(directory / "qrels" / "og.tsv", qids, dids)
            task.qrels_changed = read_qrels(directory / "qrels" / "changed.tsv", qids, dids)
            if not task.changed_docs():
                raise TaskFormatError(
                    f"{directory / 'qrels' / 'changed.tsv'}: the changed instruction makes no "
                    "originally relevant document non-relevant, so p-MRR is undefined"
                )
    elif task.kind == "classification":
        task.items = read_items(directory / "items.jsonl")
        n_train = sum(1 for it in task.items if it.split != "test")
        if task.k > n_train - (0 if any(it.split for it in task.items) else 1):
            raise TaskFormatError(
                f"{task_json}: k={task.k} exceeds the {n_train} neighbours available"
            )
    else:
        task.pairs = read_scored_pairs(directory / "pairs.jsonl")
    return task


def find_tasks(root: str | Path, suite: str = "all") -> list[Path]:
    """Task folders under ``root/<suite>/<task>/`` (every suite for ``"all"``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise TaskFormatError(f"{root}: no such tasks root")
    suites = SUITES if suite == "all" else (suite,)
    if suite != "all" and suite not in SUITES:
        raise ConfigError(f"suite must be one of {SUITES} or 'all', got {suite!r}")
    found: list[Path] = []
    for s in suites:
        d = root / s
        if d.is_dir():
            found += sorted(
                p
                for p in d.iterdir()
                if p.is_dir() and not p.name.startswith(".") and _looks_like_task(p)
            )
    return found


def _looks_like_task(path: Path) -> bool:
    return any(
        (path / f).is_file() for f in ("task.json", "corpus.jsonl", "items.jsonl", "pairs.jsonl")
    )


def hash_task(directory: str | Path) -> str:
    """``sha256:<hex>`` over every file of a task folder (relative path, size and content)."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        h.update(rel.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return f"sha256:{h.hexdigest()}"
