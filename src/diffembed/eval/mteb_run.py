"""``diffembed eval --mteb``: run MTEB 2.x tasks on a model directory, offline, and write our
result JSON (the provenance of every result) beside MTEB's own result files.

``run_mteb`` resolves the task names (``"paper"`` expands to :func:`diffembed.eval.paper.
paper_tasks`; an unknown name is an error with close matches), refuses task types a text
encoder cannot score, loads every task's data before any model work
(:mod:`diffembed.eval.mteb_data`: hub cache or ``--mteb-data`` local copies, never the network
unless ``online``), then evaluates each with :class:`diffembed.eval.mteb.DiffEmbedEncoder`,
queries carrying the paper's instruction (:data:`diffembed.eval.paper.INSTRUCTIONS`, overridable)
and documents none.

Writes ``OUT`` (``{format_version, model, settings, seed, provenance, tasks: [record...]}``),
``OUT.tasks/mteb__<task>.json`` per task, ``OUT.md`` (the paper-group table) and MTEB's own
files under ``OUT.mteb/results/<model>/<revision>/<task>.json``.
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffembed.errors import ConfigError, InputNotFoundError
from diffembed.eval.paper import group_of, paper_table, paper_tasks, query_prompts
from diffembed.io import atomic_write, write_json

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

logger = logging.getLogger(__name__)

RESULT_FORMAT_VERSION = 1
# MTEB task types a text encoder (DiffEmbedEncoder) is scored on.
SCORABLE_TYPES = (
    "Retrieval",
    "Reranking",
    "InstructionRetrieval",
    "InstructionReranking",
    "STS",
    "PairClassification",
    "Classification",
    "Clustering",
    "Summarization",
    "BitextMining",
)


def resolve_tasks(names: Sequence[str]) -> list[AbsTask]:
    """MTEB task objects for ``names`` (``"paper"``: the paper's set), in order, deduplicated.

    Raises:
        ValueError: an unknown name (with close matches) or a task we cannot score.
    """
    import mteb

    wanted: list[str] = []
    for name in names:
        wanted += paper_tasks() if name == "paper" else [name]
    wanted = list(dict.fromkeys(wanted))
    known = {t.metadata.name for t in mteb.get_tasks(exclude_superseded=False)}
    tasks = []
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
            by_case = [k for k in known if k.lower() == name.lower()]
            hint = by_case or close
            raise ConfigError(
                f"--mteb: unknown MTEB task {name!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else "")
                + " (mteb.get_tasks() lists them all; 'paper' selects the paper's set)"
            )
        task = mteb.get_task(name)
        check_scorable(task)
        tasks.append(task)
    return tasks


def check_scorable(task: AbsTask) -> None:
    """Refuse a task a text embedding model cannot be scored on (non-text or other types)."""
    meta = task.metadata
    modalities = list(meta.modalities or ["text"])
    if meta.type not in SCORABLE_TYPES or modalities != ["text"]:
        raise ConfigError(
            f"--mteb: {meta.name} is a {meta.type} task on {'+'.join(modalities)}; diffembed "
            f"scores text-only tasks of types {', '.join(SCORABLE_TYPES)}"
        )


def _main_scores(result: Any, task: AbsTask) -> tuple[float, dict[str, float]]:
    """The task's main score (the mean over its splits and subsets, as the paper averages
    passkey/needle over lengths) and each ``split[/subset]`` score."""
    per: dict[str, float] = {}
    for split, entries in result.scores.items():
        for entry in entries:
            key = (
                split
                if entry.get("hf_subset", "default") == "default"
                else (f"{split}/{entry['hf_subset']}")
            )
            per[key] = float(entry["main_score"])
    mean = sum(per.values()) / len(per) if per else math.nan
    return mean, per


def _extra_metrics(result: Any) -> dict[str, float]:
    """Selected metrics averaged over splits (nDCG@1/10, recall@10/100, MRR@10, FollowIR sides)."""
    wanted = ("ndcg_at_1", "ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "p-MRR")
    sums: dict[str, list[float]] = {}
    for entries in result.scores.values():
        for entry in entries:
            for key in wanted:
                if isinstance(entry.get(key), (int, float)):
                    sums.setdefault(key, []).append(float(entry[key]))
            for side in ("og", "changed"):
                sub = entry.get(side)
                if isinstance(sub, Mapping) and isinstance(sub.get("ndcg_at_10"), (int, float)):
                    sums.setdefault(f"{side}_ndcg_at_10", []).append(float(sub["ndcg_at_10"]))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _load_encoder(model: str | Path, precision: str, device: str, **kwargs: Any) -> Any:
    """The model directory as an MTEB encoder; a clear error for a folder that is not one."""
    from diffembed.eval.mteb import DiffEmbedEncoder
    from diffembed.model.model_dir import CheckpointError, ModelDir

    path = ModelDir.open(model, "--model", "embedding model directory").path
    try:
        return DiffEmbedEncoder(path, device=device, precision=precision, **kwargs)
    except (CheckpointError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"--model {path}: cannot be loaded as an embedding model: {e}"
        ) from None


def run_mteb(
    model: str | Path,
    names: Sequence[str],
    out: Path,
    *,
    data_dir: Path | None = None,
    instructions: Mapping[str, str | None] | None = None,
    online: bool = False,
    max_length: int | None = None,
    batch_tokens: int | None = 16384,
    precision: str = "auto",
    device: str | None = None,
    seed: int = 0,
    show_progress: bool = False,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate a model directory on MTEB tasks; writes the files in the module doc and
    returns the summary written to ``out``. ``precision``: the compute precision (auto, bf16
    or fp32), recorded under the result's ``settings.dtype``, the key results have always
    used."""
    from diffembed.eval.evaluate import _default_device, seed_everything
    from diffembed.eval.mteb_data import force_offline
    from diffembed.provenance import provenance

    start = time.time()
    out = Path(out)
    if out.suffix != ".json":
        raise ConfigError(f"{out}: the output must be a .json file")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputNotFoundError(f"--mteb-data {data_dir}: no such folder")
    if not online or data_dir is not None:
        force_offline()
    seed_everything(seed)
    tasks = resolve_tasks(names)
    unknown = sorted(set(instructions or {}) - {t.metadata.name for t in tasks})
    if unknown:
        logger.warning("instructions for tasks not evaluated (ignored): %s", ", ".join(unknown))
    command = list(sys.argv if command is None else command)
    overrides: dict[str, Any] = {"batch_tokens": batch_tokens}
    if max_length is not None:
        overrides["max_length"] = max_length
    settings = {
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "dtype": precision,
        "device": _default_device() if device is None else device,
        "seed": seed,
        "mteb_data": str(Path(data_dir).resolve()) if data_dir is not None else None,
        "online": online,
    }
    model_info, records = _evaluate_tasks(
        model, tasks, out, data_dir, instructions, overrides, settings, command, show_progress
    )
    summary = {"format_version": RESULT_FORMAT_VERSION, "model": model_info}
    summary.update(settings=settings, seed=seed, provenance=provenance(start, command))
    summary["tasks"] = records
    write_json(out, summary)
    table = paper_table(records, title=f"{model_info['name']} ({model_info['hash'][:19]})")
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(table)
    print(table, end="")
    logger.info("wrote %s, %s and MTEB's files under %s.mteb", out, out.with_suffix(".md"), out)
    return summary


def _evaluate_tasks(
    model: str | Path,
    tasks: list[AbsTask],
    out: Path,
    data_dir: Path | None,
    instructions: Mapping[str, str | None] | None,
    overrides: dict[str, Any],
    settings: dict[str, Any],
    command: list[str],
    show_progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load every task's data (before the model: a missing copy fails fast), then the model,
    then evaluate task by task; returns the model's description and the task records."""
    import mteb

    from diffembed.eval.models import EmbedderRetriever
    from diffembed.eval.mteb_data import load_task_data, local_paths

    sources = {t.metadata.name: dict(t.metadata.dataset) for t in tasks}
    settings["mteb_version"] = mteb.__version__
    records: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="diffembed-mteb-") as scratch,
        local_paths(data_dir, tasks, Path(scratch)) as copies,
    ):
        for task in tasks:
            load_task_data(task, data_dir)
        prompts = query_prompts([t.metadata.name for t in tasks], instructions)
        encoder = _load_encoder(
            model, settings["dtype"], settings["device"], model_prompts=prompts, **overrides
        )
        model_info = EmbedderRetriever(encoder.embedder, model).describe()
        header = {"model": model_info, "settings": settings, "seed": settings["seed"]}
        cache = mteb.ResultCache(out.parent / f"{out.name}.mteb")
        for task in tasks:
            name = task.metadata.name
            record = _run_task(encoder, task, cache, header, command, show_progress)
            record["dataset"] = {**sources[name], "local_copy": copies.get(name)}
            write_json(out.parent / f"{out.name}.tasks" / f"mteb__{name}.json", record)
            records.append(record)
    return model_info, records


def _run_task(
    encoder: Any,
    task: AbsTask,
    cache: Any,
    header: dict[str, Any],
    command: list[str],
    show_progress: bool,
) -> dict[str, Any]:
    """Evaluate one (loaded) task; its record with provenance."""
    import mteb

    from diffembed.provenance import provenance

    t0 = time.time()
    name = task.metadata.name
    n_calls = len(encoder.calls)
    result = mteb.evaluate(
        encoder,
        task,
        cache=cache,
        overwrite_strategy="always",
        co2_tracker=False,
        show_progress_bar=show_progress,
    ).task_results[0]
    main, per_split = _main_scores(result, task)
    instructions = {instr for _, instr, _ in encoder.calls[n_calls:]}
    record = {
        "task": name,
        "suite": "mteb",
        "group": group_of(name),
        "kind": f"mteb:{task.metadata.type}",
        "metric": task.metadata.main_score,
        "main_score": main,
        "metrics": {**_extra_metrics(result), "per_split": per_split},
        "query_instruction": next((i for i in instructions if i), None),
        "mteb_result": str(
            cache.get_task_result_path(
                task_name=name,
                model_name=encoder.mteb_model_meta.name,
                model_revision=encoder.mteb_model_meta.revision,
            )
        ),
        "format_version": RESULT_FORMAT_VERSION,
        **header,
        "provenance": provenance(t0, command),
    }
    logger.info("%s: %s = %.4f (%.1f s)", name, record["metric"], main, time.time() - t0)
    return record
