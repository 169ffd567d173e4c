"""Settings of a fine-tuning run, each written once: ``FinetuneConfig``'s fields carry the help
text and argparse settings from which ``diffembed.cli.train`` generates the ``finetune`` options
(so the CLI and the dataclass cannot drift apart)."""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffembed.errors import ConfigError
from diffembed.formats.pairs import parse_columns
from diffembed.model.backbone import ATTENTIONS
from diffembed.model.pooling import POOLINGS
from diffembed.model.precision import PRECISIONS, precision_from_bf16
from diffembed.train.matryoshka import parse_dims


def parse_scale(value: str) -> float | None:
    """``--initial-scale``: a number, 0 meaning no warm-up (None)."""
    scale = float(value)
    return None if scale == 0 else scale


parse_scale.__name__ = "scale"  # argparse names the type in its error: "invalid scale value"


def _opt(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its CLI option: ``help`` (``{default}`` is filled in) and argparse
    settings (``action``: ``store_true``/``store_false``/``bool`` for ``--x/--no-x``; ``flag``;
    ``choices``; ``type``; ``nargs``, ``const``, ``metavar``; ``required``)."""
    if cli.get("required"):
        return field(metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


# Settings that must match between a checkpoint and the run resuming from it.
RESUME_KEYS: tuple[str, ...] = (
    "model",
    "pairs_sha256",
    "attention",
    "pooling",
    "lora_r",
    "lora_dropout",
    "global_batch_size",
    "hard_negatives",
    "max_query_length",
    "max_doc_length",
    "exclude_instruction",
    "seed",
    "scale",
    "initial_scale",
    "scale_warmup_steps",
    "matryoshka_dims",
)


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (the CLI options, same names with ``_``).

    Lengths are in tokens (instruction and special tokens included); ``lr`` is the peak learning
    rate of AdamW; ``scale`` multiplies cosine similarities (1 / temperature).

    The similarity scale warms up from ``initial_scale`` (5) to ``scale`` (20) over
    ``scale_warmup_steps``; the paper's constant 50 is ``scale=50, initial_scale=None``. Why:
    a model whose embeddings do not yet rank well pays at scale 50 for every random similarity
    difference (loss 9-17 against ln(32) = 3.5 for chance on our pairs), and the cheapest way
    down is to make every embedding alike (one shared vector added to every token); runs that
    started at 50 collapsed within 3-20 steps (mean cosine between documents 0.2 -> 0.95+) and
    stayed at chance. At scale 5 random similarities cost little and the loss follows
    relevance. Ending at 20 rather than 50 gave the same held-out accuracy on our pairs with
    documents kept further apart (mean cosine 0.39 vs 0.71 after 300 steps).
    """

    model: Path = _opt(None, "input model directory (an LM or an embedding model)", required=True)
    pairs: Path = _opt(
        None,
        "training pairs, JSONL {query, positive, negatives, instruction, task}",
        required=True,
    )
    out: Path = _opt(None, "output embedding-model directory", required=True)
    overwrite: bool = _opt(
        False,
        "replace an existing --out directory (when training ends, atomically)",
        action="store_true",
    )
    instruction: str | None = _opt(
        None,
        "one instruction for every pair of a file without them, e.g. sentence-transformers "
        "anchor/positive/negative columns (task: 'query' unless a column gives it)",
    )
    columns: str | None = _opt(
        None,
        "map the pairs file's columns onto the fields, e.g. "
        "query=question,positive=answer,negatives=neg1+neg2",
        metavar="FIELD=COLUMN,...",
    )
    attention: str | None = _opt(
        None,
        "attention during and after training (default: the model's own)",
        choices=ATTENTIONS,
    )
    pooling: str | None = _opt(
        None, "pooling (default: the model's own; mean for a bare LM)", choices=POOLINGS
    )
    exclude_instruction: bool = _opt(
        False, "pool over the query text only, not its instruction", action="store_true"
    )
    mask_tokens: int | None = _opt(
        None,
        "with --pooling mask: K mask tokens read out per text (K > 1: multi-vector, scored by "
        "MaxSim; default: the model's own, else 1)",
    )
    readout_prompt: str | None = _opt(
        None,
        "with --pooling mask: the prompt before the masks (default: the model's own, else "
        "'\\nThis text in one word:' for K = 1, '... in a few words:' for more)",
    )
    lora_r: int = _opt(
        16,
        "LoRA rank on q/k/v/o/gate/up/down projections, alpha = 2r; "
        "0 = full fine-tuning (default: {default})",
    )
    lora_dropout: float = _opt(0.05, "LoRA dropout (default: {default})")
    lr: float = _opt(1e-4, "peak learning rate, AdamW (default: {default})")
    weight_decay: float = _opt(0.0, "AdamW weight decay on matrices (default: {default})")
    max_grad_norm: float = _opt(1.0, "gradient-norm clipping, 0 = off (default: {default})")
    warmup_steps: int = _opt(
        100, "linear warm-up steps, then linear decay to 0 (default: {default})"
    )
    steps: int = _opt(1000, "optimizer steps (default: {default})")
    global_batch_size: int = _opt(
        16,
        "pairs per step over all processes; every batch is of one task (default: {default})",
    )
    hard_negatives: int = _opt(1, "hard negatives per query (default: {default})")
    max_query_length: int = _opt(
        512, "max tokens per query, instruction included (default: {default})"
    )
    max_doc_length: int = _opt(512, "max tokens per document (default: {default})")
    scale: float = _opt(20.0, "cosine-similarity scale = 1 / temperature (default: {default})")
    initial_scale: float | None = _opt(
        5.0,
        "similarity scale at step 0, raised geometrically to --scale over "
        "--scale-warmup-steps; 0 = no warm-up (default: {default})",
        type=parse_scale,
    )
    scale_warmup_steps: int = _opt(100, "steps of the scale warm-up (default: {default})")
    matryoshka_dims: str | None = _opt(
        None,
        "Matryoshka: also train the first D dimensions of the vectors (renormalised) for each "
        "D, e.g. 32,64; the loss is the mean of the full and each prefix's InfoNCE, and the "
        "saved model records the lengths (default: off)",
        metavar="D1,D2,...",
    )
    gradient_checkpointing: bool = _opt(
        False,
        "recompute activations in the backward pass (less memory)",
        action="store_true",
    )
    precision: str = _opt(
        "bf16",
        "compute precision: bf16 autocast with fp32 master weights, fp32, or auto (bf16 where "
        "the hardware has it fast) (default: {default})",
        choices=PRECISIONS,
    )
    # deprecated: the boolean name of ``precision`` before (True: "bf16", False: "fp32");
    # ``--bf16``/``--no-bf16`` still set it (cli.train)
    bf16: InitVar[bool | None] = None
    seed: int = _opt(0, "seed of data order, negatives, LoRA init and dropout (default: {default})")
    mini_batch: int = _opt(
        0,
        "GradCache: embed this many texts per forward; same loss and gradients "
        "as the full batch, less memory (default: 0 = off)",
    )
    save_every: int = _opt(0, "write a checkpoint every N steps (default: 0 = never)")
    keep_checkpoints: int = _opt(2, "checkpoints kept, newest first (default: {default})")
    checkpoint_dir: Path | None = _opt(
        None, "where checkpoints go (default: OUT-checkpoints beside --out)"
    )
    resume: str | None = _opt(
        None,
        "resume from the newest checkpoint, or from CHECKPOINT (a step-N dir)",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
    )
    device: str = _opt("auto", "cpu, cuda, cuda:N, or auto (cuda:LOCAL_RANK if available; default)")
    log_every: int = _opt(10, "log a line every N steps (default: {default})")
    show_progress: bool = _opt(
        True, "hide the progress bar", action="store_false", flag="--no-progress"
    )

    def __post_init__(self, bf16: bool | None) -> None:
        if bf16 is not None:
            self.precision = precision_from_bf16(bf16, "FinetuneConfig")
        self.model, self.pairs, self.out = Path(self.model), Path(self.pairs), Path(self.out)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)
        parse_columns(self.columns)  # PairsError (a ValueError) naming --columns
        dims = parse_dims(self.matryoshka_dims)  # ConfigError naming --matryoshka-dims
        self.matryoshka_dims = ",".join(map(str, dims)) or None  # one spelling per setting
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.attention in (None, *ATTENTIONS), f"attention must be one of {ATTENTIONS}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.pooling in (None, *POOLINGS), f"pooling must be one of {POOLINGS}"),
            (
                self.mask_tokens is None or self.mask_tokens >= 1,
                "mask_tokens must be >= 1",
            ),
            (self.lora_r >= 0, "lora_r must be >= 0 (0 = full fine-tuning)"),
            (0.0 <= self.lora_dropout < 1.0, "lora_dropout must be in [0, 1)"),
            (self.lr > 0, "lr must be > 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.global_batch_size >= 1, "global_batch_size must be >= 1"),
            (self.hard_negatives >= 0, "hard_negatives must be >= 0"),
            (self.max_query_length >= 2, "max_query_length must be >= 2"),
            (self.max_doc_length >= 2, "max_doc_length must be >= 2"),
            (self.scale > 0, "scale must be > 0"),
            (
                self.initial_scale is None or self.initial_scale > 0,
                "initial_scale must be > 0",
            ),
            (self.scale_warmup_steps >= 0, "scale_warmup_steps must be >= 0"),
            (self.mini_batch >= 0, "mini_batch must be >= 0 (0 = no GradCache)"),
            (self.save_every >= 0, "save_every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 = no clipping)"),
            (self.log_every >= 1, "log_every must be >= 1"),
        ]

    @property
    def matryoshka(self) -> tuple[int, ...]:
        """``matryoshka_dims`` as sorted lengths (empty: no Matryoshka loss)."""
        return parse_dims(self.matryoshka_dims)

    @property
    def checkpoints(self) -> Path:
        """Where checkpoints go: ``checkpoint_dir`` or ``OUT-checkpoints`` beside ``out``."""
        return self.checkpoint_dir or self.out.with_name(self.out.name + "-checkpoints")

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-able values (paths as strings)."""
        out = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
