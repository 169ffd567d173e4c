"""The settings of a pretraining run: ``PretrainConfig`` (each field once, checked by
``validate``), the size presets (``PRESETS``: smoke, cpu, gpu), ``make_config`` (a preset plus a
JSON file of overrides, e.g. ``results/base/config.json``), ``config_hash`` (what a checkpoint
must share with the run that resumes it) and the learning rate the config gives each step
(``lr_at``, ``decay_start``). The loop is in ``train.pretrain``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from diffembed.errors import ConfigError
from diffembed.io import read_json
from diffembed.model.precision import PRECISIONS, precision_from_bf16
from diffembed.train.adaptation import check_adaptation
from diffembed.train.objectives import OBJECTIVES
from diffembed.train.schedule import lr_factor

logger = logging.getLogger(__name__)

RESIDUAL_INITS: tuple[str, ...] = ("zero", "normal")
SCHEDULES: tuple[str, ...] = ("cosine", "wsd")
POSITIVE_INTS = ("layers", "hidden", "heads", "kv_heads", "ffn", "seq_len", "steps")
POSITIVE_INTS += ("global_batch", "micro_batch", "eval_every", "eval_tokens", "log_every")
POSITIVE_INTS += ("save_every",)
NON_NEGATIVE_INTS = ("warmup_steps", "decay_steps", "anneal_steps", "snapshot_every", "seed")


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (the model, data and optimisation)."""

    objective: str = "diffusion"
    # model (Llama-style; identical for every objective)
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    ffn: int = 256
    seq_len: int = 128
    rope_theta: float = 10000.0
    # "zero": the residual branches' output projections (o_proj, down_proj) start at zero, so
    # the untrained model is the identity on its token embeddings; "normal": every matrix
    # N(0, 0.02) as transformers initialises it.
    residual_init: str = "zero"
    # optimisation
    steps: int = 30
    global_batch: int = 8  # sequences per optimizer step, over all processes
    micro_batch: int = 8  # sequences per forward pass in one process
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 5
    # "cosine": warmup, then cosine decay over all ``steps``. "wsd" (warmup-stable-decay):
    # warmup, the peak rate until the last ``decay_steps`` steps, then 1 - sqrt decay to
    # ``min_lr_ratio * lr``; it does not fix the final step count in advance, so a wsd run
    # can be extended (resumed with more ``steps``) from any checkpoint in its stable phase.
    schedule: str = "cosine"
    decay_steps: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # compute precision: bf16 autocast over fp32 weights, fp32, or auto (bf16 where the
    # hardware has it fast), as ``--precision`` means everywhere (model.precision)
    precision: str = "bf16"
    compile: bool = False
    # objective details
    mask_eps: float = 1e-3  # diffusion: t ~ U(eps, 1)
    mntp_rate: float = 0.2
    # diffusion adapted from an AR model (train.adaptation): attention opens from causal to full
    # over the first anneal_steps steps (0: full from the start); shift: position i predicts
    # the masked token i+1 (None: on when init is a causal LM, decided when the run starts)
    anneal_steps: int = 0
    shift: bool | None = None
    # data repetition: train on a pool of the first documents (in the seed's order) holding about
    # this many tokens, repeated for as many epochs as the steps need (None: no cap; the run
    # reads as many unique tokens as it trains on while the split lasts)
    unique_tokens: int | None = None
    # evaluation, logging, checkpoints
    eval_every: int = 10
    eval_tokens: int = 8 * 128  # held-out tokens (whole documents, never trained on)
    log_every: int = 1
    save_every: int = 10
    # checkpoint in bf16 (weights and both Adam moments): half the fp32 checkpoint's size, for
    # runs whose checkpoints are committed
    compact_checkpoint: bool = False
    # every this many steps (0: never), the weights (bf16) as a loadable model directory in
    # out/snapshots/step-N, for measuring what a budget buys
    snapshot_every: int = 0
    # held-out documents named by corpus id (None: the first documents in the seed's order);
    # named ones stay the same when the corpus is rebuilt with more or fewer documents
    heldout_ids: list[str] | None = None
    seed: int = 0
    # deprecated: the boolean name of ``precision`` before (True: "bf16", False: "fp32")
    bf16: InitVar[bool | None] = None

    def __post_init__(self, bf16: bool | None) -> None:
        if bf16 is not None:
            self.precision = precision_from_bf16(bf16, "PretrainConfig")

    def validate(self) -> None:
        for name in POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in NON_NEGATIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("lr", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.residual_init not in RESIDUAL_INITS:
            raise ConfigError(
                f"residual_init must be one of {RESIDUAL_INITS}, got {self.residual_init!r}"
            )
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ConfigError(
                f"hidden {self.hidden}, heads {self.heads}, kv_heads {self.kv_heads} do not divide"
            )
        if self.global_batch % self.micro_batch:
            raise ConfigError(
                f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}"
            )
        if self.steps < 1 or self.seq_len < 8:
            raise ConfigError("steps must be >= 1 and seq_len >= 8")
        if self.unique_tokens is not None and self.unique_tokens < self.tokens_per_step:
            raise ConfigError(
                f"unique_tokens {self.unique_tokens} is less than one batch "
                f"({self.global_batch} x {self.seq_len} tokens)"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "wsd":
            if not 0 <= self.decay_steps <= self.steps - self.warmup_steps:
                raise ConfigError(
                    f"decay_steps {self.decay_steps} must be between 0 and steps - warmup_steps "
                    f"({self.steps - self.warmup_steps})"
                )
            if self.unique_tokens is None:
                # Without a fixed pool, the documents read depend on ``steps``.
                raise ConfigError("the wsd schedule needs unique_tokens (the data pool it repeats)")
        if self.snapshot_every < 0:
            raise ConfigError(f"snapshot_every must be >= 0, got {self.snapshot_every}")
        check_adaptation(self)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


# Sized by measured throughput: smoke for tests; cpu about 10 minutes per objective on a 2-core
# CPU with avx512_bf16 but no AMX (measured ~6.5k AR / ~8k diffusion training tokens/s in bf16,
# eager, at 4 x 128; the fused compiled step trains ~11k AR tokens/s at 16 x 512 on a 2-core
# AMD EPYC, results/base/throughput.md); gpu <= 20 min on one H100.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {},
    "cpu": dict(
        layers=4,
        hidden=128,
        heads=4,
        kv_heads=4,
        ffn=512,
        seq_len=256,
        steps=1000,
        global_batch=16,
        micro_batch=16,
        lr=2e-3,
        warmup_steps=50,
        eval_every=100,
        eval_tokens=32 * 256,
        save_every=100,
        log_every=10,
        compile=True,
    ),
    "gpu": dict(
        layers=12,
        hidden=768,
        heads=12,
        kv_heads=12,
        ffn=3072,
        seq_len=1024,
        steps=2000,
        global_batch=128,
        micro_batch=32,
        lr=6e-4,
        warmup_steps=100,
        eval_every=250,
        eval_tokens=256 * 1024,
        save_every=500,
        log_every=20,
        compile=True,
    ),
}


def make_config(preset: str, objective: str, overrides_file: Path | None = None) -> PretrainConfig:
    """Build the config of ``preset`` for ``objective``, with overrides from a JSON file."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = dict(PRESETS[preset], objective=objective)
    if overrides_file is not None:
        overrides = read_json(overrides_file)
        known = {f.name for f in dataclasses.fields(PretrainConfig)}
        if "bf16" in overrides:  # the name before precision: config files written then load
            if "precision" in overrides:
                raise ConfigError(f"{overrides_file}: give precision, not also bf16 (its old name)")
            logger.warning(
                '%s: "bf16" is deprecated; write "precision": "bf16" or "fp32"', overrides_file
            )
            overrides = dict(overrides)
            overrides["precision"] = "bf16" if overrides.pop("bf16") else "fp32"
        for key in overrides:
            if key not in known:
                raise ConfigError(
                    f"{overrides_file}: unknown field {key!r}; known: {sorted(known)}"
                )
        if overrides.get("objective", objective) != objective:
            raise ConfigError(
                f"{overrides_file}: objective {overrides['objective']!r} contradicts --objective {objective}"
            )
        values.update(overrides)
    config = PretrainConfig(**values)
    try:
        config.validate()
    except ConfigError as e:
        raise ConfigError(f"{overrides_file or f'preset {preset}'}: {e}") from None
    return config


def stable_fields(config: PretrainConfig) -> dict[str, Any]:
    """``config``'s fields as they were named when its checkpoints and stage records were
    made: ``precision`` bf16/fp32 as the boolean ``bf16`` it replaced (``auto`` stays
    ``precision``), so that hashes and keys of earlier runs still match."""
    data = dataclasses.asdict(config)
    if data["precision"] in ("bf16", "fp32"):
        data["bf16"] = data.pop("precision") == "bf16"
    return data


def config_hash(config: PretrainConfig) -> str:
    """Hash of the fields that define the run; log/eval cadence may change on resume."""
    exempt = {"eval_every", "log_every", "save_every", "compile", "snapshot_every"}
    exempt |= {"compact_checkpoint"}
    if config.schedule == "wsd":  # extendable: checked against the checkpoint's step instead
        exempt |= {"steps", "decay_steps"}
    data = {k: v for k, v in stable_fields(config).items() if k not in exempt}
    # unset: the hash of runs made before these fields existed
    for key in ("anneal_steps", "shift", "unique_tokens", "decay_steps", "heldout_ids"):
        if not data.get(key, True):
            del data[key]
    if data["schedule"] == "cosine":
        del data["schedule"]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def lr_at(step: int, config: PretrainConfig) -> float:
    """Learning rate at ``step``: linear warmup, then the config's decay (cosine over the run,
    or wsd's stable phase and final decay) to ``min_lr_ratio * lr``."""
    return lr_factor(
        step,
        config.warmup_steps,
        config.steps,
        decay="wsd" if config.schedule == "wsd" else "cosine",
        peak=config.lr,
        floor=config.min_lr_ratio,
        decay_steps=config.decay_steps,
    )


def decay_start(config: PretrainConfig) -> int:
    """The first step whose rate is below the peak's plateau: ``steps - decay_steps`` for wsd
    (every step before it ran at the rate of any longer run), the warmup's end for cosine."""
    if config.schedule == "wsd":
        return config.steps - config.decay_steps
    return config.warmup_steps
