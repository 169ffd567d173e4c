"""Pretrain small masked-diffusion and autoregressive LMs, identical except for the objective.

Read top to bottom: presets and config -> data (tokenize, pack into fixed blocks) -> model ->
loss for one micro-batch -> held-out evaluation -> checkpoints -> the training loop -> output.

Both objectives share the tokenizer, the Llama-style architecture (Llama, not Qwen2, because
transformers 5.x forces Qwen2's own pre-tokenizer on ``qwen2`` directories), the data order, the
token budget, AdamW with warmup + cosine decay, gradient clipping and bf16 autocast. Only the
loss and the attention differ: diffusion is bidirectional and predicts masked tokens in place;
AR is causal and predicts the next token. ``mntp`` continues an AR model with bidirectional
attention and LLM2Vec's masked next-token prediction (the paper's AR baseline adaptation).

Multi-process data parallel: run under ``torchrun``; gloo on CPU, nccl on GPU. Every sequence of
a global batch gets its noise from its own generator (seeded by seed, step and its index in the
global batch), so results do not depend on how many processes share the batch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from diffembed.io import atomic_dir, atomic_write, write_json
from diffembed.model.backbone import CheckpointError, read_json
from diffembed.model.precision import autocast
from diffembed.model.tokenizer import load_tokenizer
from diffembed.provenance import provenance
from diffembed.train.objectives import (
    OBJECTIVES,
    ar_loss,
    diffusion_loss,
    mask_for_diffusion,
    mask_for_mntp,
    mntp_loss,
    sample_t,
)

logger = logging.getLogger(__name__)

EVAL_MASK_RATES = (0.15, 0.5, 0.85)
ELBO_GRID = 8  # t values for the held-out diffusion bound: (k + 0.5) / ELBO_GRID


# ============================================================================ configuration
RESIDUAL_INITS: tuple[str, ...] = ("zero", "normal")


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
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    bf16: bool = True
    compile: bool = False
    # objective details
    mask_eps: float = 1e-3  # diffusion: t ~ U(eps, 1)
    mntp_rate: float = 0.2
    # evaluation, logging, checkpoints
    eval_every: int = 10
    eval_tokens: int = 8 * 128  # held-out tokens (whole documents, never trained on)
    log_every: int = 1
    save_every: int = 10
    seed: int = 0

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.residual_init not in RESIDUAL_INITS:
            raise ValueError(
                f"residual_init must be one of {RESIDUAL_INITS}, got {self.residual_init!r}"
            )
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"hidden {self.hidden}, heads {self.heads}, kv_heads {self.kv_heads} do not divide"
            )
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch}"
            )
        if self.steps < 1 or self.seq_len < 8:
            raise ValueError("steps must be >= 1 and seq_len >= 8")

    def model_fields(self) -> dict[str, Any]:
        keys = (
            "layers",
            "hidden",
            "heads",
            "kv_heads",
            "ffn",
            "seq_len",
            "rope_theta",
            "residual_init",
        )
        return {k: getattr(self, k) for k in keys}

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


# Sized by measured throughput: smoke for tests; cpu about 10 minutes per objective on a 2-core
# CPU with avx512_bf16 but no AMX (measured ~6.5k AR / ~8k diffusion training tokens/s in bf16,
# eager, at 4 x 128); gpu <= 20 min on one H100.
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
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = dict(PRESETS[preset], objective=objective)
    if overrides_file is not None:
        overrides = read_json(overrides_file)
        known = {f.name for f in dataclasses.fields(PretrainConfig)}
        for key in overrides:
            if key not in known:
                raise ValueError(f"{overrides_file}: unknown field {key!r}; known: {sorted(known)}")
        if overrides.get("objective", objective) != objective:
            raise ValueError(
                f"{overrides_file}: objective {overrides['objective']!r} contradicts --objective {objective}"
            )
        values.update(overrides)
    config = PretrainConfig(**values)
    config.validate()
    return config


def config_hash(config: PretrainConfig) -> str:
    """Hash of the fields that define the run; log/eval cadence may change on resume."""
    exempt = {"eval_every", "log_every", "save_every", "compile"}
    data = {k: v for k, v in dataclasses.asdict(config).items() if k not in exempt}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ============================================================================ data
def read_corpus_texts(corpus: Path, split: str = "pretrain") -> list[tuple[str, str]]:
    """``(id, text)`` of every document of ``split`` in a corpus directory, sorted by id.

    Reads ``corpus/{split}.jsonl`` (``diffembed corpus build`` output) or, for a directory of
    plain ``.txt`` files, every file as one document.
    """
    path = corpus / f"{split}.jsonl"
    docs: list[tuple[str, str]] = []
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    docs.append((str(rec["id"]), str(rec["text"])))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{lineno}: not a corpus document ({e})") from None
    elif corpus.is_dir():
        docs = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(corpus.glob("*.txt"))]
    else:
        raise FileNotFoundError(f"{corpus}: not a corpus directory")
    docs = [(i, t) for i, t in docs if t.strip()]
    if not docs:
        raise ValueError(f"{corpus}: no {split} documents (looked for {path.name} or *.txt)")
    return sorted(docs)


def pack_documents(docs: list[np.ndarray], seq_len: int) -> np.ndarray:
    """Concatenate token arrays and cut them into full blocks: ``[N, seq_len]`` int32.

    The tail that does not fill a block is dropped (at most ``seq_len - 1`` tokens).
    """
    if not docs:
        return np.zeros((0, seq_len), dtype=np.int32)
    flat = np.concatenate(docs).astype(np.int32)
    n = len(flat) // seq_len
    return flat[: n * seq_len].reshape(n, seq_len)


def prepare_data(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, corpus: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Tokenize the pretrain split and pack it: ``(train [N, T], heldout [M, T], stats)``.

    Documents are shuffled by the seed; the first ones (about ``eval_tokens``) are held out
    whole, the rest are tokenized only as far as the token budget needs. Each document is
    ``<|bos|> text <|eos|>``.
    """
    docs = read_corpus_texts(corpus)
    order = np.random.default_rng(config.seed).permutation(len(docs))
    eos = tokenizer.eos_token_id
    need = config.steps * config.tokens_per_step
    held: list[np.ndarray] = []
    train: list[np.ndarray] = []
    held_tokens = train_tokens = 0
    chunk = 256
    for start in range(0, len(order), chunk):
        texts = [docs[i][1] for i in order[start : start + chunk]]
        for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]:
            arr = np.asarray([*ids, eos], dtype=np.int32)
            if held_tokens < config.eval_tokens + config.seq_len:
                held.append(arr)
                held_tokens += len(arr)
            else:
                train.append(arr)
                train_tokens += len(arr)
        if train_tokens >= need + config.seq_len:
            break
    train_blocks = pack_documents(train, config.seq_len)
    heldout = pack_documents(held, config.seq_len)
    if len(train_blocks) < config.global_batch:
        raise ValueError(
            f"{corpus}: the pretrain split gives {len(train_blocks)} training blocks of "
            f"{config.seq_len} tokens, fewer than one batch ({config.global_batch})"
        )
    if len(heldout) == 0:
        raise ValueError(
            f"{corpus}: too little text for a held-out block of {config.seq_len} tokens"
        )
    stats = {
        "documents": len(docs),
        "train_blocks": int(len(train_blocks)),
        "heldout_blocks": int(len(heldout)),
        "epochs": round(need / (len(train_blocks) * config.seq_len), 3),
    }
    if stats["epochs"] > 1:
        logger.warning(
            "token budget needs %.2f epochs of the tokenized pretrain split", stats["epochs"]
        )
    return train_blocks, heldout, stats


def batch_indices(step: int, n_blocks: int, global_batch: int, seed: int) -> np.ndarray:
    """Block indices of the global batch at ``step``: a fresh permutation per epoch: ``[GB]``."""
    per_epoch = n_blocks // global_batch
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    return perm[pos * global_batch : (pos + 1) * global_batch]


def sample_generators(seed: int, step: int, indices: range | list[int]) -> list[torch.Generator]:
    """One generator per sequence, keyed by (seed, step, index in the global batch)."""
    gens = []
    for i in indices:
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([seed, step, i]).generate_state(1)[0]))
        gens.append(g)
    return gens


# ============================================================================ model
def build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised Llama-style LM for ``config`` (seeded).

    With ``residual_init="zero"`` (the default, as in modded-nanoGPT) the output projections of
    the attention and MLP branches start at zero: each block starts as the identity and the
    untrained model's mean-pooled states are a bag of its token embeddings. Why: with every
    matrix N(0, 0.02), the branches' outputs at initialisation are near-uniform attention
    averages that every token and document share, they outweigh the token embeddings, and
    contrastive fine-tuning of such a model collapses (see ``diffembed.train.contrastive``).
    """
    if config.objective in ("diffusion", "mntp") and tokenizer.mask_token_id is None:
        raise ValueError(
            f"the tokenizer has no mask token, needed by the {config.objective} objective"
        )
    hf = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        intermediate_size=config.ffn,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        max_position_embeddings=config.seq_len,
        rope_theta=config.rope_theta,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    hf.is_causal = config.objective == "ar"
    hf.diffembed_objective = config.objective
    hf.mask_token_id = tokenizer.mask_token_id
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(hf)
    if config.residual_init == "zero":
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
    return model


def count_flops_per_token(model: LlamaForCausalLM, seq_len: int) -> tuple[float, float]:
    """Training FLOPs per token: ``(body, head)`` — 6 x matmul params, plus attention scores
    (6 * layers * seq_len * hidden: QK^T and AV, forward and backward); the LM head part is
    separate because diffusion computes it at masked positions only."""
    cfg = model.config
    body = sum(
        p.numel()
        for n, p in model.model.named_parameters()
        if "embed_tokens" not in n and p.dim() == 2
    )
    attention = 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size
    head = 6 * cfg.hidden_size * cfg.vocab_size
    return float(6 * body + attention), float(head)


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 2048
) -> float:
    """Measured dense matmul throughput of ``device`` in FLOP/s (best of a few runs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    reps = 20 if device.type == "cuda" else 3
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0))
    return best


# ============================================================================ loss of one micro-batch
class ScoredLM(torch.nn.Module):
    """An LM whose forward returns LM-head logits only where predictions are scored.

    ``forward(input_ids [B, T], select [B, T] bool | None) -> logits [M, V]`` for the M selected
    positions, or ``[B, T-1, V]`` (all but the last position) when ``select`` is None. Computing
    the head only where needed saves most of its cost for diffusion and MNTP. This is the module
    DDP wraps, so gradient synchronisation sees the whole computation.
    """

    def __init__(self, lm: LlamaForCausalLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.lm.model(input_ids=input_ids).last_hidden_state  # [B, T, H], post-norm
        if select is None:
            return self.lm.lm_head(hidden[:, :-1])
        return self.lm.lm_head(hidden[select])


def micro_batch_loss(
    scored: torch.nn.Module,
    tokens: torch.Tensor,
    gens: list[torch.Generator],
    config: PretrainConfig,
    mask_id: int | None,
    vocab_size: int,
    special_ids: tuple[int, ...] = (),
) -> tuple[torch.Tensor, int]:
    """Summed loss over the rows of a micro-batch and the number of LM-head positions computed.

    ``scored`` is a ``ScoredLM`` (possibly DDP-wrapped); ``tokens [B, T]``; ``gens`` one
    generator per row. The caller divides by the global batch size.
    """
    if config.objective == "ar":
        logits = scored(tokens)
        return ar_loss(logits, tokens), logits.shape[0] * logits.shape[1]
    if config.objective == "diffusion":
        t = sample_t(gens, config.mask_eps).to(tokens.device)
        noisy, masked = mask_for_diffusion(tokens, mask_id, t, gens)
        logits = scored(noisy, masked)
        t_rows = t.view(-1, 1).expand_as(masked)[masked]
        return diffusion_loss(logits, tokens[masked], t_rows, tokens.shape[1]), int(masked.sum())
    noisy, selected = mask_for_mntp(
        tokens, mask_id, vocab_size, gens, config.mntp_rate, special_ids
    )
    # Selected position i is predicted from the output at i - 1 (position 0 is never selected).
    previous = torch.zeros_like(selected)
    previous[:, :-1] = selected[:, 1:]
    logits = scored(noisy, previous)
    counts = selected.sum(dim=1, keepdim=True).clamp(min=1).expand_as(selected)[selected]
    return mntp_loss(logits, tokens[selected], counts.float()), int(selected.sum())


# ============================================================================ held-out evaluation
@torch.no_grad()
def evaluate(
    scored: ScoredLM, heldout: np.ndarray, config: PretrainConfig, device: torch.device
) -> dict[str, float]:
    """Held-out metrics in nats per token, with fixed noise (the same at every call).

    AR: cross-entropy and perplexity. Diffusion: masked-token cross-entropy at t = 0.15, 0.5,
    0.85, and the negative ELBO per token on an 8-point t grid (a bound on the NLL; its exp is a
    perplexity bound). MNTP: masked next-token cross-entropy.
    """
    scored.eval()
    cfg = scored.lm.config
    mask_id = cfg.mask_token_id
    mb = config.micro_batch
    batches = [
        torch.as_tensor(heldout[i : i + mb], dtype=torch.long, device=device)
        for i in range(0, len(heldout), mb)
    ]
    out: dict[str, float] = {}

    def diffusion_pass(rate: float, seed: int) -> tuple[float, float, int]:
        """(sum of masked CE, negative-ELBO sum, masked count) at masking rate ``rate``."""
        ce = bound = 0.0
        count = 0
        for j, b in enumerate(batches):
            t = torch.full((len(b),), rate, device=device)
            noisy, masked = mask_for_diffusion(
                b, mask_id, t, sample_generators(seed, j, range(len(b)))
            )
            logits = scored(noisy, masked).float()
            ce += float(torch.nn.functional.cross_entropy(logits, b[masked], reduction="sum"))
            bound += float(
                diffusion_loss(
                    logits, b[masked], t.view(-1, 1).expand_as(masked)[masked], b.shape[1]
                )
            )
            count += int(masked.sum())
        return ce, bound, count

    with autocast(device, config.bf16):
        if config.objective == "ar":
            out["ce"] = sum(float(ar_loss(scored(b), b)) for b in batches) / len(heldout)
            out["ppl"] = math.exp(min(out["ce"], 50))
        elif config.objective == "diffusion":
            for rate in EVAL_MASK_RATES:
                ce, _, count = diffusion_pass(rate, config.seed + 7)
                out[f"masked_ce@{rate}"] = ce / max(count, 1)
            grid = [
                diffusion_pass((k + 0.5) / ELBO_GRID, config.seed + 11 + k)[1]
                for k in range(ELBO_GRID)
            ]
            out["elbo_nll"] = sum(grid) / (ELBO_GRID * len(heldout))
            out["elbo_ppl"] = math.exp(min(out["elbo_nll"], 50))
        else:
            total = 0.0
            for j, b in enumerate(batches):
                gens = sample_generators(config.seed + 7, j, range(len(b)))
                total += float(
                    micro_batch_loss(scored, b, gens, config, mask_id, cfg.vocab_size)[0]
                )
            out["mntp_ce"] = total / len(heldout)
    scored.train()
    return out


# ============================================================================ checkpoints
def save_checkpoint(
    path: Path, model: LlamaForCausalLM, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Write model, optimizer tensors (safetensors) and trainer state (JSON) atomically."""
    with atomic_dir(path) as tmp:
        save_file(
            {
                k: v.detach().contiguous().cpu()
                for k, v in model.state_dict().items()
                if k != "lm_head.weight"
            },
            str(tmp / "model.safetensors"),
        )
        opt = optimizer.state_dict()
        tensors, scalars = {}, {}
        for pid, st in opt["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars[f"{pid}.{key}"] = value
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(
            tmp / "trainer.json",
            {**state, "optimizer_groups": opt["param_groups"], "optimizer_scalars": scalars},
        )


def load_checkpoint(
    path: Path, model: LlamaForCausalLM, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote; returns the trainer state."""
    state = read_json(path / "trainer.json")
    weights = load_file(str(path / "model.safetensors"))
    model.load_state_dict(weights, strict=False)
    missing = set(model.state_dict()) - set(weights) - {"lm_head.weight"}
    if missing:
        raise CheckpointError(f"{path / 'model.safetensors'}: missing {sorted(missing)[:5]}")
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = value
    for key, value in state.pop("optimizer_scalars").items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("optimizer_groups")})
    return state


def lr_at(step: int, config: PretrainConfig) -> float:
    """Learning rate at ``step``: linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


# ============================================================================ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want = (
        torch.device(device)
        if device
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if world == 1:
        return Dist(device=want)
    rank = int(os.environ["RANK"])
    if want.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        want = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want.type == "cuda" else "gloo")
    return Dist(rank=rank, world=world, device=want)


# ============================================================================ the loop
def pretrain(
    config: PretrainConfig,
    corpus: Path,
    tokenizer_dir: Path,
    out: Path,
    init: Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Train an LM and write a Hugging Face model directory to ``out``.

    Args:
        config: the run (``make_config``).
        corpus: corpus directory (``pretrain.jsonl``).
        tokenizer_dir: a tokenizer trained by ``diffembed tokenizer train``.
        out: output directory; ``out/checkpoint`` holds the last checkpoint while training.
        init: model directory to start from (required for ``mntp``: the AR model).
        resume: continue from ``out/checkpoint``.
        stop_after: stop after this many steps, as an interruption would (for tests).
        device: torch device; default cuda when available.
    """
    start_time = time.time()
    ctx = init_distributed(device)
    config.validate()
    per_rank = config.global_batch // ctx.world
    if config.global_batch % ctx.world or per_rank % config.micro_batch:
        raise ValueError(
            f"global_batch {config.global_batch} must split into {ctx.world} x micro-batches of {config.micro_batch}"
        )
    if config.objective == "mntp" and init is None:
        raise ValueError("the mntp objective continues an AR model: pass --init AR_DIR")
    ckpt = out / "checkpoint"
    if out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(
            f"{out}: exists and is not empty; pass --resume to continue or choose another --out"
        )
    if resume and not (ckpt / "trainer.json").exists():
        raise FileNotFoundError(f"{ckpt}: no checkpoint to resume from")

    tokenizer = load_tokenizer(tokenizer_dir)
    train_blocks, heldout, data_stats = prepare_data(config, tokenizer, corpus)
    model = _initial_model(config, tokenizer, init).to(ctx.device)
    model.train()
    flops_body, flops_head = count_flops_per_token(model, config.seq_len)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=ctx.device.type == "cuda",
    )
    state: dict[str, Any] = {
        "step": 0,
        "log": [],
        "config_hash": config_hash(config),
        "objective": config.objective,
    }
    if resume:
        saved = read_json(ckpt / "trainer.json")
        if saved.get("objective") != config.objective:
            raise CheckpointError(
                f"{ckpt / 'trainer.json'}: checkpoint objective {saved.get('objective')!r} is not {config.objective!r}"
            )
        if saved.get("config_hash") != state["config_hash"]:
            raise CheckpointError(
                f"{ckpt / 'trainer.json'}: checkpoint was made with another config (hash {saved.get('config_hash')} != {state['config_hash']})"
            )
        state = load_checkpoint(ckpt, model, optimizer)
        logger.info("resumed from %s at step %d", ckpt, state["step"])

    peak = measure_matmul_peak(ctx.device) if "peak_flops" not in state else state["peak_flops"]
    state["peak_flops"] = peak
    if config.compile:
        model.model.compile()  # in place: parameter names stay the same
    scored = ScoredLM(model)
    ddp = torch.nn.parallel.DistributedDataParallel(scored) if ctx.world > 1 else scored
    mask_id = tokenizer.mask_token_id
    special = tuple(
        i
        for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if i is not None
    )
    if ctx.main:
        logger.info(
            "model: %.2fM parameters; %d steps x %d tokens; matmul peak %.0f GFLOP/s",
            sum(p.numel() for p in model.parameters()) / 1e6,
            config.steps,
            config.tokens_per_step,
            peak / 1e9,
        )
    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        disable=not (show_progress and ctx.main),
        desc=f"pretrain {config.objective}",
    )
    window_t0, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    while state["step"] < config.steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        indices = batch_indices(step, len(train_blocks), config.global_batch, config.seed)
        mine = range(
            ctx.rank * per_rank, (ctx.rank + 1) * per_rank
        )  # positions in the global batch
        loss_sum, head_positions = 0.0, 0
        for m0 in range(0, per_rank, config.micro_batch):
            positions = list(mine[m0 : m0 + config.micro_batch])
            tokens = torch.as_tensor(
                train_blocks[indices[positions]], dtype=torch.long, device=ctx.device
            )
            gens = sample_generators(config.seed, step, positions)
            last = m0 + config.micro_batch >= per_rank
            sync = contextlib.nullcontext() if (last or ctx.world == 1) else ddp.no_sync()
            with sync, autocast(ctx.device, config.bf16):
                loss, heads = micro_batch_loss(
                    ddp, tokens, gens, config, mask_id, len(tokenizer), special
                )
                # DDP averages gradients over ranks, so scale by world / global batch.
                (loss * ctx.world / config.global_batch).backward()
            loss_sum += float(loss.detach())
            head_positions += heads
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        loss_value = _all_sum(loss_sum, ctx) / config.global_batch
        tokens_done = config.tokens_per_step
        window_tokens += tokens_done
        window_flops += flops_body * tokens_done + flops_head * _all_sum(head_positions, ctx)
        bar.update(1)
        row: dict[str, Any] = {}
        if step % config.log_every == 0 or step == config.steps:
            dt = time.perf_counter() - window_t0
            row = {
                "step": step,
                "tokens": step * tokens_done,
                "loss": round(loss_value, 5),
                "lr": lr_at(step - 1, config),
                "grad_norm": round(grad_norm, 4),
                "tokens_per_s": round(window_tokens / dt, 1),
                "mfu": round(window_flops / dt / (peak * ctx.world), 4),
            }
            window_t0, window_tokens, window_flops = time.perf_counter(), 0, 0.0
            bar.set_postfix(
                loss=f"{loss_value:.3f}",
                tok_s=f"{row['tokens_per_s']:.0f}",
                mfu=f"{row['mfu']:.2f}",
            )
            if ctx.main and bar.disable:
                logger.info(
                    "step %d/%d: loss %.4f, %.0f tokens/s, MFU %.3f",
                    step,
                    config.steps,
                    loss_value,
                    row["tokens_per_s"],
                    row["mfu"],
                )
        if step % config.eval_every == 0 or step == config.steps:
            row = {"step": step, "tokens": step * tokens_done, "loss": round(loss_value, 5), **row}
            row.update(
                {
                    f"eval_{k}": round(v, 5)
                    for k, v in evaluate(scored, heldout, config, ctx.device).items()
                }
            )
            if ctx.main:
                logger.info(
                    "step %d: %s", step, {k: v for k, v in row.items() if k.startswith("eval_")}
                )
        if row:
            state["log"].append(row)
        if ctx.main and (step % config.save_every == 0 or step == config.steps):
            save_checkpoint(ckpt, model, optimizer, state)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    if ctx.main:
        _write_log(out, state["log"])
        if state["step"] >= config.steps:
            _write_model(out, model, tokenizer, config, state, data_stats, start_time)
            _write_samples(out)
    if ctx.world > 1:
        dist.barrier()
    return out


def _initial_model(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, init: Path | None
) -> LlamaForCausalLM:
    if init is None:
        return build_model(config, tokenizer)
    from diffembed.model.backbone import inspect_backbone

    info = inspect_backbone(init)
    if config.objective == "mntp" and info.objective != "ar":
        raise ValueError(
            f"{init}: mntp starts from an AR model, this one's objective is {info.objective!r}"
        )
    hf = LlamaConfig.from_pretrained(str(init))
    if (hf.hidden_size, hf.num_hidden_layers, hf.vocab_size) != (
        config.hidden,
        config.layers,
        len(tokenizer),
    ):
        raise ValueError(f"{init}: model shape does not match the preset (hidden/layers/vocab)")
    hf.is_causal = config.objective == "ar"
    hf.diffembed_objective = config.objective
    hf.mask_token_id = tokenizer.mask_token_id
    model = LlamaForCausalLM.from_pretrained(str(init), config=hf, dtype=torch.float32)
    return model


def _all_sum(value: float, ctx: Dist) -> float:
    if ctx.world == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def _write_log(out: Path, log: list[dict[str, Any]]) -> None:
    """The training log as CSV and a PNG of the loss curves."""
    if not log:
        return
    fields = sorted({k for row in log for k in row}, key=lambda k: (k != "step", k != "tokens", k))
    with atomic_write(out / "train_log.csv") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log)
    plot_log(log, out / "train_log.png")


def plot_log(log: list[dict[str, Any]], path: Path) -> None:
    """Plot training loss and held-out metrics against tokens (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eval_keys = sorted({k for row in log for k in row if k.startswith("eval_") and "ppl" not in k})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in log if "loss" in r]
    axes[0].plot([r["tokens"] for r in rows], [r["loss"] for r in rows])
    axes[0].set(xlabel="tokens", ylabel="training loss (nats)", title="training loss")
    for key in eval_keys:
        pts = [(r["tokens"], r[key]) for r in log if key in r]
        axes[1].plot(*zip(*pts, strict=True), marker="o", label=key.removeprefix("eval_"))
    axes[1].set(xlabel="tokens", ylabel="nats / token", title="held-out")
    if eval_keys:
        axes[1].legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _write_model(
    out: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    config: PretrainConfig,
    state: dict[str, Any],
    data_stats: dict[str, Any],
    start_time: float,
) -> None:
    """Write the HF model directory files into ``out``; config.json last, so that a directory
    with a config.json is complete."""
    final = out / ".final.tmp"
    with atomic_dir(final) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    for f in sorted(final.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(f, out / f.name)
    final.rmdir()
    evals = [r for r in state["log"] if any(k.startswith("eval_") for k in r)]
    write_json(
        out / "pretrain.json",
        {
            "config": dataclasses.asdict(config),
            "data": data_stats,
            "tokens_trained": state["step"] * config.tokens_per_step,
            "parameters": sum(p.numel() for p in model.parameters()),
            "matmul_peak_gflops": round(state["peak_flops"] / 1e9, 1),
            "final_eval": evals[-1] if evals else None,
            "provenance": provenance(start_time),
        },
    )


SAMPLE_PROMPTS = ("The word", "A function that", "And the king said")


def _write_samples(out: Path, length: int = 32) -> None:
    """Greedy samples from the finished model (left to right for AR, iterative unmasking for
    diffusion; none for MNTP) for a few fixed prompts, added to ``pretrain.json`` as ``samples``, so
    the report shows what the model learned."""
    from diffembed.model.generate import generate_text

    info = read_json(out / "pretrain.json")
    if info["config"]["objective"] == "mntp":
        # A bidirectional next-token predictor has no sampling order of its own.
        info["samples"] = None
    else:
        info["samples"] = {p: generate_text(out, p, length=length) for p in SAMPLE_PROMPTS}
    write_json(out / "pretrain.json", info)


def iter_log(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a ``train_log.csv``."""
    with path.open(encoding="utf-8") as f:
        yield from csv.DictReader(f)
