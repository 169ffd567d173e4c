"""A model directory on disk: the sentence-transformers files plus ``diffembed.json`` (the
settings sentence-transformers has no field for), read back into ``Embedder`` settings, and the
content hash that indexes and results record to know which model made them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import transformers

from diffembed.io import write_json
from diffembed.model.backbone import CheckpointError, read_json

FORMAT_VERSION = 1
HASH_FULL_LIMIT = 64 << 20  # files up to 64 MiB are hashed whole
HASH_SAMPLES = 16
# sentence-transformers pooling flags, per our pooling name.
ST_POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "last": "pooling_mode_lasttoken",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
}


def hash_model_dir(directory: str | Path) -> dict[str, str]:
    """A cheap content hash of a model directory: ``{"hash": "sha256:...", "method": ...}``.

    Every file counts (relative path, size and content) except hidden ones and those under
    ``checkpoint*`` folders (training state). Files up to 64 MiB are hashed whole; a larger
    file (weights) contributes its first and last MiB and 16 evenly spaced 1 MiB samples.
    """
    directory = Path(directory)
    h = hashlib.sha256()
    sampled = False
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or any(
            p.startswith("checkpoint") for p in parts[:-1]
        ):
            continue
        size = path.stat().st_size
        h.update(rel.encode() + b"\0" + str(size).encode() + b"\0")
        with path.open("rb") as f:
            if size <= HASH_FULL_LIMIT:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                continue
            sampled = True
            chunk = 1 << 20
            offsets = [0, size - chunk] + [
                (size - chunk) * (i + 1) // (HASH_SAMPLES + 1) for i in range(HASH_SAMPLES)
            ]
            for offset in offsets:
                f.seek(offset)
                h.update(f.read(chunk))
    method = "sha256 of all files" + (" (files > 64 MiB sampled)" if sampled else "")
    return {"hash": f"sha256:{h.hexdigest()}", "hash_method": method}


def read_settings(directory: Path) -> dict[str, Any]:
    """Embedder settings from diffembed.json, else from the sentence-transformers files."""
    if (directory / "diffembed.json").exists():
        settings = read_json(directory / "diffembed.json")
        version = settings.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{directory / 'diffembed.json'}: unsupported format_version {version!r}"
            )
        return settings
    settings: dict[str, Any] = {}
    if (directory / "modules.json").exists():
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
        types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
        settings["normalize"] = "Normalize" in types
        if "Pooling" in types:
            pcfg = read_json(directory / types["Pooling"]["path"] / "config.json")
            chosen = [name for name, flag in ST_POOLING_FLAGS.items() if pcfg.get(flag)]
            if len(chosen) != 1:
                raise CheckpointError(
                    f"{directory / types['Pooling']['path'] / 'config.json'}: pooling is not one of "
                    f"{list(ST_POOLING_FLAGS)}"
                )
            settings["pooling"] = chosen[0]
            settings["include_instruction"] = bool(pcfg.get("include_prompt", True))
    if (directory / "sentence_bert_config.json").exists():
        max_len = read_json(directory / "sentence_bert_config.json").get("max_seq_length")
        if max_len:
            settings["max_length"] = int(max_len)
    if (directory / "config_sentence_transformers.json").exists():
        prompts = read_json(directory / "config_sentence_transformers.json").get("prompts") or {}
        # sentence-transformers prompts are literal prefixes: keep them literal.
        settings["prompts"] = {k: v for k, v in prompts.items() if v}
        settings["prompt_template"] = "{instruction}{text}"
    return settings


def write_st_files(
    directory: Path,
    *,
    max_length: int,
    dim: int,
    pooling: str,
    normalize: bool,
    include_prompt: bool,
    prompts: dict[str, str],
) -> None:
    """Write the sentence-transformers files of a model directory (modules.json,
    sentence_bert_config.json, 1_Pooling/config.json, config_sentence_transformers.json with the
    literal ``prompts``, and 2_Normalize/ when ``normalize``) into ``directory``, which already
    holds the Hugging Face model and tokenizer files."""
    write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": max_length, "do_lower_case": False},
    )
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"})
        (directory / "2_Normalize").mkdir()
    write_json(directory / "modules.json", modules)
    pooling_cfg: dict[str, Any] = {
        "word_embedding_dimension": dim,
        "include_prompt": include_prompt,
    }
    for name, flag in ST_POOLING_FLAGS.items():
        pooling_cfg[flag] = name == pooling
    for flag in (
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
    ):
        pooling_cfg[flag] = False
    write_json(directory / "1_Pooling" / "config.json", pooling_cfg)
    write_json(
        directory / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": prompts,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
            "__version__": {"transformers": transformers.__version__, "pytorch": torch.__version__},
        },
    )
