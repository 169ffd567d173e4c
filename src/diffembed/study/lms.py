"""The study's LM stages, into ``OUT/lm/<name>``: the AR LM (pretrained by the study, or the
preset's ``base`` directory taken as it is), its adaptations (short MNTP; masked diffusion and
MNTP for M steps, M read off a measured curve when the preset has one), diffusion from scratch,
and the never-trained control.

When the preset names a base, every LM of the study has the base's architecture, positions and
held-out documents (``heldout_ids`` and the pool size), so that a held-out loss of an adapted LM
is measured on documents the base never trained on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffembed.errors import ConfigError
from diffembed.io import write_json
from diffembed.provenance import file_sha256
from diffembed.study.design import LM, LM_BY_NAME, choose_adaptation_steps
from diffembed.study.presets import PretrainOverrides
from diffembed.train.pretrain_config import stable_fields

if TYPE_CHECKING:
    from diffembed.study.stages import Study

logger = logging.getLogger(__name__)

# Fields of a base's pretraining config that every LM of a study branched from it shares: the
# architecture and positions, and the data split (held-out documents, pool size).
BASE_FIELDS = (
    "layers",
    "hidden",
    "heads",
    "kv_heads",
    "ffn",
    "rope_theta",
    "residual_init",
    "seq_len",
    "heldout_ids",
    "unique_tokens",
)
CURVE = "ar-diffusion-curve"  # the adaptation curve's run, in OUT/lm/
CURVE_METRIC = "eval_elbo_nll"  # held-out diffusion loss, nats per token (train_log.csv)


def base_dir(study: Study) -> Path | None:
    """The preset's base LM directory, or None when the study pretrains its own AR LM."""
    return Path(study.preset.base) if study.preset.base else None


def base_config(base: Path) -> dict[str, Any]:
    """The pretraining config a base LM was trained with (``pretrain.json``), checked to be an
    AR run; errors name the file."""
    path = base / "pretrain.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        config = info["config"]
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: missing; the study's base must be a model directory written by "
            "`diffembed pretrain` (its pretrain.json records the config it was trained with)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: no pretraining config in it ({e})") from None
    if config.get("objective") != "ar":
        raise ConfigError(
            f"{path}: objective {config.get('objective')!r}; the study's base is an AR LM"
        )
    return config


def pretrain_config(study: Study, objective: str, extra: PretrainOverrides) -> Any:
    """The :class:`~diffembed.train.pretrain.PretrainConfig` of one LM: the LM size preset, the
    study's overrides, ``extra``, then the base's shared fields (:data:`BASE_FIELDS`)."""
    from diffembed.train.pretrain_config import PRESETS as PT_PRESETS
    from diffembed.train.pretrain_config import PretrainConfig

    values = {
        **PT_PRESETS[study.preset.pretrain_preset],
        **study.preset.pretrain.as_dict(),
        **extra.as_dict(),
    }
    base = base_dir(study)
    if base is not None:
        shared = base_config(base)
        values.update({k: shared[k] for k in BASE_FIELDS if k in shared})
    values["objective"] = objective
    config = PretrainConfig(**values)
    config.validate()
    return config


def adaptation(study: Study) -> Any:
    """The preset's :class:`~diffembed.study.presets.Adaptation` with M as measured
    (``study.adapt_steps``; until the curve ran: the preset's ``adapt.steps``, its maximum)."""
    adapt = study.preset.adapt
    return (
        adapt if study.adapt_steps is None else dataclasses.replace(adapt, steps=study.adapt_steps)
    )


def lm_config(study: Study, lm: LM) -> Any:
    """The pretraining config of ``lm``, sized by its budget (see
    :class:`~diffembed.study.design.LM`; ``random``: the diffusion LM's architecture)."""
    objective = "diffusion" if lm.objective == "random" else lm.objective
    if lm.budget == "mntp":
        return pretrain_config(study, objective, study.preset.mntp)
    if lm.budget == "adapt":
        return pretrain_config(study, objective, adaptation(study).overrides(objective))
    config = pretrain_config(study, objective, PretrainOverrides())
    if lm.budget == "pretrain+adapt":  # from scratch for the AR LM's tokens + M
        steps = config.steps + adaptation(study).steps
        base = base_dir(study)
        if base is not None:  # the base's own steps, not the preset's
            steps = int(base_config(base)["steps"]) + adaptation(study).steps
        config = pretrain_config(study, objective, PretrainOverrides(steps=steps))
    elif lm.budget == "repeat":  # the same tokens from a pool of 1/E as many, E times
        pool = config.steps * config.tokens_per_step // study.preset.repeat_epochs
        config = dataclasses.replace(config, unique_tokens=pool)
        config.validate()
    return config


def init_random_lm(config: Any, tok: Path, path: Path) -> None:
    """The control: the architecture of ``config``, never trained (seeded init)."""
    from diffembed.model.tokenizer import load_tokenizer, save_tokenizer
    from diffembed.train.pretrain_model import build_model

    tokenizer = load_tokenizer(tok)
    model = build_model(config, tokenizer)
    model.config.diffembed_objective = "random"
    model.config.is_causal = False
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tokenizer(tokenizer, tmp)  # replaces tmp as a whole: before the weights
    model.save_pretrained(str(tmp))
    tmp.rename(path)


def keep_logs(src: Path, dst: Path) -> None:
    """Copy the small log files of a run (CSV, PNG, JSON summaries) beside the results."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("train_log.csv", "train_log.png", "pretrain.json"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    training = src / "training"
    if training.is_dir():
        for f in training.iterdir():
            if f.suffix in (".csv", ".png", ".json"):
                shutil.copy2(f, dst / f.name)


def stage_base(study: Study, base: Path) -> str:
    """The preset's base LM copied (weights, config, tokenizer, logs) into ``OUT/lm/ar``, keyed
    on the content of its files, so that a changed base reruns everything that branches from
    it."""
    base_config(base)  # an AR run with its config, or a clear error
    path = study.out / "lm" / "ar"
    # the model's files; its card (README.md) is prose, not an input of any row
    files = sorted(p for p in base.iterdir() if p.is_file() and p.name != "README.md")
    key = {"base_files": {p.name: file_sha256(p) for p in files}}

    def run() -> None:
        tmp = path.with_name("ar.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in files:  # the model's files only: never a run's checkpoint or snapshots
            shutil.copy2(f, tmp / f.name)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        keep_logs(path, study.out / "logs" / "lm" / "ar")

    return study.stage("lm-ar", key, [path / "config.json"], run)


def stage_lm(study: Study, lm: LM, tok: Path, corpus: Path, deps: dict[str, str]) -> str:
    """Pretrain, adapt (from ``OUT/lm/<lm.init>``) or initialise (``random``) one LM into
    ``OUT/lm/<lm.name>``; the ``ar`` LM of a preset with a base is that base."""
    base = base_dir(study)
    if lm.name == "ar" and base is not None:
        return stage_base(study, base)
    path = study.out / "lm" / lm.name
    config = lm_config(study, lm)

    def run() -> None:
        if lm.objective == "random":
            init_random_lm(config, tok, path)
            return
        _pretrain(study, config, corpus, tok, path, lm.init)

    key = {"config": stable_fields(config), **deps}
    return study.stage(f"lm-{lm.name}", key, [path / "config.json"], run)


def _pretrain(
    study: Study, config: Any, corpus: Path, tok: Path, path: Path, init: str | None
) -> None:
    """One pretraining run into ``path`` (resumed from its checkpoint), then its logs kept."""
    from diffembed.train.pretrain import pretrain

    resume = (path / "checkpoint").exists() and not (path / "config.json").exists()
    pretrain(
        config,
        corpus,
        tok,
        path,
        init=study.out / "lm" / init if init else None,
        resume=resume,
        device=study.device,
        show_progress=study.show_progress,
    )
    keep_logs(path, study.out / "logs" / "lm" / path.name)


def curve_points(log: Path) -> list[tuple[int, float]]:
    """``(step, held-out diffusion loss)`` of every evaluation in a run's ``train_log.csv``."""
    with log.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [(int(r["step"]), float(r[CURVE_METRIC])) for r in rows if r.get(CURVE_METRIC)]


def curve_config(study: Study) -> Any:
    """The pretraining config of the adaptation-curve run (the preset's ``adapt_curve``: the
    adaptation at its longest, evaluated often); errors when the preset has none."""
    curve = study.preset.adapt_curve
    if curve is None:
        raise ConfigError(f"preset {study.preset.name} has no adapt_curve")
    return pretrain_config(study, "diffusion", curve.overrides(study.preset.adapt))


def stage_adapt_curve(study: Study, tok: Path, corpus: Path, deps: dict[str, str]) -> int:
    """Measure the adaptation curve of the preset (``adapt_curve``) from ``OUT/lm/ar`` and
    return M by :func:`~diffembed.study.design.choose_adaptation_steps`; the points, the rule
    and M go to ``OUT/logs/adapt-curve.json`` (the report's design section reads it)."""
    curve = study.preset.adapt_curve
    if curve is None:
        raise ConfigError(f"preset {study.preset.name} has no adapt_curve")
    deps = {**deps, "ar": stage_lm(study, LM_BY_NAME["ar"], tok, corpus, deps)}
    config = curve_config(study)
    path = study.out / "lm" / CURVE

    def run() -> None:
        _pretrain(study, config, corpus, tok, path, "ar")

    key = {"config": stable_fields(config), **deps}
    study.stage(f"lm-{CURVE}", key, [path / "config.json"], run)
    points = curve_points(study.out / "logs" / "lm" / CURVE / "train_log.csv")
    steps = choose_adaptation_steps(points, curve.min_gain, curve.steps)
    write_json(
        study.out / "logs" / "adapt-curve.json",
        {
            "metric": CURVE_METRIC,
            "points": [
                {"step": s, "tokens": s * config.tokens_per_step, "loss": v} for s, v in points
            ],
            "min_gain": curve.min_gain,
            "max_steps": curve.steps,
            "chosen_steps": steps,
            "chosen_tokens": steps * config.tokens_per_step,
        },
    )
    logger.info("adaptation curve: M = %d steps (%d tokens)", steps, steps * config.tokens_per_step)
    return steps
