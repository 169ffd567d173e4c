"""Where MTEB tasks get their data without a network: the hub cache (``HF_HUB_OFFLINE``) or a
local copy per task (``--mteb-data DIR``), with one clear error when the data is not there.

**Offline.** ``force_offline`` sets ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` and the constants
``huggingface_hub`` and ``datasets`` read them into at import, so every ``load_dataset`` is
answered from disk or fails at once (never waits on a connection).

**Local copies.** For a task whose MTEB dataset is ``org/name``, the first of
``DIR/<TaskName>``, ``DIR/org/name``, ``DIR/name`` that exists is its copy, in either layout
``datasets`` reads:

- the hub repository's files (a snapshot: ``README.md`` whose YAML ``configs`` name each
  config's parquet files per split, e.g. ``corpus/test-00000-of-00001.parquet``);
- ``save_to_disk`` folders: ``<copy>/<config>/`` is a ``DatasetDict`` saved with
  ``save_to_disk`` whose keys are the split names (``<copy>/corpus/test/data-*.arrow``...).

MTEB's own loader then reads the copy: the task's ``metadata.dataset["path"]`` is pointed at it
(for ``save_to_disk`` folders, at a generated folder whose ``README.md`` lists their arrow files
as each config's data files). ``datasets`` ignores the revision for a local folder; MTEB still
records the revision its task names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffembed.errors import FileFormatError, InputNotFoundError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

logger = logging.getLogger(__name__)

OFFLINE_HELP = (
    'fill the hub cache where a network is available (python -c "import mteb; '
    "mteb.get_task('{task}').load_data()\") and copy ~/.cache/huggingface here, or give "
    "--mteb-data DIR with DIR/{task}/ holding the dataset repository's files (or save_to_disk "
    "folders, one per config)"
)


def force_offline() -> None:
    """Answer every hub request from disk: set the offline variables and constants."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets.config
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True


def local_copy(root: Path, task: AbsTask) -> Path | None:
    """The local copy of ``task``'s dataset under ``root`` (see the module doc), or None."""
    repo = str(task.metadata.dataset["path"])
    for candidate in (root / task.metadata.name, root / repo, root / repo.split("/")[-1]):
        if candidate.is_dir():
            return candidate
    return None


def _is_save_to_disk(folder: Path) -> bool:
    return any((p / "dataset_dict.json").is_file() for p in folder.iterdir() if p.is_dir())


def _write_arrow_readme(copy: Path, out: Path) -> None:
    """A ``README.md`` in ``out`` whose ``configs`` list the arrow files of ``copy``'s
    ``save_to_disk`` folders, so ``load_dataset(out, config, split=...)`` reads them."""
    import yaml

    configs: list[dict[str, Any]] = []
    for folder in sorted(p for p in copy.iterdir() if p.is_dir()):
        if not (folder / "dataset_dict.json").is_file():
            raise FileFormatError(
                f"{folder}: not a save_to_disk DatasetDict (no dataset_dict.json); save each "
                "config as a DatasetDict keyed by split name"
            )
        files = []
        for split in sorted(p for p in folder.iterdir() if p.is_dir()):
            arrows = sorted(str(f.resolve()) for f in split.glob("*.arrow"))
            if not arrows:
                raise FileFormatError(f"{split}: no .arrow files (not a save_to_disk split)")
            files.append({"split": split.name, "path": arrows})
        configs.append({"config_name": folder.name, "data_files": files})
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n")


@contextmanager
def local_paths(root: Path | None, tasks: list[AbsTask], scratch: Path) -> Iterator[dict[str, str]]:
    """Point each task's dataset path at its local copy under ``root`` while in the block
    (``scratch``: where ``save_to_disk`` copies get their generated README); yields
    ``{task name: local copy}`` and restores the tasks' dataset paths after."""
    saved: list[tuple[AbsTask, dict[str, Any]]] = []
    copies: dict[str, str] = {}
    try:
        for task in tasks if root is not None else []:
            copy = local_copy(root, task)
            if copy is None:
                continue  # reported by load_task_data with the paths tried
            target = copy
            if _is_save_to_disk(copy):
                target = scratch / task.metadata.name
                _write_arrow_readme(copy, target)
            saved.append((task, dict(task.metadata.dataset)))
            task.metadata = task.metadata.model_copy(deep=True)
            task.metadata.dataset["path"] = str(target.resolve())
            copies[task.metadata.name] = str(copy.resolve())
            logger.info("%s: reading the local copy %s", task.metadata.name, copy)
        yield copies
    finally:
        for task, dataset in saved:
            task.metadata.dataset.clear()
            task.metadata.dataset.update(dataset)


def _uses_standard_loader(task: AbsTask) -> bool:
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return (
        isinstance(task, AbsTaskRetrieval)
        and type(task).load_data is AbsTaskRetrieval.load_data
        and not task.metadata.is_multilingual
    )


def check_local_splits(task: AbsTask, path: str) -> None:
    """A local copy read by MTEB's standard retrieval loader must hold the corpus, queries and
    qrels configs with every evaluated split (MTEB would silently reuse a config's only split
    for every missing one)."""
    from datasets import get_dataset_config_names, get_dataset_split_names

    configs = get_dataset_config_names(path)
    qrels = "default" if "default" in configs else "qrels"
    splits = list(task.eval_splits)
    for config in ("corpus", "query" if "query" in configs else "queries", qrels):
        if config not in configs:
            raise FileFormatError(
                f"{task.metadata.name}: the local copy {path} has no config {config!r} "
                f"(configs: {configs}); it needs corpus, queries and default (qrels)"
            )
        have = get_dataset_split_names(path, config_name=config)
        for split in splits:
            if split not in have and not (len(have) == 1 and len(splits) == 1):
                raise FileFormatError(
                    f"{task.metadata.name}: the local copy {path} has no split {split!r} in "
                    f"config {config!r} (splits: {have}); the task evaluates {splits}"
                )


def _check_loaded(task: AbsTask, where: str) -> None:
    """Every evaluated subset and split has queries, documents and judgements."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    if not isinstance(task, AbsTaskRetrieval):
        return
    task.convert_v1_dataset_format_to_v2(num_proc=None)
    for subset in task.hf_subsets:
        for split in task.eval_splits:
            data = task.dataset.get(subset, {}).get(split)
            empty = [
                k for k in ("corpus", "queries", "relevant_docs") if data is None or not data[k]
            ]
            if empty:
                raise FileFormatError(
                    f"{task.metadata.name}: {where} has no {', '.join(empty)} for split "
                    f"{split!r}" + (f" of subset {subset!r}" if subset != "default" else "")
                )


def load_task_data(task: AbsTask, root: Path | None) -> None:
    """Load ``task``'s data (local copy or hub cache); one clear error naming the task, the
    path tried and how to provide the data when it cannot."""
    name = task.metadata.name
    path = str(task.metadata.dataset["path"])
    local = root is not None and Path(path).is_dir()
    if root is not None and not local:
        repo = path
        tried = ", ".join(str(p) for p in (root / name, root / repo, root / repo.split("/")[-1]))
        raise InputNotFoundError(
            f"{name}: no local copy of {repo} under --mteb-data {root} (tried {tried}); "
            + OFFLINE_HELP.format(task=name)
        )
    where = f"the local copy {path}" if local else f"the hub cache entry of {path}"
    try:
        if local and _uses_standard_loader(task):
            check_local_splits(task, path)
        task.load_data()
    except ValueError as e:
        if str(e).startswith(name):
            raise
        raise FileFormatError(f"{name}: could not read {where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "not there"
        help_ = "" if local else "; " + OFFLINE_HELP.format(task=name)
        raise InputNotFoundError(
            f"{name}: could not read {where} ({type(e).__name__}: {e}){help_}"
        ) from None
    _check_loaded(task, where)
