"""A model directory on disk, read in one place: ``ModelDir`` (its JSON files, what kind of
directory it is, the checks a verb needs before loading it), the sentence-transformers files
plus ``diffembed.json`` (the settings sentence-transformers has no field for) read back into
``Embedder`` settings, and the content hash that indexes and results record to know which model
made them. Below ``backbone``, which translates the config this reads into a transformers one."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import transformers

from diffembed.errors import ConfigError, DiffembedError
from diffembed.io import read_json, write_json
from diffembed.model.pooling import POOLINGS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ATTENTIONS: tuple[str, ...] = ("bidirectional", "causal")
DEFAULT_MAX_LENGTH = 512  # when neither the settings nor the caller give one (capped by the model)
HASH_FULL_LIMIT = 64 << 20  # files up to 64 MiB are hashed whole
HASH_SAMPLES = 16
# sentence-transformers pooling flags, per our pooling name.
ST_POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "last": "pooling_mode_lasttoken",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
}

# The module a mask-readout directory names instead (diffembed.model.st_refusal).
ST_MASK_REFUSAL = "diffembed.model.st_refusal.MaskReadoutRefusal"

# What determines a model's vectors: weights, model config, tokenizer files, and the pooling,
# prompt and length settings (ours and sentence-transformers'), in the root or a module folder.
HASHED_NAMES = frozenset(
    {
        "config.json",
        "adapter_config.json",
        "diffembed.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
    }
)
HASHED_SUFFIXES = (".safetensors", ".bin", ".index.json", ".model", ".tiktoken")
# Version stamps in those JSON files that change with the library, not with the vectors.
HASH_IGNORED_KEYS = frozenset({"transformers_version", "__version__", "_name_or_path"})


class CheckpointError(DiffembedError):
    """A model directory cannot be loaded; the message names the file and the problem."""


class ModelDirNotFoundError(CheckpointError, FileNotFoundError):
    """A model directory that does not exist (or is a file)."""


# ----------------------------------------------------------------------------- the reader
class ModelDir:
    """A model directory, its JSON files read when first asked for (every error a
    ``CheckpointError`` naming the file): ``config`` (config.json), ``settings``
    (diffembed.json, None without one), and what kind of directory it is.

    ``ModelDir.open`` refuses a path that is not a directory with a config.json; the checks
    ``require_embedding_model`` and ``is_ours`` say whether ``Embedder.load`` and
    ``Embedder.save`` may take it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: str | Path, flag: str = "", what: str = "model directory") -> ModelDir:
        """The model directory at ``path``, refused unless it is a directory with a
        config.json; ``flag`` (e.g. ``"--model"``) starts the message when given, ``what``
        names what was expected."""
        path = Path(path)
        named = f"{flag} {path}" if flag else str(path)
        if not path.is_dir():
            raise ModelDirNotFoundError(
                f"{named}: no such {what} (a model is loaded from a local directory, and this "
                "is not a directory)"
            )
        if not (path / "config.json").is_file():
            article = "an" if what[:1] in "aeiou" else "a"
            raise CheckpointError(
                f"{named}: not {article} {what} (no config.json); give a directory written by "
                "diffembed (pretrain, finetune, Embedder.save) or a checkpoint folder"
            )
        return cls(path)

    def json(self, name: str) -> dict[str, Any]:
        """The JSON object in ``name`` (a path relative to the directory), read once."""
        if name not in self._read:
            self._read[name] = read_json(self.path / name, CheckpointError)
        return self._read[name]

    def has(self, name: str) -> bool:
        """Whether the directory holds the file ``name``."""
        return (self.path / name).is_file()

    @property
    def config(self) -> dict[str, Any]:
        """config.json."""
        return self.json("config.json")

    @property
    def settings(self) -> dict[str, Any] | None:
        """diffembed.json as written (None when the directory has none); ``read_settings``
        gives the checked Embedder settings."""
        return self.json("diffembed.json") if self.is_ours else None

    @property
    def is_ours(self) -> bool:
        """Whether ``Embedder.save`` wrote it (it holds diffembed.json)."""
        return self.has("diffembed.json")

    @property
    def is_embedding_model(self) -> bool:
        """Whether it is an embedding model in the sentence-transformers layout (modules.json),
        ours or another library's."""
        return self.has("modules.json")

    def require_embedding_model(self, flag: str = "") -> None:
        """Refuse a directory that is not an embedding model (no modules.json), e.g. a bare
        LM; ``flag`` starts the message when given."""
        if not self.is_embedding_model:
            named = f"{flag} {self.path}" if flag else str(self.path)
            raise CheckpointError(
                f"{named}: not an embedding model directory (no modules.json); give one "
                "written by `diffembed finetune` or Embedder.save"
            )

    @property
    def hidden_size(self) -> int:
        """The width of the final hidden states (LLaDA: ``d_model``)."""
        size = self.config.get("hidden_size") or self.config.get("d_model")
        if not isinstance(size, int) or size < 1:
            raise CheckpointError(f"{self.path / 'config.json'}: no hidden_size (or d_model)")
        return size

    @property
    def architectures(self) -> list[str]:
        """config.json's ``architectures`` (empty when it has none)."""
        return [str(a) for a in self.config.get("architectures") or []]

    @property
    def shift(self) -> bool:
        """Whether our pretraining recorded the AR shift (position i predicts token i+1)."""
        return bool(self.config.get("diffembed_shift", False))


def is_model_dir(directory: str | Path) -> bool:
    """Whether ``directory`` is a model directory of ours (``Embedder.save`` wrote it: it holds
    ``diffembed.json``), which saving again may replace."""
    return ModelDir(directory).is_ours


def hash_model_dir(directory: str | Path, *, all_files: bool = False) -> dict[str, str]:
    """A cheap content hash of what determines a model directory's vectors:
    ``{"hash": "sha256:...", "hash_method": ...}``.

    Counted (relative path, size and content): weights (``*.safetensors``, ``*.bin`` and their
    shard indexes), ``config.json`` files, tokenizer files, and the pooling/prompt/length
    settings (``diffembed.json``, ``modules.json``, ``sentence_bert_config.json``,
    ``config_sentence_transformers.json``). Not counted: the model card, ``training/`` records,
    ``checkpoint*`` folders, hidden files, anything else. JSON files count by their parsed
    content without library version stamps. Files up to 64 MiB are hashed whole; a larger file
    (weights) contributes its first and last MiB and 16 evenly spaced 1 MiB samples.
    ``all_files=True`` gives the hash older indexes recorded (every file, raw bytes).
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
        if not all_files:
            if "training" in parts[:-1]:
                continue
            name = parts[-1]
            if name not in HASHED_NAMES and not name.endswith(HASHED_SUFFIXES):
                continue
            if name.endswith(".json"):
                data = _canonical_json(path)
                if data is not None:
                    h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
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
    method = (
        "sha256 of all files"
        if all_files
        else "sha256 of weights, config, tokenizer and pooling/prompt files"
    )
    method += " (files > 64 MiB sampled)" if sampled else ""
    return {"hash": f"sha256:{h.hexdigest()}", "hash_method": method}


def _canonical_json(path: Path) -> bytes | None:
    """``path``'s JSON, key-sorted, without ``HASH_IGNORED_KEYS``; None when not JSON."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in HASH_IGNORED_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    if path.stat().st_size > HASH_FULL_LIMIT:
        return None
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return json.dumps(strip(data), sort_keys=True, separators=(",", ":")).encode()


def whitespace_free_template(template: str) -> str:
    """``template`` with the whitespace that ends its prefix (before ``{text}``) replaced by one
    newline; unchanged if its prefix ends otherwise."""
    prefix = template[: -len("{text}")] if template.endswith("{text}") else template
    return prefix.rstrip() + "\n{text}" if prefix != prefix.rstrip() else template


def _check_choices(settings: dict[str, Any], path: Path) -> None:
    """Refuse a saved setting outside its choices, naming the file (not an Embedder argument)."""
    choices = {"pooling": POOLINGS, "padding_side": ("left", "right"), "attention": ATTENTIONS}
    for key, allowed in choices.items():
        value = settings.get(key)
        if key in settings and value not in allowed and not (key == "attention" and value is None):
            raise CheckpointError(
                f"{path}: {key} {value!r} is not one of {', '.join(allowed)}; correct the file"
            )
    length = settings.get("max_length")
    if length is not None and (not isinstance(length, int) or length < 1):
        raise CheckpointError(f"{path}: max_length {length!r} is not a positive integer")


def read_settings(directory: str | Path) -> dict[str, Any]:
    """Embedder settings from diffembed.json, else from the sentence-transformers files.

    A template saved by older diffembed versions with instruction exclusion and a prefix
    ending in whitespace (``"{instruction}: {text}"``) is read with a newline instead (logged):
    sentence-transformers cannot exclude such a prefix exactly.
    ``Embedder.load(dir).rewrite_settings(dir)`` updates the directory."""
    model = ModelDir(directory)
    directory = model.path
    if model.is_ours:
        settings = dict(model.json("diffembed.json"))
        version = settings.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{directory / 'diffembed.json'}: unsupported format_version {version!r}"
            )
        _check_choices(settings, directory / "diffembed.json")
        # Read by trained_dims; not an Embedder setting.
        _check_trained_dims(settings.pop(TRAINED_DIMS, None), directory / "diffembed.json")
        template = settings.get("prompt_template")
        if isinstance(template, str) and settings.get("include_instruction") is False:
            fixed = whitespace_free_template(template)
            if fixed != template:
                logger.warning(
                    "%s: prompt_template %r ends with whitespace, which sentence-transformers "
                    "cannot exclude from pooling exactly; using %r. Embedder.load(dir)"
                    ".rewrite_settings(dir) rewrites the directory's settings.",
                    directory / "diffembed.json",
                    template,
                    fixed,
                )
                settings["prompt_template"] = fixed
        return settings
    settings: dict[str, Any] = {}
    if model.is_embedding_model:
        modules = _modules(directory / "modules.json")
        types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
        settings["normalize"] = "Normalize" in types
        if "Pooling" in types:
            pcfg = model.json(f"{types['Pooling']['path']}/config.json")
            chosen = [name for name, flag in ST_POOLING_FLAGS.items() if pcfg.get(flag)]
            if len(chosen) != 1:
                raise CheckpointError(
                    f"{directory / types['Pooling']['path'] / 'config.json'}: pooling is not one of "
                    f"{list(ST_POOLING_FLAGS)}"
                )
            settings["pooling"] = chosen[0]
            settings["include_instruction"] = bool(pcfg.get("include_prompt", True))
    if model.has("sentence_bert_config.json"):
        max_len = model.json("sentence_bert_config.json").get("max_seq_length")
        if max_len:
            settings["max_length"] = int(max_len)
    if model.has("config_sentence_transformers.json"):
        prompts = model.json("config_sentence_transformers.json").get("prompts") or {}
        # sentence-transformers prompts are literal prefixes: keep them literal.
        settings["prompts"] = {k: v for k, v in prompts.items() if v}
        settings["prompt_template"] = "{instruction}{text}"
    return settings


def _modules(path: Path) -> list[dict[str, Any]]:
    """modules.json: a JSON list of module objects (sentence-transformers)."""
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{path}: expected a JSON list of module objects")
    return modules


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
    holds the Hugging Face model and tokenizer files. A ``"mask"`` readout's modules.json names
    ``ST_MASK_REFUSAL`` alone: sentence-transformers then refuses the directory, saying why."""
    write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": max_length, "do_lower_case": False},
    )
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
    ]
    if pooling == "mask":
        # sentence-transformers cannot append the readout's masks: name a module that refuses.
        modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MASK_REFUSAL}]
        normalize = False
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    elif (directory / "2_Normalize").is_dir() and not any((directory / "2_Normalize").iterdir()):
        (directory / "2_Normalize").rmdir()  # rewriting a directory whose model normalised
    write_json(directory / "modules.json", modules)
    pooling_cfg: dict[str, Any] = {
        "word_embedding_dimension": dim,
        "include_prompt": include_prompt,
    }
    for name, flag in ST_POOLING_FLAGS.items():
        pooling_cfg[flag] = name == pooling  # all False for "mask" (its module refuses)
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


def write_settings(
    directory: Path,
    settings: dict[str, Any],
    dim: int,
    prompts: dict[str, str],
    tokenizer: Any | None,
) -> None:
    """Write an embedder's ``settings`` as diffembed.json and the sentence-transformers files
    (``prompts``: the literal prefixes; ``dim``: the vectors' width) into ``directory``; with
    instruction exclusion (``include_instruction`` false) the prompts are first checked against
    the directory's ``tokenizer`` (``check_st_prompts``), so that sentence-transformers excludes
    exactly their tokens."""
    if not settings["include_instruction"]:
        if tokenizer is None:
            raise ValueError("excluded prompts are checked against the saved tokenizer: give it")
        check_st_prompts(tokenizer, prompts)
    previous = directory / "diffembed.json"
    if TRAINED_DIMS not in settings and previous.is_file():  # rewriting: keep the trained dims
        kept = read_json(previous, CheckpointError).get(TRAINED_DIMS)
        settings = {**settings, TRAINED_DIMS: kept} if kept is not None else settings
    write_json(directory / "diffembed.json", settings)
    write_st_files(
        directory,
        max_length=settings["max_length"],
        dim=dim,
        pooling=settings["pooling"],
        normalize=settings["normalize"],
        include_prompt=settings["include_instruction"],
        prompts=prompts,
    )


# ----------------------------------------------------------------------------- prompts
# Queries a saved prompt is checked against: one-token words (the reported zero vectors), digits,
# punctuation first, a sentence.
PROMPT_PROBES: tuple[str, ...] = (
    "python",
    "x",
    "sockets",
    "tokens",
    "42",
    "(a+b)^2",
    "How do I open a socket in Python?",
)


def st_prompt_length(tokenizer: Any, prompt: str) -> int:
    """How many leading tokens sentence-transformers excludes from pooling for ``prompt`` when its
    Pooling has ``include_prompt: false``: the prompt tokenized alone (special tokens included),
    less a trailing special token (``Transformer._get_prompt_length``, sentence-transformers 5-6).
    """
    ids = tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"]
    if ids and ids[-1] in set(tokenizer.all_special_ids):
        return len(ids) - 1
    return len(ids)


def check_st_prompts(
    tokenizer: Any, prompts: Mapping[str, str], probes: Iterable[str] = PROMPT_PROBES
) -> None:
    """Raise ``CheckpointError`` unless every literal ``prompts`` prefix ends on a token boundary:
    its tokens alone must be the first tokens of ``prompt + query`` for every probe query, with
    at least one query token after them. Otherwise sentence-transformers, which excludes the
    prompt's token count from pooling, would drop (part of) the query's first word, and a
    one-token query would embed to a zero vector."""
    probes = list(probes)
    for name, prompt in prompts.items():
        k = st_prompt_length(tokenizer, prompt)
        alone = tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"][:k]
        for query in probes:
            ids = tokenizer(prompt + query, add_special_tokens=True, verbose=False)["input_ids"]
            if ids[:k] != alone or len(ids) <= k:
                raise CheckpointError(
                    f"prompt {name!r} ({prompt!r}) does not end on a token boundary: tokenized "
                    f"alone it is {k} tokens, but before {query!r} its last token merges with the "
                    "query's, so sentence-transformers would exclude part of the query from "
                    "pooling. End the prompt template's prefix with a character that does not "
                    "merge (e.g. '{instruction}:\\n{text}'), not with whitespace."
                )


# ----------------------------------------------------------------------------- max_length
def max_positions(config: Mapping[str, Any] | Any) -> int | None:
    """The most positions a model was built for: ``max_position_embeddings`` (LLaDA:
    ``max_sequence_length``) of a config object or config.json dict; None if it has none."""
    get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k, None)
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
        value = get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_max_length(
    max_length: int | None,
    config: Mapping[str, Any] | Any,
    strict: bool = False,
    flag: str = "max_length",
    where: str = "",
) -> int:
    """``max_length``, or by default 512 capped by the model's positions (``config``: a config
    object or config.json dict), checked: beyond the positions a logged warning, or with
    ``strict`` a ``ValueError`` that names ``flag`` (and ``where``, e.g. the directory)."""
    positions = max_positions(config)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
    if max_length < 1:
        raise ConfigError(f"{flag} must be >= 1, got {max_length}")
    if positions is not None and max_length > positions:
        problem = (
            f"{where}max_length {max_length} exceeds the model's max_position_embeddings "
            f"{positions}: positions beyond {positions} were never trained; set {flag} to at "
            f"most {positions}"
        )
        if strict:
            raise ConfigError(problem)
        logger.warning("%s", problem)
    return max_length


# ----------------------------------------------------------------------------- trained dims
TRAINED_DIMS = "matryoshka_dims"  # diffembed.json: the shorter lengths the model was trained for


def _check_trained_dims(value: Any, path: Path) -> list[int]:
    """``value`` (diffembed.json's ``matryoshka_dims``) as a sorted list, refused unless it is
    a list of distinct positive integers."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    ):
        raise CheckpointError(
            f"{path}: {TRAINED_DIMS} {value!r} is not a list of positive integers; correct the file"
        )
    return sorted(set(value))


def trained_dims(directory: str | Path) -> list[int]:
    """The shorter vector lengths a model directory was fine-tuned for (``finetune
    --matryoshka-dims``), sorted; empty for any other directory."""
    model = ModelDir(directory)
    if not model.is_ours:
        return []
    path = model.path / "diffembed.json"
    return _check_trained_dims(model.json("diffembed.json").get(TRAINED_DIMS), path)


def write_trained_dims(directory: str | Path, dims: Iterable[int]) -> None:
    """Record in a saved model directory's diffembed.json the shorter lengths ``dims`` it was
    trained for (none: the entry is removed)."""
    path = Path(directory) / "diffembed.json"
    settings = {k: v for k, v in read_json(path, CheckpointError).items() if k != TRAINED_DIMS}
    dims = sorted(set(int(d) for d in dims))
    write_json(path, {**settings, TRAINED_DIMS: dims} if dims else settings)


def write_max_length(directory: str | Path, max_length: int) -> None:
    """Set the ``max_length`` a saved model directory runs with, in both files that store it:
    diffembed.json's ``max_length`` and sentence_bert_config.json's ``max_seq_length`` (each
    only if present). An exported model saves the length its scores were measured at."""
    directory = Path(directory)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    for name, key in (
        ("diffembed.json", "max_length"),
        ("sentence_bert_config.json", "max_seq_length"),
    ):
        path = directory / name
        if path.is_file():
            write_json(path, {**read_json(path, CheckpointError), key: max_length})


def check_max_length(directory: str | Path, max_length: int | None, strict: bool = False) -> int:
    """The ``max_length`` a directory's model runs with (``max_length``, else the saved one),
    checked by ``resolve_max_length`` naming ``--max-length``; for CLI commands that check
    before loading."""
    model = ModelDir(directory)
    if max_length is None:
        max_length = read_settings(model.path).get("max_length")
    return resolve_max_length(max_length, model.config, strict, "--max-length", f"{model.path}: ")
