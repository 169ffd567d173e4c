"""Pretrain small masked-diffusion and autoregressive LMs, identical except for the objective.

Read top to bottom: resume checks -> the training loop (checks, set-up, resume, one step,
logging and evaluation) -> output. The settings (``PretrainConfig``, presets, ``make_config``) are
in ``train.pretrain_config``; the data (tokenize, pack into fixed blocks) is in
``train.pretrain_data``; the model, the loss of one micro-batch, the held-out evaluation and
the checkpoint in ``train.pretrain_model``; process group in ``diffembed.distributed``, LR
schedule and log files in ``train.schedule`` and ``train.logs``; the CLI verb in
``diffembed.cli.train``.

Both objectives share the tokenizer, the Llama-style architecture (Llama, not Qwen2, because
transformers 5.x forces Qwen2's own pre-tokenizer on ``qwen2`` directories), the data order, the
token budget, AdamW with warmup + cosine decay, gradient clipping and bf16 autocast. Only the
loss and the attention differ: diffusion is bidirectional and predicts masked tokens in place;
AR is causal and predicts the next token. ``mntp`` continues an AR model with bidirectional
attention and LLM2Vec's masked next-token prediction (the paper's AR baseline adaptation).
``diffusion`` with ``init`` an AR model is DiffuLLaMA/Dream's adaptation: attention-mask
annealing and the AR shift (``train.adaptation``).

Multi-process data parallel: run under ``torchrun``; gloo on CPU, nccl on GPU. Every sequence of
a global batch gets its noise from its own generator (seeded by seed, step and its index in the
global batch), so results do not depend on how many processes share the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from diffembed.distributed import Dist, all_sum, barrier, init_distributed
from diffembed.errors import ConfigError, InputNotFoundError, OutputExistsError
from diffembed.io import atomic_dir, read_json, write_json
from diffembed.model.backbone import CheckpointError
from diffembed.model.precision import autocast, bf16_wanted
from diffembed.model.tokenizer import load_tokenizer
from diffembed.provenance import provenance
from diffembed.train.adaptation import anneal_mask, anneal_ratio, resolve_shift
from diffembed.train.logs import Panel, plot_log, write_log_csv

# PRESETS and make_config stay importable from here, where they lived before pretrain_config.
from diffembed.train.pretrain_config import PRESETS as PRESETS
from diffembed.train.pretrain_config import PretrainConfig, config_hash, decay_start, lr_at
from diffembed.train.pretrain_config import make_config as make_config
from diffembed.train.pretrain_data import batch_indices, prepare_data, sample_generators
from diffembed.train.pretrain_model import (
    ScoredLM,
    count_flops_per_token,
    evaluate,
    initial_model,
    load_checkpoint,
    measure_matmul_peak,
    micro_batch_loss,
    save_checkpoint,
    save_snapshot,
)

logger = logging.getLogger(__name__)


# ============================================================================ resuming
def _check_resume(saved: dict[str, Any], state: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint of another objective or config."""
    if saved.get("objective") != state["objective"]:
        raise CheckpointError(
            f"{where}: checkpoint objective {saved.get('objective')!r} is not {state['objective']!r}"
        )
    if saved.get("config_hash") != state["config_hash"]:
        raise CheckpointError(
            f"{where}: checkpoint was made with another config (hash {saved.get('config_hash')} != {state['config_hash']})"
        )


def _schedule_allows(saved: dict[str, Any], config: PretrainConfig) -> bool:
    """Whether a checkpoint's steps all ran at the rates ``config``'s schedule gives them:
    always for the schedule it was saved with; for another wsd length, only up to both
    schedules' decay starts."""
    old_steps, old_decay = saved.get("steps", config.steps), saved.get("decay_steps", 0)
    if (old_steps, old_decay) == (config.steps, config.decay_steps):
        return True
    old_start = old_steps - old_decay
    return saved["step"] <= min(old_start, decay_start(config))


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
    time_limit: float | None = None,
) -> Path:
    """Train an LM and write a Hugging Face model directory to ``out``.

    Args:
        config: the run (``make_config``).
        corpus: corpus directory (``pretrain.jsonl``) or a tokenized split (``.npz``,
            :mod:`diffembed.formats.tokens`).
        tokenizer_dir: a tokenizer trained by ``diffembed tokenizer train``.
        out: output directory; ``out/checkpoint`` holds the last checkpoint while training.
        init: model directory to start from (required for ``mntp``: the AR model).
        resume: continue from ``out/checkpoint``.
        stop_after: stop after this many steps, as an interruption would (for tests).
        device: torch device; default cuda when available.
        time_limit: seconds of training after which the run checkpoints and stops (to be
            resumed); SIGTERM does the same at the end of the current step.
    """
    start_time = time.time()
    ctx = init_distributed(device)
    try:
        _check_run(config, ctx, out, init, resume)
        config = resolve_shift(config, init)
        run = _Run(config, ctx, out, load_tokenizer(tokenizer_dir), corpus, init)
        if resume:
            run.resume()
        run.begin_segment(start_time)
        run.prepare()
        with _stop_on_sigterm(run):
            run.loop(stop_after, show_progress, time_limit)
        if ctx.main:
            run.write_outputs(start_time)
        barrier(ctx)
    finally:
        ctx.close()
    return out


def _check_run(
    config: PretrainConfig, ctx: Dist, out: Path, init: Path | None, resume: bool
) -> None:
    """Refuse a run that cannot start: a bad config or split, mntp without ``init``, a used
    ``out`` without ``resume``, or ``resume`` without a checkpoint."""
    config.validate()
    per_rank = config.global_batch // ctx.world
    if config.global_batch % ctx.world or per_rank % config.micro_batch:
        raise ConfigError(
            f"global_batch {config.global_batch} must split into {ctx.world} x micro-batches of {config.micro_batch}"
        )
    if config.objective == "mntp" and init is None:
        raise ConfigError("the mntp objective continues an AR model: pass --init AR_DIR")
    if out.exists() and any(out.iterdir()) and not resume:
        raise OutputExistsError(
            f"{out}: exists and is not empty; pass --resume to continue or choose another --out"
        )
    if resume and not (out / "checkpoint" / "trainer.json").exists():
        raise InputNotFoundError(f"{out / 'checkpoint'}: no checkpoint to resume from")


@contextlib.contextmanager
def _stop_on_sigterm(run: _Run) -> Iterator[None]:
    """While training, SIGTERM asks the loop to checkpoint and stop after the current step
    (only the main thread can install a handler; elsewhere, SIGTERM keeps its default)."""
    run.stop_requested = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: Any) -> None:
        run.stop_requested = True

    previous = signal.signal(signal.SIGTERM, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Window:
    """Tokens and FLOPs since the last log line, for tokens/s and MFU."""

    def __init__(self) -> None:
        self.t0, self.tokens, self.flops = time.perf_counter(), 0, 0.0

    def add(self, tokens: int, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops


class _Run:
    """One pretraining run: the data, model, optimizer and state, and its steps."""

    def __init__(
        self,
        config: PretrainConfig,
        ctx: Dist,
        out: Path,
        tokenizer: PreTrainedTokenizerBase,
        corpus: Path,
        init: Path | None,
    ) -> None:
        self.config, self.ctx, self.out, self.tokenizer = config, ctx, out, tokenizer
        self.ckpt, self.init = out / "checkpoint", init
        self.stop_requested = False  # set by SIGTERM while training (_stop_on_sigterm)
        self.train_blocks, self.heldout, self.data_stats = prepare_data(config, tokenizer, corpus)
        self.model = initial_model(config, tokenizer, init).to(ctx.device)
        self.model.train()
        self.flops_body, self.flops_head = count_flops_per_token(self.model, config.seq_len)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            fused=ctx.device.type == "cuda",
        )
        self.state: dict[str, Any] = {
            "step": 0,
            "log": [],
            "config_hash": config_hash(config),
            "objective": config.objective,
        }

    def resume(self) -> None:
        """Continue from ``out/checkpoint`` (same objective and config). A wsd run may come back
        with another ``steps`` / ``decay_steps`` (an extension): it continues from the last
        checkpoint that every step of which ran as the new schedule runs them, i.e. the
        checkpoint, or ``out/checkpoint-stable`` when the checkpoint is already past the old
        schedule's decay start."""
        ckpt = self.ckpt
        saved = read_json(ckpt / "trainer.json", CheckpointError)
        _check_resume(saved, self.state, ckpt / "trainer.json")
        if not _schedule_allows(saved, self.config):
            stable = self.out / "checkpoint-stable"
            if not (stable / "trainer.json").exists() or not _schedule_allows(
                read_json(stable / "trainer.json", CheckpointError), self.config
            ):
                raise CheckpointError(
                    f"{ckpt}: step {saved['step']} ran under the decay of a {saved['steps']}-step "
                    f"schedule, and no stable-phase checkpoint ({stable}) fits the new one "
                    f"({self.config.steps} steps, decay from step {decay_start(self.config)})"
                )
            logger.warning(
                "extending the run: continuing from %s (step %d), before the old schedule's decay",
                stable,
                read_json(stable / "trainer.json", CheckpointError)["step"],
            )
            ckpt = stable
        self.state = load_checkpoint(ckpt, self.model, self.optimizer)
        logger.info("resumed from %s at step %d", ckpt, self.state["step"])

    def begin_segment(self, start_time: float) -> None:
        """Record this process's stretch of the run (steps, commit, machine, wall time) in the
        state, so the finished model lists every resumed segment."""
        step = self.state["step"]
        segments = [s for s in self.state.get("segments", []) if s["start_step"] < step]
        segment = {"start_step": step, "end_step": step, "data": self.data_stats}
        self.state["segments"] = [*segments, segment]
        if self.ctx.main:
            logger.info("segment from step %d; data: %s", step, self.data_stats)
        self.start_time = start_time

    def save(self, step: int) -> None:
        """Checkpoint (and, for wsd, the stable-phase checkpoint at the decay start)."""
        config, state = self.config, self.state
        state["segments"][-1].update(
            end_step=step,
            tokens=(step - state["segments"][-1]["start_step"]) * config.tokens_per_step,
            **provenance(self.start_time),
        )
        state["steps"], state["decay_steps"] = config.steps, config.decay_steps
        compact = config.compact_checkpoint
        save_checkpoint(self.ckpt, self.model, self.optimizer, state, compact)
        if config.schedule == "wsd" and config.decay_steps and step == decay_start(config):
            save_checkpoint(
                self.out / "checkpoint-stable", self.model, self.optimizer, state, compact
            )

    def prepare(self) -> None:
        """Measure the matmul peak (each segment: a resumed run may be on another machine),
        compile, wrap for DDP."""
        config, ctx, tokenizer = self.config, self.ctx, self.tokenizer
        self.state["peak_flops"] = measure_matmul_peak(ctx.device)
        for segment in self.state.get("segments", [])[-1:]:  # begin_segment's, when recorded
            segment["matmul_peak_gflops"] = round(self.state["peak_flops"] / 1e9, 1)
        self.peak = self.state["peak_flops"]
        self.scored = ScoredLM(self.model)
        if config.compile:
            self.scored.compile_loss()  # in place: parameter names stay the same
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(self.scored) if ctx.world > 1 else self.scored
        )
        self.mask_id, self.vocab = tokenizer.mask_token_id, len(tokenizer)
        self.special = tuple(
            i
            for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
            if i is not None
        )
        if ctx.main:
            logger.info(
                "model: %.2fM parameters; %d steps x %d tokens; matmul peak %.0f GFLOP/s",
                sum(p.numel() for p in self.model.parameters()) / 1e6,
                config.steps,
                config.tokens_per_step,
                self.peak / 1e9,
            )

    def loop(
        self, stop_after: int | None, show_progress: bool, time_limit: float | None = None
    ) -> None:
        """Train from the current step to ``config.steps`` (or ``stop_after``, or until
        ``time_limit`` seconds or SIGTERM, then with a checkpoint): log, evaluate and
        checkpoint on their cadences."""
        config, ctx, state = self.config, self.ctx, self.state
        deadline = None if time_limit is None else time.monotonic() + time_limit
        bar = tqdm(
            total=config.steps,
            initial=state["step"],
            disable=not (show_progress and ctx.main),
            desc=f"pretrain {config.objective}",
        )
        window = _Window()
        while state["step"] < config.steps:
            loss_sum, grad_norm, head_positions = self.train_step(state["step"])
            state["step"] = step = state["step"] + 1
            loss_value = all_sum(loss_sum, ctx) / config.global_batch
            heads = all_sum(head_positions, ctx)
            window.add(
                config.tokens_per_step,
                self.flops_body * config.tokens_per_step + self.flops_head * heads,
            )
            bar.update(1)
            row: dict[str, Any] = {}
            if step % config.log_every == 0 or step == config.steps:
                row = self.log_row(step, loss_value, grad_norm, window, bar)
                window = _Window()
            if step % config.eval_every == 0 or step == config.steps:
                row = self.eval_row(step, loss_value, row)
            if row:
                state["log"].append(row)
            saved = (
                step % config.save_every == 0
                or step == config.steps
                or (config.schedule == "wsd" and step == decay_start(config))
            )
            if ctx.main and saved:
                self.save(step)
            if config.snapshot_every and step % config.snapshot_every == 0:
                self.snapshot(step, row)
            if stop_after is not None and step >= stop_after:
                break
            if self.should_stop(deadline):
                if ctx.main and not saved:
                    self.save(step)
                logger.warning("stopped at step %d with a checkpoint; continue with --resume", step)
                break
        bar.close()

    def snapshot(self, step: int, row: dict[str, Any]) -> None:
        """The weights at ``step`` as ``out/snapshots/step-N`` with the step's tokens, learning
        rate and held-out metrics (evaluated now unless ``row`` has them)."""
        if not any(k.startswith("eval_") for k in row):
            row = self.eval_row(step, row.get("loss", float("nan")), {})  # every rank
        if not self.ctx.main:
            return
        info = {"step": step, "tokens": step * self.config.tokens_per_step}
        info["lr"] = lr_at(step - 1, self.config)
        info.update({k: v for k, v in row.items() if k.startswith("eval_")})
        path = self.out / "snapshots" / f"step-{step:07d}"
        save_snapshot(path, self.model, self.tokenizer, info)

    def should_stop(self, deadline: float | None) -> bool:
        """Whether the time limit is reached or SIGTERM arrived (on any process)."""
        stop = self.stop_requested or (deadline is not None and time.monotonic() >= deadline)
        if self.ctx.world > 1:  # every process must leave the loop at the same step
            stop = all_sum(float(stop), self.ctx) > 0
        return stop

    def train_step(self, step: int) -> tuple[float, float, int]:
        """One optimizer step on the global batch of ``step``: ``(this rank's summed loss,
        gradient norm, LM-head positions computed)``."""
        config, ctx = self.config, self.ctx
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        indices = batch_indices(step, len(self.train_blocks), config.global_batch, config.seed)
        per_rank = config.global_batch // ctx.world
        mine = range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)  # positions in the batch
        loss_sum, head_positions = 0.0, 0
        implementation = self.model.config._attn_implementation
        attention = anneal_mask(
            step, config.anneal_steps, config.seq_len, config.seed, implementation, ctx.device
        )
        for m0 in range(0, per_rank, config.micro_batch):
            positions = list(mine[m0 : m0 + config.micro_batch])
            tokens = torch.as_tensor(
                self.train_blocks[indices[positions]], dtype=torch.long, device=ctx.device
            )
            gens = sample_generators(config.seed, step, positions)
            last = m0 + config.micro_batch >= per_rank
            sync = contextlib.nullcontext() if (last or ctx.world == 1) else self.ddp.no_sync()
            with sync, autocast(ctx.device, bf16_wanted(config.precision, ctx.device)):
                loss, heads = micro_batch_loss(
                    self.ddp,
                    tokens,
                    gens,
                    config,
                    self.mask_id,
                    self.vocab,
                    self.special,
                    attention,
                )
                # DDP averages gradients over ranks, so scale by world / global batch.
                (loss * ctx.world / config.global_batch).backward()
            loss_sum += float(loss.detach())
            head_positions += heads
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, grad_norm, head_positions

    def log_row(
        self, step: int, loss_value: float, grad_norm: float, window: _Window, bar: Any
    ) -> dict[str, Any]:
        """The log row of ``step``: loss, learning rate, gradient norm, tokens/s and MFU over
        the window since the last row; shown on the progress bar or logged."""
        config = self.config
        dt = time.perf_counter() - window.t0
        row = {
            "step": step,
            "tokens": step * config.tokens_per_step,
            "loss": round(loss_value, 5),
            "lr": lr_at(step - 1, config),
            "grad_norm": round(grad_norm, 4),
            "tokens_per_s": round(window.tokens / dt, 1),
            "mfu": round(window.flops / dt / (self.peak * self.ctx.world), 4),
        }
        if config.anneal_steps:
            row["attention_open"] = anneal_ratio(step - 1, config.anneal_steps)
        bar.set_postfix(
            loss=f"{loss_value:.3f}",
            tok_s=f"{row['tokens_per_s']:.0f}",
            mfu=f"{row['mfu']:.2f}",
        )
        if self.ctx.main and bar.disable:
            logger.info(
                "step %d/%d: loss %.4f, %.0f tokens/s, MFU %.3f",
                step,
                config.steps,
                loss_value,
                row["tokens_per_s"],
                row["mfu"],
            )
        return row

    def eval_row(self, step: int, loss_value: float, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` (or a new one) with the held-out metrics at ``step``."""
        tokens = step * self.config.tokens_per_step
        row = {"step": step, "tokens": tokens, "loss": round(loss_value, 5), **row}
        metrics = evaluate(self.scored, self.heldout, self.config, self.ctx.device)
        row.update({f"eval_{k}": round(v, 5) for k, v in metrics.items()})
        if self.ctx.main:
            logger.info(
                "step %d: %s", step, {k: v for k, v in row.items() if k.startswith("eval_")}
            )
        return row

    def write_outputs(self, start_time: float) -> None:
        """The log (CSV + PNG) and, once every step is done, the model and its samples."""
        _write_log(self.out, self.state["log"])
        if self.state["step"] >= self.config.steps:
            _write_model(
                self.out,
                self.model,
                self.tokenizer,
                self.config,
                self.state,
                self.data_stats,
                start_time,
                self.init,
            )
            _write_samples(self.out)


# ============================================================================ output
def _write_log(out: Path, log: list[dict[str, Any]]) -> None:
    """The training log as CSV and a PNG of the loss curves."""
    if not log:
        return
    fields = sorted({k for row in log for k in row}, key=lambda k: (k != "step", k != "tokens", k))
    write_log_csv(out / "train_log.csv", log, fields, lineterminator="\r\n")
    plot_log_png(log, out / "train_log.png")


def plot_log_png(log: list[dict[str, Any]], path: Path) -> None:
    """Plot training loss and held-out metrics against tokens (PNG)."""
    eval_keys = sorted({k for row in log for k in row if k.startswith("eval_") and "ppl" not in k})
    panels = (
        Panel("training loss", ("loss",), "training loss (nats)"),
        Panel(
            "held-out",
            tuple(eval_keys),
            "nats / token",
            labels=tuple(k.removeprefix("eval_") for k in eval_keys),
            marker="o",
        ),
    )
    plot_log(log, path, panels, x="tokens", figsize=(11, 4), dpi=110)


def _write_model(
    out: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    config: PretrainConfig,
    state: dict[str, Any],
    data_stats: dict[str, Any],
    start_time: float,
    init: Path | None = None,
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
            "init": str(init) if init is not None else None,
            "data": data_stats,
            "tokens_trained": state["step"] * config.tokens_per_step,
            # every process that trained it: steps, tokens, commit, machine, wall time
            "segments": state.get("segments", []),
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

    info = read_json(out / "pretrain.json", CheckpointError)
    if info["config"]["objective"] == "mntp":
        # A bidirectional next-token predictor has no sampling order of its own.
        info["samples"] = None
    else:
        # At most what the model's positions leave after the prompt (tiny test models have 32).
        tokenizer, positions = load_tokenizer(out), info["config"]["seq_len"]
        info["samples"] = {
            p: generate_text(out, p, length=min(length, positions - len(tokenizer(p)["input_ids"])))
            for p in SAMPLE_PROMPTS
        }
    write_json(out / "pretrain.json", info)
