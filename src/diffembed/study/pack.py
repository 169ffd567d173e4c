"""A study's data in one file, and its results in a few (for a GPU machine reached by copy).

- :func:`write_pack` (``diffembed reproduce --write-pack FILE``): run the data stages here (the
  tokenizer, tasks and pairs) and tokenize the pretraining documents every LM of the run reads
  (:func:`diffembed.train.pretrain_data.write_tokenized`); write all of it, with the stage
  markers, to one ``.tar.gz``.
- :func:`unpack` (``--pack FILE``): start a study from it: no corpus, no tokenizer training, no
  tokenization; the data stages' digests are the pack's, so the keys of every later stage are
  those of a run that built the data itself.
- :func:`write_archive` (``--archive DIR``): the results folder (what is meant to be committed:
  no weights) as ``results.tar.gz`` and the exported model as ``model.tar.gz``.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffembed.errors import ConfigError, DiffembedError, FileFormatError
from diffembed.io import atomic_write, write_json
from diffembed.study.heldout import HELDOUT_PAIRS

if TYPE_CHECKING:
    from diffembed.study.design import Row
    from diffembed.study.presets import StudyPreset
    from diffembed.study.stages import Study, StudyData

logger = logging.getLogger(__name__)

TOKENS = "pretrain-tokens.npz"
MANIFEST = "pack.json"
DATA_STAGES = ("tokenizer", "tasks", "pairs")
# Results not archived: weights and rebuildable data (the run's .gitignore).
HEAVY = ("corpus", "tokenizer", "tasks", "lm", "ft", "pairs", TOKENS)
MAX_ARCHIVE_BYTES = 16 * 2**20


def write_pack(study: Study, rows: Sequence[Row], path: Path) -> dict[str, Any]:
    """Build the data of ``study`` (its data stages), tokenize the pretraining documents of the
    LMs ``rows`` need, and write them to ``path`` (one ``.tar.gz``). Returns the manifest."""
    from diffembed.model.tokenizer import load_tokenizer
    from diffembed.study.design import lms_needed
    from diffembed.study.lms import curve_config
    from diffembed.train.pretrain_data import write_tokenized

    study.begin()
    data = study.stage_data()
    configs = [
        study.lm_config(lm) for lm in lms_needed([r.base for r in rows]) if lm.objective != "random"
    ]
    if study.preset.adapt_curve is not None:  # the curve's run reads documents too
        configs.append(curve_config(study))
    tokens = study.out / TOKENS
    meta = write_tokenized(configs, load_tokenizer(data.tok), data.corpus, tokens)
    manifest = {
        "preset": study.preset.name,
        "corpus_digest": data.corpus_d,
        "tokens": meta,
        "rows": [r.name for r in rows],
    }
    with atomic_write(path, mode="wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        _add_json(tar, MANIFEST, manifest)
        tar.add(tokens, TOKENS)
        for name, folder in (("tokenizer", data.tok), ("tasks", data.tasks)):
            tar.add(folder, name)
        for pairs in (data.pairs, data.pairs.parent / HELDOUT_PAIRS):
            tar.add(pairs, f"pairs/{pairs.name}")
        for stage in DATA_STAGES:
            tar.add(study.marker(stage), f"stages/{study.marker(stage).name}")
    logger.info(
        "pack %s: %d of %d pretraining documents, %d tokens, %.1f MB",
        path,
        meta["stored"],
        meta["documents"],
        meta["tokens"],
        path.stat().st_size / 1e6,
    )
    return manifest


def _add_json(tar: tarfile.TarFile, name: str, data: Any) -> None:
    import io

    raw = json.dumps(data, indent=2).encode()
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))


def unpack(path: Path, out: Path, preset: StudyPreset) -> StudyData:
    """Extract the pack ``path`` into ``out`` and return the data it holds, with the digests its
    stage markers recorded. A pack written for another preset is refused."""
    from diffembed.study.stages import StudyData

    try:
        with tarfile.open(path, mode="r:*") as tar:
            manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
            if manifest.get("preset") != preset.name:
                raise ConfigError(
                    f"{path}: written for preset {manifest.get('preset')!r}, not "
                    f"{preset.name!r}; write a pack with --preset {preset.name} --write-pack"
                )
            tar.extractall(out, filter="data")  # no links, devices or paths outside out
    except (tarfile.TarError, KeyError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{path}: not a study pack ({e})") from None
    digests = {
        s: json.loads((out / "stages" / f"{s}.json").read_text())["digest"] for s in DATA_STAGES
    }
    pairs = out / "pairs" / "pairs.jsonl"
    return StudyData(
        out / TOKENS,
        manifest["corpus_digest"],
        out / "tokenizer",
        digests["tokenizer"],
        out / "tasks",
        digests["tasks"],
        pairs,
        digests["pairs"],
    )


def write_archive(study: Study, dest: Path, model: Path | None = None) -> list[Path]:
    """Write ``dest/results.tar.gz`` (the results folder without weights or rebuildable data)
    and, when given, ``dest/model.tar.gz`` (the model directory ``model``). Each must stay under
    16 MiB, so that it can be carried back from a machine reached by copy."""
    written = [_tar(dest / "results.tar.gz", study.out, study.out.name, skip=HEAVY)]
    if model is not None:
        written.append(_tar(dest / "model.tar.gz", model, model.name, skip=()))
    write_json(dest / "archive.json", {"files": [p.name for p in written]})
    return written


def _tar(path: Path, folder: Path, arcname: str, skip: Sequence[str]) -> Path:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if len(parts) > 1 and parts[1] in skip else info

    with atomic_write(path, mode="wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(folder, arcname, filter=keep)
    size = path.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise DiffembedError(f"{path}: {size / 2**20:.1f} MiB, over the 16 MiB an archive may hold")
    return path
