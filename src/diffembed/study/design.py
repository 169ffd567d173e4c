"""The study's design, fixed before any result is seen: its rows, the LMs they fine-tune, the
paper's claims and the presets that size a run (``diffembed reproduce --preset``).

Rows (pretrained LM x attention at fine-tuning and evaluation x pooling):

- ``ar-diffusion-bi``: the AR LM adapted to masked diffusion for M tokens (attention-mask
  annealing causal -> full over the first steps, AR shift kept; Dream/DiffuLLaMA), bidirectional,
  mean pooling: the DiffEmbed row;
- ``ar-mntp-bi``: AR LM switched to bidirectional attention and adapted with a short MNTP, mean
  pooling (LLM2Vec-style: the paper's AR baseline);
- ``ar-mntp-matched-bi``: the AR LM + MNTP for the same M tokens as ``ar-diffusion-bi`` (the
  compute-matched control: is it the objective or the extra compute?);
- ``diffusion-bi``: diffusion LM from scratch for the AR LM's tokens + M, bidirectional;
- ``ar-bi``: AR LM switched to bidirectional attention without adaptation;
- ``ar-causal`` / ``diffusion-causal``: causal attention, mean pooling;
- ``ar-causal-last`` / ``diffusion-causal-last``: causal attention, last-token pooling;
- ``random-bi``: no pretraining at all (random init), bidirectional: the control;
- ``ar-repeat-bi`` / ``diffusion-repeat-bi`` / ``diffusion-unique-bi`` (``--rows repetition``,
  with ``ar-bi``): the AR LM's token budget drawn from a small pool repeated for many epochs vs
  unique tokens, for both objectives.

The verdict rules are fixed here too (see :data:`CLAIMS`): the primary contrast is
``ar-diffusion-bi`` minus ``ar-mntp-bi`` per suite, on scores x100, with a paired bootstrap 95%
CI over queries (per-query scores averaged over seeds first); :data:`CONTRASTS` are reported
with the same rule and no verdict.

A preset names one of the LM size presets of :mod:`diffembed.train.pretrain` and overrides a few
of its fields; every other setting it holds is a typed dataclass whose ``as_dict()`` (the unset
fields left out) is what the stages receive and what their keys record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SUITE_ORDER = ("longdoc", "reasoning", "instruct", "traditional")
SUITE_LABELS = {
    "longdoc": "Long-doc",
    "reasoning": "Reasoning",
    "instruct": "Instruction-following (p-MRR)",
    "traditional": "Traditional",
}
# The primary contrast (DiffEmbed minus the LLM2Vec-style AR baseline), fixed before any run.
PRIMARY = ("ar-diffusion-bi", "ar-mntp-bi")
# Reported besides the primary one (same rule, no verdict): the objective at matched compute,
# the extra compute alone, adaptation vs from scratch, the first study's primary, attention.
CONTRASTS: tuple[tuple[str, str], ...] = (
    PRIMARY,
    ("ar-diffusion-bi", "ar-mntp-matched-bi"),
    ("ar-mntp-matched-bi", "ar-mntp-bi"),
    ("ar-diffusion-bi", "diffusion-bi"),
    ("diffusion-bi", "ar-mntp-bi"),
    ("diffusion-bi", "ar-bi"),
    ("diffusion-bi", "ar-causal"),
    # data repetition: same training tokens, a small pool repeated minus unique
    ("diffusion-repeat-bi", "diffusion-unique-bi"),
    ("ar-repeat-bi", "ar-bi"),
)


@dataclass(frozen=True)
class LM:
    """One pretrained LM of the study, in ``OUT/lm/<name>`` (a :attr:`Row.base`)."""

    name: str
    objective: str  # of diffembed.train.pretrain, or "random" (initialised, never trained)
    init: str | None  # the LM it continues (None: from scratch)
    # what sizes it: "pretrain" | "mntp" (short MNTP) | "adapt" (M) | "pretrain+adapt" | "repeat"
    # (the pretrain budget from a pool of 1/repeat_epochs as many unique tokens)
    budget: str


# In dependency order (an LM's init comes before it).
LMS: tuple[LM, ...] = (
    LM("diffusion", "diffusion", None, "pretrain+adapt"),
    LM("ar", "ar", None, "pretrain"),
    LM("mntp", "mntp", "ar", "mntp"),
    LM("ar-diffusion", "diffusion", "ar", "adapt"),
    LM("mntp-matched", "mntp", "ar", "adapt"),
    LM("random", "random", None, "pretrain"),
    # data repetition (--rows repetition): the AR LM's token budget, from a pool of 1/E as many
    # unique tokens repeated E times, and diffusion from scratch for the same tokens, unique
    LM("ar-repeat", "ar", None, "repeat"),
    LM("diffusion-repeat", "diffusion", None, "repeat"),
    LM("diffusion-unique", "diffusion", None, "pretrain"),
)
LM_BY_NAME = {lm.name: lm for lm in LMS}


def lms_needed(bases: Sequence[str]) -> tuple[LM, ...]:
    """The LMs that ``bases`` (LM names) need, with the LMs they continue, in :data:`LMS` order."""
    needed: set[str] = set()
    todo = list(bases)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            init = LM_BY_NAME[name].init
            todo += [init] if init else []
    return tuple(lm for lm in LMS if lm.name in needed)


@dataclass(frozen=True)
class Row:
    """One fine-tuned model of the design."""

    name: str
    base: str  # the name of its pretrained LM (one of LMS)
    attention: str  # bidirectional | causal
    pooling: str  # mean | last
    label: str
    # Evaluation length past the model's trained positions (stated in the report); None: the
    # preset's eval max_length capped at the model's max_position_embeddings.
    max_length: int | None = None


ROWS: tuple[Row, ...] = (
    Row(
        "ar-diffusion-bi",
        "ar-diffusion",
        "bidirectional",
        "mean",
        "AR LM + diffusion adaptation (M tokens), bidirectional (DiffEmbed)",
    ),
    Row("ar-mntp-bi", "mntp", "bidirectional", "mean", "AR LM + MNTP, bidirectional (LLM2Vec)"),
    Row(
        "ar-mntp-matched-bi",
        "mntp-matched",
        "bidirectional",
        "mean",
        "AR LM + MNTP (M tokens), bidirectional: compute-matched control",
    ),
    Row(
        "diffusion-bi",
        "diffusion",
        "bidirectional",
        "mean",
        "Diffusion LM from scratch (AR + M tokens), bidirectional",
    ),
    Row("ar-bi", "ar", "bidirectional", "mean", "AR LM, bidirectional, no adaptation"),
    Row("ar-causal", "ar", "causal", "mean", "AR LM, causal, mean pooling"),
    Row("diffusion-causal", "diffusion", "causal", "mean", "Diffusion LM, causal, mean pooling"),
    Row("ar-causal-last", "ar", "causal", "last", "AR LM, causal, last-token pooling"),
    Row("diffusion-causal-last", "diffusion", "causal", "last", "Diffusion LM, causal, last-token"),
    Row("random-bi", "random", "bidirectional", "mean", "Random init (no pretraining), bidir."),
    Row(
        "ar-repeat-bi",
        "ar-repeat",
        "bidirectional",
        "mean",
        "AR LM, AR's tokens from a small pool repeated, bidirectional",
    ),
    Row(
        "diffusion-unique-bi",
        "diffusion-unique",
        "bidirectional",
        "mean",
        "Diffusion LM from scratch, AR's tokens (unique), bidirectional",
    ),
    Row(
        "diffusion-repeat-bi",
        "diffusion-repeat",
        "bidirectional",
        "mean",
        "Diffusion LM, AR's tokens from a small pool repeated, bidirectional",
    ),
)
ROW_NAMES = tuple(r.name for r in ROWS)
# The rows a study runs by default (the others stay available with --rows).
MAIN_ROWS = (
    "ar-diffusion-bi",
    "ar-mntp-bi",
    "ar-mntp-matched-bi",
    "diffusion-bi",
    "ar-causal",
    "random-bi",
)
# Named groups of rows for --rows: repetition asks whether repeating a small pool of unique
# tokens hurts AR and helps diffusion (arXiv 2507.15857) at the same training tokens.
REPETITION_ROWS = ("ar-repeat-bi", "diffusion-unique-bi", "diffusion-repeat-bi")
ROW_GROUPS: dict[str, tuple[str, ...]] = {
    "main": MAIN_ROWS,
    "repetition": ("ar-bi", *REPETITION_ROWS, "random-bi"),
}
REFERENCES = ("bm25", "minilm")
# A fine-tuned row "learned" when it beats this control on at least LEARN_MIN_SUITES suites; a
# contrast or claim is judged only between rows that learned.
CONTROL = "random-bi"
LEARN_MIN_SUITES = 3


def select_rows(names: Sequence[str] | None) -> tuple[Row, ...]:
    """The rows named (row names or :data:`ROW_GROUPS` names, in :data:`ROWS` order), or all
    rows for None; unknown names raise."""
    if not names:
        return ROWS
    wanted = {n for name in names for n in ROW_GROUPS.get(name, (name,))}
    unknown = sorted(wanted - set(ROW_NAMES))
    if unknown:
        raise ValueError(
            f"unknown rows {unknown}; choose from {list(ROW_NAMES)} or the groups "
            f"{list(ROW_GROUPS)}"
        )
    return tuple(r for r in ROWS if r.name in wanted)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper about one suite: diffusion minus AR, in points (scores x100)."""

    suite: str
    paper_gain: float
    kind: str  # "gain": diffusion better; "parity": within +-margin
    margin: float = 2.0


# Fixed before looking at any result (the paper's headline, DiffEmbed vs LLM2Vec-style AR).
CLAIMS: tuple[Claim, ...] = (
    Claim("longdoc", 20.0, "gain"),
    Claim("reasoning", 8.0, "gain"),
    Claim("instruct", 2.0, "gain"),
    Claim("traditional", 0.0, "parity", margin=2.0),
)


# ================================================================================ settings
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
        pretrain=PretrainOverrides(steps=20, eval_every=10, save_every=10, compile=False),
        mntp=PretrainOverrides(steps=5, warmup_steps=1, eval_every=5, save_every=5),
        adapt=Adaptation(steps=8, anneal_steps=4, warmup_steps=1, eval_every=4, save_every=4),
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
        # every row but the repetition ones (covered by the pack test), so that CI covers them
        rows=tuple(n for n in ROW_NAMES if n not in REPETITION_ROWS),
        expected_minutes=3,
    ),
    # Sized for a 2-core CPU (measured: ~7k training tokens/s for this model in bf16): the whole
    # study's stages took 64.8 minutes at de2b759 (results/cpu/report.md), within
    # expected_minutes below. Task caps keep one evaluation of one model near a minute.
    "cpu": StudyPreset(
        name="cpu",
        vocab_size=8000,
        pretrain_preset="cpu",
        pretrain=PretrainOverrides(),
        mntp=PretrainOverrides(steps=100, warmup_steps=10, eval_every=50, save_every=50),
        # M = 500 x 4096 = 2.0M tokens (half the AR LM's 4.1M; 5x the short MNTP)
        adapt=Adaptation(
            steps=500, anneal_steps=100, warmup_steps=25, eval_every=100, save_every=100
        ),
        tasks=TaskCaps(max_length_tokens=512, max_queries=100, max_docs=500),
        pairs=PairsSettings(hard_negatives=3, max_per_task=1500),
        finetune=FinetuneSettings(
            steps=120,
            warmup_steps=12,
            lr=3e-4,
            global_batch_size=16,
            hard_negatives=1,
            max_query_length=64,
            max_doc_length=256,
            lora_r=0,
            # Pool the text only: with the instruction pooled too, a task-homogeneous batch's
            # short queries were nearly identical and the first cpu run stayed at chance.
            exclude_instruction=True,
        ),
        eval=EvalSettings(max_length=1024, batch_tokens=16384),
        seeds=(0, 1, 2),
        bootstrap=1000,
        # Estimated from the first edition's stage times: pretraining ~46 min (AR 1000 steps,
        # diffusion 1500, adaptations 500 + 500, MNTP 100), 18 fine-tunes ~32 min, evaluations
        # at 256 tokens ~15 min.
        expected_minutes=95,
        changes_after_looking=(
            "A first full run pooled the instruction tokens with the query (exclude_instruction "
            "off). Every fine-tuned row stayed at chance: in-batch accuracy about 1/32 and "
            "InfoNCE loss about ln 32 after 80 steps; `diffusion-bi` and `ar-mntp-bi` had been "
            "evaluated (all four suites near 0) when the run was stopped. Probes of 80-step "
            "fine-tunes on the two pretrained LMs (scale 20/50, lr 3e-5 to 1e-3) showed only "
            "the AR base leaving chance, and only with the instruction excluded from pooling "
            "(accuracy 0.19 vs 0.05). The study now excludes instruction tokens from pooling "
            "(the paper's own option) for every row, keeps scale 50 and lr 3e-4, and caps "
            "tasks at 100 queries / 500 documents (was 200 / 1000) and drops the "
            "`diffusion-causal-last` row (still available with --rows) to fit the time budget.",
            "Second edition, after the first edition's results (every fine-tuned row near "
            "chance) and the fine-tuning investigation on the finetune split: the package's "
            "fine-tuning defaults changed (zero-initialised residual output projections for the "
            "LMs we build, logit scale 5 -> 20 over the first 100 steps) and every row fine-tunes "
            "120 steps (was 80); evaluation stops at the models' 256 trained positions (was "
            "1024, past them); the rows are the second edition's (AR adapted to diffusion, "
            "compute-matched MNTP, diffusion from scratch for AR + M tokens).",
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
PRESETS["gpu-short"] = dataclasses.replace(
    PRESETS["cpu"],
    name="gpu-short",
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
