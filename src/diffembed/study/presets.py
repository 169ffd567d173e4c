"""The presets that size a study run (``diffembed reproduce --preset``), and their typed settings.

A preset names one of the LM size presets of :mod:`diffembed.train.pretrain` and overrides a few
of its fields; every other setting it holds is a typed dataclass whose ``as_dict()`` (the unset
fields left out) is what the stages receive and what their keys record. The rows, claims and
rules a preset runs are in :mod:`diffembed.study.design`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffembed.errors import ConfigError
from diffembed.study.design import MAIN_ROWS, REFERENCES, REPETITION_ROWS, ROW_NAMES


@dataclass(frozen=True)
class Settings:
    """Base of the preset's settings groups: ``as_dict()`` holds the fields that are set."""

    def as_dict(self) -> dict[str, Any]:
        """The fields that are not None (None: the callee's default), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class PretrainOverrides(Settings):
    """Fields of :class:`~diffembed.train.pretrain.PretrainConfig` replaced on top of the LM size
    preset (None: the preset's value)."""

    steps: int | None = None
    global_batch: int | None = None
    micro_batch: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    eval_every: int | None = None
    save_every: int | None = None
    compile: bool | None = None
    anneal_steps: int | None = None
    shift: bool | None = None
    seq_len: int | None = None
    eval_tokens: int | None = None
    schedule: str | None = None
    decay_steps: int | None = None
    unique_tokens: int | None = None


@dataclass(frozen=True)
class Adaptation(Settings):
    """The adaptation budget M of the AR LM: ``steps`` optimizer steps of the LM preset's
    tokens per step, spent by ``ar-diffusion-bi`` (masked diffusion, attention annealed from
    causal to full over the first ``anneal_steps``, AR shift on) and by ``ar-mntp-matched-bi``
    (MNTP, same steps); ``diffusion-bi`` pretrains from scratch for the AR steps + ``steps``."""

    steps: int  # M, in optimizer steps
    anneal_steps: int  # < steps, so that the run ends with full attention
    warmup_steps: int
    eval_every: int
    save_every: int

    def overrides(self, objective: str) -> PretrainOverrides:
        """The pretraining overrides of the adaptation with ``objective`` (diffusion or mntp)."""
        common = dict(
            steps=self.steps,
            warmup_steps=self.warmup_steps,
            eval_every=self.eval_every,
            save_every=self.save_every,
        )
        if objective == "diffusion":
            return PretrainOverrides(**common, anneal_steps=self.anneal_steps, shift=True)
        return PretrainOverrides(**common)


@dataclass(frozen=True)
class AdaptCurve(Settings):
    """The measured curve the adaptation budget M is read from (by
    :func:`~diffembed.study.design.choose_adaptation_steps`, ``min_gain`` nats per doubling):
    masked-diffusion adaptation of the AR LM as :class:`Adaptation` runs it (same warmup,
    annealing and shift) for ``steps``, at a constant rate after the warmup so that a point of
    the curve does not depend on where the run ends, with the held-out diffusion loss every
    ``eval_every`` steps. The candidates for M are ``eval_every`` times powers of two."""

    steps: int
    eval_every: int
    min_gain: float

    def overrides(self, adapt: Adaptation) -> PretrainOverrides:
        """The pretraining overrides of the curve's run."""
        return PretrainOverrides(
            steps=self.steps,
            warmup_steps=adapt.warmup_steps,
            eval_every=self.eval_every,
            save_every=adapt.save_every,
            anneal_steps=adapt.anneal_steps,
            shift=True,
            schedule="wsd",
            decay_steps=0,
        )


@dataclass(frozen=True)
class TrainingPairs(Settings):
    """What every row fine-tunes on and what the gate measures on: the finetune split's pairs
    (built with :class:`PairsSettings`) less ``heldout`` of them (a seeded sample: the gate's
    held-out pairs, in task-homogeneous batches of ``heldout_batch``), plus pairs of the same
    task types from the pretrain split, at most ``pretrain_split_per_task`` per task (None: no
    pretrain-split pairs)."""

    heldout: int
    heldout_batch: int
    pretrain_split_per_task: int | None = None


@dataclass(frozen=True)
class TaskCaps(Settings):
    """Caps of :func:`~diffembed.data.tasks.build.build_all` (lengths in tokenizer tokens)."""

    max_length_tokens: int
    max_queries: int
    max_docs: int


@dataclass(frozen=True)
class PairsSettings(Settings):
    """Keyword arguments of :func:`~diffembed.data.pairs.build.build_pairs` (None: its default)."""

    hard_negatives: int
    max_per_task: int | None = None
    problems_per_concept: int | None = None


@dataclass(frozen=True)
class FinetuneSettings(Settings):
    """The :class:`~diffembed.train.finetune_config.FinetuneConfig` fields shared by every row."""

    steps: int
    warmup_steps: int
    lr: float
    global_batch_size: int
    hard_negatives: int
    max_query_length: int
    max_doc_length: int
    lora_r: int
    exclude_instruction: bool


@dataclass(frozen=True)
class EvalSettings(Settings):
    """Evaluation settings of the embedding models (BM25 reads whole documents)."""

    max_length: int
    batch_tokens: int


@dataclass(frozen=True)
class StudyPreset:
    """Everything that sizes a study run (see :data:`PRESETS`)."""

    name: str
    vocab_size: int
    pretrain_preset: str  # an LM size preset of diffembed.train.pretrain.PRESETS
    pretrain: PretrainOverrides  # overrides of the pretrain preset (both objectives)
    mntp: PretrainOverrides  # overrides for the short (LLM2Vec) MNTP adaptation
    adapt: Adaptation  # the adaptation budget M (ar-diffusion-bi, ar-mntp-matched-bi)
    tasks: TaskCaps
    pairs: PairsSettings
    finetune: FinetuneSettings
    eval: EvalSettings
    seeds: tuple[int, ...] = (0, 1, 2)
    bootstrap: int = 1000
    references: tuple[str, ...] = REFERENCES
    corpus_sources: tuple[str, ...] | None = None
    rows: tuple[str, ...] | None = MAIN_ROWS  # default rows of this preset (None: all of ROWS)
    # data repetition rows: their pool holds 1/repeat_epochs of the AR LM's training tokens
    repeat_epochs: int = 8
    # fine-tune/evaluate chains (and LMs that do not depend on each other) run in this many
    # processes at once (--jobs)
    jobs: int = 1
    expected_minutes: float = 0.0
    # Changes to the preset made after a run had been looked at, stated in the report.
    changes_after_looking: tuple[str, ...] = ()
    # An AR LM directory (absolute, or relative to the working directory) that every row
    # branches from: it stands for the ``ar`` LM (not pretrained by the study), and its
    # tokenizer, architecture and held-out documents are the study's. None: pretrain ``ar``.
    base: str | None = None
    # M measured (None: ``adapt.steps`` as set).
    adapt_curve: AdaptCurve | None = None
    training_pairs: TrainingPairs = TrainingPairs(heldout=400, heldout_batch=16)
    # The design, dated and fixed before any row of this edition ran (the report's "Design").
    design_date: str | None = None
    design_notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        curve = self.adapt_curve
        if curve is not None and curve.eval_every <= self.adapt.anneal_steps:
            raise ConfigError(
                f"preset {self.name}: adapt_curve.eval_every ({curve.eval_every}) must be above "
                f"adapt.anneal_steps ({self.adapt.anneal_steps}): every candidate M ends with "
                "full attention"
            )

    def to_json(self) -> dict[str, Any]:
        """The preset as JSON-able data (``preset.json``; settings groups as their set fields)."""
        data = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Settings):
                data[f.name] = value.as_dict()
        return data


PRESETS: dict[str, StudyPreset] = {
    # Seconds per stage: CI runs it on a tiny corpus (under 5 minutes in all).
    "smoke": StudyPreset(
        name="smoke",
        vocab_size=600,
        pretrain_preset="smoke",
        # a fixed data pool (the whole split), as the base's: the curve's wsd schedule needs one
        pretrain=PretrainOverrides(
            steps=20, eval_every=10, save_every=10, compile=False, unique_tokens=10**9
        ),
        mntp=PretrainOverrides(steps=5, warmup_steps=1, eval_every=5, save_every=5),
        adapt=Adaptation(steps=8, anneal_steps=1, warmup_steps=1, eval_every=4, save_every=4),
        adapt_curve=AdaptCurve(steps=8, eval_every=2, min_gain=0.05),
        tasks=TaskCaps(max_length_tokens=512, max_queries=20, max_docs=80),
        pairs=PairsSettings(hard_negatives=1, max_per_task=40, problems_per_concept=2),
        finetune=FinetuneSettings(
            steps=6,
            warmup_steps=1,
            lr=1e-3,
            global_batch_size=8,
            hard_negatives=1,
            max_query_length=128,  # the tiny vocabulary spends many tokens on instructions
            max_doc_length=96,
            lora_r=0,
            exclude_instruction=True,
        ),
        eval=EvalSettings(max_length=512, batch_tokens=8192),
        seeds=(0, 1, 2),
        bootstrap=200,
        references=("bm25",),
        training_pairs=TrainingPairs(heldout=16, heldout_batch=4, pretrain_split_per_task=20),
        # every row but the repetition ones (covered by the pack test), so that CI covers them
        rows=tuple(n for n in ROW_NAMES if n not in REPETITION_ROWS),
        expected_minutes=3,
    ),
    # The third edition: every row branches from models/base-ar (4 x 128, 106.5M AR tokens at
    # 512 positions), M is read off a measured adaptation curve, every row fine-tunes with the
    # shipped model's recipe, and the gate is held-out accuracy (design_notes). Sized for a
    # 2-core CPU over several sittings: ~9k training tokens/s at 16 x 512 (results/base), a
    # 1000-step fine-tune ~9 minutes (results/ship), an evaluation at 512 tokens ~2 minutes.
    "cpu": StudyPreset(
        name="cpu",
        vocab_size=8000,
        pretrain_preset="cpu",
        base="models/base-ar",
        # the base's positions, batch and held-out budget (results/base/config.json)
        pretrain=PretrainOverrides(seq_len=512, eval_tokens=32768),
        # LLM2Vec's short MNTP: 100 x 8192 = 0.8M tokens
        mntp=PretrainOverrides(steps=100, warmup_steps=10, eval_every=50, save_every=50),
        # steps: the most M may be (the curve's length); the curve chooses M
        adapt=Adaptation(
            steps=2000, anneal_steps=100, warmup_steps=25, eval_every=125, save_every=250
        ),
        # M candidates 125, 250, 500, 1000 steps (1.0M-8.2M tokens), 2000 (16.4M) by default
        adapt_curve=AdaptCurve(steps=2000, eval_every=125, min_gain=0.05),
        tasks=TaskCaps(max_length_tokens=512, max_queries=100, max_docs=500),
        # the shipped model's pairs: the finetune split's, uncapped, and the pretrain split's
        pairs=PairsSettings(hard_negatives=3),
        training_pairs=TrainingPairs(heldout=400, heldout_batch=16, pretrain_split_per_task=10000),
        # the shipped model's recipe (scripts/ship_model.py, models/diffembed-tiny)
        finetune=FinetuneSettings(
            steps=1000,
            warmup_steps=100,
            lr=3e-4,
            global_batch_size=16,
            hard_negatives=1,
            max_query_length=64,
            max_doc_length=256,
            lora_r=0,
            exclude_instruction=True,
        ),
        eval=EvalSettings(max_length=512, batch_tokens=16384),
        seeds=(0, 1, 2),
        bootstrap=1000,
        # curve 2000 steps ~30 min; two adaptations of M <= 2000 steps <= 60 min; MNTP 2 min;
        # 15 fine-tunes x ~9 min; 15 evaluations + references ~35 min
        expected_minutes=260,
        design_date="2026-12-03",
        design_notes=(
            "Every row branches from one AR base, `models/base-ar` (4 x 128, 2.07M parameters, "
            "106.5M tokens at 512 positions; results/base), instead of an LM the study "
            "pretrains: the second edition's rows started from a 4M-token LM no better than "
            "random weights, so nothing could be judged. The base's tokenizer, architecture "
            "and held-out documents are the study's; `random-bi` is the base's architecture "
            "with a seeded initialisation, never trained.",
            "M, the adaptation budget of `ar-diffusion-bi` and of its compute-matched MNTP "
            "control, is read off a measured curve by a rule fixed here: adapt the base to "
            "masked diffusion (the Dream recipe: attention annealed from causal to full over "
            "100 steps, AR shift) for 2,000 steps at a constant rate after warmup, measure the "
            "held-out diffusion loss every 125 steps, and take the first candidate M in 125, "
            "250, 500, 1000 steps whose loss improves by less than 0.05 nats/token by 2M "
            "(2,000 steps when no doubling is that flat). Evaluation scores play no part.",
            "`diffusion-bi` (from scratch) moved to the extras (`--rows extras`): masked "
            "diffusion needs ~7x AR's tokens for the same held-out loss at this size "
            "(results/finetune-curve), so at the base's budget it would be undertrained by "
            "design, at another ~3 CPU hours.",
            "Every row fine-tunes with the shipped model's recipe for the same 1,000 steps and "
            "3 seeds: the finetune split's pairs (400 of them held out for the gate) plus up "
            "to 10,000 pairs per task type from the pretrain split; lr 3e-4, 16 pairs a step, "
            "one hard negative, mean pooling with the instruction excluded, full fine-tuning; "
            "evaluation at the base's 512 positions.",
            "The gate that decides whether a contrast is judged is held-out in-batch accuracy "
            "above `random-bi`'s (GATE_RULE and GATE_WHY in diffembed.study.design); the "
            "primary contrast and the paper's claims are judged on all four suites by the "
            "unchanged rule (paired bootstrap 95% CI over queries).",
            "Earlier editions: results/cpu-2nd (second edition, from a 4.1M-token LM) and git "
            "history (first edition); their changes after looking are listed there.",
        ),
    ),
    # One H100/H200: a 12 x 768 model, LoRA fine-tuning as in the paper.
    "gpu": StudyPreset(
        name="gpu",
        vocab_size=8000,
        pretrain_preset="gpu",
        pretrain=PretrainOverrides(),
        mntp=PretrainOverrides(steps=200, warmup_steps=20, eval_every=100, save_every=100),
        # M = 1000 x 131072 = 131M tokens (half the AR LM's 262M; 5x the short MNTP)
        adapt=Adaptation(
            steps=1000, anneal_steps=200, warmup_steps=50, eval_every=250, save_every=500
        ),
        tasks=TaskCaps(max_length_tokens=4096, max_queries=500, max_docs=5000),
        pairs=PairsSettings(hard_negatives=7),
        finetune=FinetuneSettings(
            steps=500,
            warmup_steps=50,
            lr=1e-4,
            global_batch_size=64,
            hard_negatives=1,
            max_query_length=128,
            max_doc_length=1024,
            lora_r=16,
            exclude_instruction=True,
        ),
        eval=EvalSettings(max_length=4096, batch_tokens=65536),
        seeds=(0, 1, 2),
        bootstrap=1000,
        expected_minutes=120,
    ),
}


# One H100/H200 in <= 9 minutes, from a pack written on a CPU (--write-pack; the tokenized
# pretrain split, tokenizer, tasks and pairs in one file): the cpu preset's 4 x 128 model, tasks
# and pairs, with 16x the cpu tokens (AR 65M, M = 33M, diffusion from scratch 98M tokens; measured
# on one H200 in session 12: 2.1M AR / 1.4M diffusion training tokens/s at this size), 300
# fine-tuning steps of 32 pairs, 6 stages at once. Minutes estimated from those rates, not yet run.
# The third edition's design with its own base pretrained on the GPU (``base`` None), a fixed M
# (no curve in 9 minutes) and diffusion from scratch among its rows (the GPU affords its tokens).
PRESETS["gpu-short"] = dataclasses.replace(
    PRESETS["cpu"],
    name="gpu-short",
    base=None,
    adapt_curve=None,
    rows=(*MAIN_ROWS, "diffusion-bi"),
    design_notes=(),
    pretrain=PretrainOverrides(
        steps=2000,
        global_batch=128,
        micro_batch=128,
        warmup_steps=100,
        eval_every=250,
        save_every=500,
        compile=True,
    ),
    # M = 1000 x 32768 = 33M tokens (half the AR LM's 65M)
    adapt=Adaptation(steps=1000, anneal_steps=200, warmup_steps=50, eval_every=250, save_every=500),
    finetune=dataclasses.replace(
        PRESETS["cpu"].finetune, steps=300, warmup_steps=30, global_batch_size=32
    ),
    eval=EvalSettings(max_length=1024, batch_tokens=65536),
    references=("bm25",),  # MiniLM's weights (~90 MB) do not fit beside the pack
    jobs=6,
    expected_minutes=6,
    changes_after_looking=(),
)
