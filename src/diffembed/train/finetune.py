"""Contrastive fine-tuning of an embedding model: the DiffEmbed recipe.

``diffembed finetune --model DIR --pairs FILE --out DIR`` trains a backbone on
``(query, positive, hard negatives)`` pairs (see ``diffembed.formats.pairs``) with InfoNCE on cosine
similarity, LoRA (or full fine-tuning), bf16 autocast with fp32 master weights, optional gradient
checkpointing and GradCache, and data parallelism across processes (``torchrun``; gloo on CPU,
NCCL on GPU). The output directory is a complete embedding model written by ``Embedder.save``
(sentence-transformers layout) with LoRA merged into the weights and one prompt per task name;
``OUT/training/`` holds the per-step log (CSV), its plot (PNG) and the run's settings.

Read top to bottom: ``Trainer`` (set-up, one step, checkpoints, the loop, the output) ->
``finetune(config)``. The settings are ``train.finetune_config.FinetuneConfig`` (each field
once, with the help text the CLI shows); the loss, GradCache and the collapse monitor are in
``train.contrastive``, the batches in ``train.batching``, process group, checkpoints and logs
in ``diffembed.distributed``, ``train.checkpoint`` and ``train.logs``; the CLI verb is
``diffembed.cli.train``.

How a step works. The global batch (``G`` pairs, all of one task) is the same on every rank;
rank ``r`` of ``W`` embeds queries ``r*G/W ... (r+1)*G/W - 1`` with their instruction and their
documents (positive first, then ``k`` hard negatives). Document embeddings are all-gathered with
autograd (``gather_with_grad``), so each query is scored against all
``G*(1+k)`` documents of the global batch and gradients reach the rank that computed each
document. Each rank's loss is the mean over its queries; gradients are summed across ranks and
divided by ``W``, which is the gradient of the mean loss over the global batch: ``W`` processes
x ``G/W`` pairs compute what one process computes with ``G`` pairs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffembed.distributed import (
    all_sum,
    average_gradients,
    barrier,
    broadcast_from_main,
    init_distributed,
    mean_over_ranks,
)
from diffembed.errors import ConfigError
from diffembed.formats.pairs import Pair, read_pairs
from diffembed.io import atomic_dir, read_json, write_json
from diffembed.model.backbone import CheckpointError
from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import write_trained_dims
from diffembed.model.precision import autocast, bf16_wanted
from diffembed.model.readout import readout_settings
from diffembed.train.batching import (
    BatchPlan,
    LocalBatch,
    layout_batch,
    pairs_digest,
    task_prompts,
    tokenize_batch,
)
from diffembed.train.checkpoint import (
    OptimizerFiles,
    check_output_dir,
    clean_checkpoint_debris,
    json_safe,
    list_checkpoints,
    optimizer_files,
    prune_checkpoints,
    restore_optimizer,
    step_checkpoint,
)
from diffembed.train.contrastive import (
    CollapseMonitor,
    gather_with_grad,
    grad_cache_step,
    in_batch_accuracy,
    mean_offdiag_cosine,
    scale_factor,
)
from diffembed.train.finetune_config import RESUME_KEYS, FinetuneConfig
from diffembed.train.logs import Panel, plot_log, write_log_csv
from diffembed.train.matryoshka import check_dims, matryoshka_info_nce_loss
from diffembed.train.rng import gather_rng_states, restore_rng_states, seed_all
from diffembed.train.schedule import lr_factor

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOG_COLUMNS: tuple[str, ...] = (
    "step",
    "loss",
    "accuracy",
    "doc_cosine",
    "scale",
    "lr",
    "grad_norm",
    "tokens",
    "tokens_per_s",
    "seconds",
)
LOG_PANELS: tuple[Panel, ...] = (
    Panel("InfoNCE loss", ("loss",)),
    Panel("in-batch accuracy", ("accuracy",)),
    Panel("mean cosine between documents", ("doc_cosine",)),
    Panel("similarity scale", ("scale",)),
    Panel("learning rate", ("lr",)),
    Panel("tokens / s", ("tokens_per_s",)),
)
CHECKPOINT_FORMAT = 1


class StepResult(NamedTuple):
    """What one forward/backward pass measured: loss and in-batch accuracy (tensors inside the
    step, floats once averaged over ranks) and the mean cosine between the global batch's
    documents (the collapse meter)."""

    loss: Any
    accuracy: Any
    doc_cosine: float


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Sets up and runs one fine-tuning run (see the module docstring for the step).

    Joins the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1) unless one is
    already initialised; gloo on CPU, NCCL on CUDA.
    """

    def __init__(self, config: FinetuneConfig, pairs: list[Pair] | None = None) -> None:
        self.config = config
        self.ctx = init_distributed(config.device)
        self.rank, self.world_size, self.device = self.ctx.rank, self.ctx.world, self.ctx.device
        if config.global_batch_size % self.world_size:
            raise ConfigError(
                f"global_batch_size {config.global_batch_size} is not divisible by the "
                f"{self.world_size} processes"
            )
        self.local_batch_size = config.global_batch_size // self.world_size
        self.pairs = (
            pairs
            if pairs is not None
            else read_pairs(config.pairs, config.instruction, config.columns)
        )
        self.pairs_sha256 = pairs_digest(self.pairs)
        self.plan = BatchPlan([p.task for p in self.pairs], config.global_batch_size, config.seed)
        self.prompts = task_prompts(self.pairs)

        torch.manual_seed(config.seed)  # identical initial LoRA weights on every rank
        self._load_model()
        self._make_trainable()
        seed_all(config.seed + 1 + self.rank, self.device)  # dropout streams differ per rank
        self._make_optimizer()
        self.step = 0
        self.monitor = CollapseMonitor()
        self.log: list[dict[str, float]] = []
        self.truncated = 0
        self._log_setup()

    # -------------------------------------------------------------- set-up
    def _load_model(self) -> None:
        """The input model in fp32 and the one Embedder the steps encode with (its backbone
        trained in place; queries and documents are tokenized to their own lengths)."""
        cfg = self.config
        base = Embedder.load(
            cfg.model, attention=cfg.attention, dtype=torch.float32, device=self.device
        )
        pooling = cfg.pooling or base.pooling
        common = dict(
            pooling=pooling,
            **readout_settings(pooling, base.readout, cfg.mask_tokens, cfg.readout_prompt),
            normalize=base.normalize,
            prompt_template=base.prompt_template,
            include_instruction=base.include_instruction and not cfg.exclude_instruction,
            precision="fp32",
            padding_side=base.padding_side,
        )
        self.backbone = base.backbone
        # One embedder; queries and documents are tokenized to their own lengths.
        self.embedder = Embedder(
            self.backbone, base.tokenizer, max_length=cfg.max_doc_length, **common
        )
        self.lengths = (cfg.max_query_length, cfg.max_doc_length)
        self.saved_precision = base.precision
        self.saved_prompts = {**base.prompts, **self.prompts}
        shape = self.embedder.vector_shape  # (K, dim) for a multi-vector readout
        check_dims(cfg.matryoshka, self.embedder.dim, shape[0] if len(shape) > 1 else 1)

    def _make_trainable(self) -> None:
        """LoRA adapters (or every weight) trainable, in training mode, identical on all
        ranks."""
        cfg, backbone = self.config, self.backbone
        self.peft_model = None
        if cfg.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=2 * cfg.lora_r,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(LORA_TARGET_MODULES),
                bias="none",
            )
            # Adapters are injected into ``backbone`` in place; the embedder calls it directly.
            self.peft_model = get_peft_model(backbone, lora)
        else:
            for p in backbone.parameters():
                p.requires_grad_(True)
        if cfg.gradient_checkpointing:
            backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        self._use_cache = getattr(backbone.config, "use_cache", None)
        backbone.config.use_cache = False  # no KV cache in training (and none with checkpointing)
        backbone.train()
        self.trainable: dict[str, torch.nn.Parameter] = {
            n: p for n, p in backbone.named_parameters() if p.requires_grad
        }
        if not self.trainable:
            raise ConfigError("no trainable parameters")
        broadcast_from_main(self.trainable.values(), self.ctx)

    def _make_optimizer(self) -> None:
        """AdamW (no weight decay on vectors) with linear warm-up and linear decay."""
        cfg = self.config
        decay = [p for n, p in self.trainable.items() if p.dim() >= 2]
        no_decay = [p for n, p in self.trainable.items() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        warmup = min(cfg.warmup_steps, cfg.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, cfg.steps)
        )

    def _log_setup(self) -> None:
        if self.rank != 0:
            return
        n_train = sum(p.numel() for p in self.trainable.values())
        n_all = sum(p.numel() for p in self.backbone.parameters())
        logger.info(
            "%d pairs, %d tasks, %d global batches/epoch; %d processes x %d pairs; "
            "trainable %d of %d parameters (%s); attention %s, pooling %s",
            len(self.pairs),
            len(self.plan.task_members),
            self.plan.batches_per_epoch,
            self.world_size,
            self.local_batch_size,
            n_train,
            n_all,
            f"LoRA r={self.config.lora_r}" if self.config.lora_r else "full",
            self.embedder.attention,
            self.embedder.pooling,
        )

    def _autocast(self) -> Any:
        return autocast(self.device, bf16_wanted(self.config.precision, self.device))

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share with a run that resumes from it."""
        c = self.config.to_json()
        c["model"] = str(self.config.model.resolve())
        c["pairs_sha256"] = self.pairs_sha256
        c["attention"] = self.embedder.attention
        c["pooling"] = self.embedder.pooling
        return {k: c[k] for k in RESUME_KEYS}

    # -------------------------------------------------------------- data
    def local_batch(self, step: int) -> LocalBatch:
        """Rank ``self.rank``'s share of global batch ``step``, tokenized."""
        k = self.config.hard_negatives
        layout = layout_batch(
            self.pairs, self.plan, step, k, self.config.seed, self.rank, self.local_batch_size
        )
        batch = tokenize_batch(layout, step, k, self.embedder, self.lengths, self.device)
        self.truncated += batch.truncated
        return batch

    # -------------------------------------------------------------- one step
    def scale_at(self, step: int) -> float:
        """The similarity scale used at 0-based ``step``: ``scale``, after a geometric warm-up
        from ``initial_scale`` over ``scale_warmup_steps`` steps when one is set."""
        cfg = self.config
        return scale_factor(step, cfg.scale, cfg.initial_scale, cfg.scale_warmup_steps)

    def _loss(self, q: torch.Tensor, d: torch.Tensor, batch: LocalBatch) -> StepResult:
        docs = gather_with_grad(d)
        dims = self.config.matryoshka  # empty: plain InfoNCE
        loss, logits = matryoshka_info_nce_loss(
            q, docs, batch.positives, self.scale_at(batch.step), batch.exclude, dims
        )
        accuracy = in_batch_accuracy(logits.detach(), batch.positives)
        return StepResult(loss, accuracy, mean_offdiag_cosine(docs))

    def forward_backward(self, batch: LocalBatch) -> StepResult:
        """Zero the gradients, compute the loss of ``batch`` and its gradients, averaged over
        ranks (= the gradient of the mean loss over the global batch).

        With ``mini_batch`` > 0 this is GradCache (``contrastive.grad_cache_step``): the same
        loss and gradients, embedding ``mini_batch`` texts per forward pass.

        Returns:
            loss and in-batch accuracy averaged over the global batch (floats), and the mean
            cosine between the global batch's documents.
        """
        self.optimizer.zero_grad(set_to_none=True)
        queries = (batch.query_ids, batch.query_masks)
        docs = (batch.doc_ids, batch.doc_masks)
        if self.config.mini_batch > 0:
            sides = [(len(part[1]), self._embedder(*part)) for part in (queries, docs)]
            result = grad_cache_step(
                sides, self.config.mini_batch, lambda q, d: self._loss(q, d, batch), self.device
            )
        else:
            q = self._embedder(*queries)(slice(None))
            d = self._embedder(*docs)(slice(None))
            result = self._loss(q, d, batch)
            result.loss.backward()
        average_gradients(list(self.trainable.values()), self.ctx)
        stats = torch.stack([result.loss.detach().float(), result.accuracy.float()])
        mean_over_ranks(stats, self.ctx)
        return StepResult(float(stats[0]), float(stats[1]), result.doc_cosine)

    def _embedder(self, ids: list[list[int]], masks: list[list[int]]) -> Any:
        """``rows -> [len, H]``: differentiable embeddings of a slice of tokenized texts."""
        return lambda rows: self.embedder.embed_tokens(ids[rows], masks[rows], self._autocast())

    def train_step(self) -> dict[str, float]:
        """One optimizer step on global batch ``self.step``; returns its log row."""
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        batch = self.local_batch(self.step)
        scale = self.scale_at(self.step)
        result = self.forward_backward(batch)
        loss = result.loss
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {self.step + 1}: loss is {loss}; try --precision fp32")
        params = list(self.trainable.values())
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        tokens = all_sum(batch.tokens, self.ctx)
        seconds = time.perf_counter() - start
        row = {
            "step": self.step,
            "loss": loss,
            "accuracy": result.accuracy,
            "doc_cosine": result.doc_cosine,
            "scale": scale,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": int(tokens),
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "seconds": seconds,
        }
        if self.rank == 0:
            self.monitor.update(self.step, loss, batch.exclude.shape[1], result.doc_cosine)
        self.log.append(row)
        return row

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (rank 0; every rank's RNG state included)
        and keep the newest ``keep_checkpoints``. Returns the path on rank 0."""
        rng = gather_rng_states(self.ctx)
        path = step_checkpoint(self.config.checkpoints, self.step)
        if self.rank == 0:
            with atomic_dir(path) as tmp:
                weights = {n: p.detach().cpu().contiguous() for n, p in self.trainable.items()}
                save_file(weights, str(tmp / "trainable.safetensors"))
                opt = optimizer_files(self.optimizer)
                save_file(opt.tensors, str(tmp / "optimizer.safetensors"))
                write_json(
                    tmp / "optimizer.json",
                    {"param_groups": opt.param_groups, "scalar_state": opt.scalars},
                )
                write_json(tmp / "scheduler.json", json_safe(self.scheduler.state_dict()))
                save_file(rng, str(tmp / "rng.safetensors"))
                write_json(tmp / "trainer_state.json", self._trainer_state())
            prune_checkpoints(self.config.checkpoints, self.config.keep_checkpoints)
            logger.info("checkpoint %s", path)
        barrier(self.ctx)
        return path if self.rank == 0 else None

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "world_size": self.world_size,
            "truncated": self.truncated,
            "fingerprint": self.fingerprint(),
            "config": self.config.to_json(),
            "log": self.log,
        }

    def _read_trainer_state(self, path: Path) -> dict[str, Any]:
        """The checkpoint's trainer state, refused when its format or settings differ."""
        info = read_json(path / "trainer_state.json", CheckpointError)
        if info.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: unsupported checkpoint format {info.get('format')!r}")
        theirs, ours = info["fingerprint"], self.fingerprint()
        diff = [f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in ours if theirs.get(k) != ours[k]]
        if diff:
            raise CheckpointError(
                f"{path}: cannot resume with different settings: {'; '.join(diff)}"
            )
        if info["config"]["steps"] != self.config.steps:
            logger.warning(
                "%s: resuming with steps=%d (checkpoint run: %d); the learning-rate schedule "
                "changes",
                path,
                self.config.steps,
                info["config"]["steps"],
            )
        return info

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG, data position and log from ``path``."""
        info = self._read_trainer_state(path)
        weights = load_file(str(path / "trainable.safetensors"))
        if set(weights) != set(self.trainable):
            raise CheckpointError(f"{path}: trainable parameters differ from this run's")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(weights[name].to(p.device))
        opt_json = read_json(path / "optimizer.json", CheckpointError)
        tensors = load_file(str(path / "optimizer.safetensors"))
        files = OptimizerFiles(tensors, opt_json["scalar_state"], opt_json["param_groups"])
        restore_optimizer(self.optimizer, files, self.device)
        self.scheduler.load_state_dict(read_json(path / "scheduler.json", CheckpointError))
        rng = load_file(str(path / "rng.safetensors"))
        if info["world_size"] == self.world_size:
            restore_rng_states(rng, self.ctx)
        else:
            logger.warning(
                "%s: saved by %d processes, resumed by %d: random state reseeded (dropout "
                "masks differ from an uninterrupted run)",
                path,
                info["world_size"],
                self.world_size,
            )
            torch.manual_seed(self.config.seed + 1 + self.rank + 7919 * info["step"])
        self.step = int(info["step"])
        self.truncated = int(info.get("truncated", 0))
        self.log = [dict(r) for r in info["log"]]
        if self.rank == 0:
            logger.info("resumed from %s at step %d", path, self.step)

    def resolve_resume(self) -> Path | None:
        """The checkpoint named by ``config.resume`` (``"latest"`` = newest in the checkpoint
        directory, or None with a warning when there is none), or None without ``resume``."""
        resume = self.config.resume
        if not resume:
            return None
        if resume == "latest":
            found = list_checkpoints(self.config.checkpoints)
            if not found:
                logger.warning(
                    "--resume: no checkpoint in %s; starting from step 0", self.config.checkpoints
                )
                return None
            return found[-1]
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise CheckpointError(f"{path}: not a checkpoint (no trainer_state.json)")
        return path

    # -------------------------------------------------------------- the run
    def train(self) -> Path:
        """Run from ``self.step`` to ``config.steps``, checkpointing every ``save_every`` steps,
        then merge LoRA and save the embedding model and the logs (rank 0). Returns ``out``."""
        cfg = self.config
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="finetune",
            unit="step",
            disable=not cfg.show_progress or self.rank != 0,
        )
        try:
            while self.step < cfg.steps:
                self._report(self.train_step(), bar)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.truncated and self.rank == 0:
            logger.warning("%d texts were truncated to the maximum length", self.truncated)
        if self.rank == 0:
            self.save_model(cfg.out)
            self.write_logs(cfg.out / "training")
        barrier(self.ctx)
        return cfg.out

    def _report(self, row: dict[str, float], bar: Any) -> None:
        """Show a step's row on the progress bar and, every ``log_every`` steps, in the log."""
        cfg = self.config
        bar.update(1)
        bar.set_postfix(
            loss=f"{row['loss']:.4f}",
            acc=f"{row['accuracy']:.3f}",
            cos=f"{row['doc_cosine']:.2f}",
            lr=f"{row['lr']:.2e}",
            tok_s=f"{row['tokens_per_s']:.0f}",
        )
        if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
            logger.info(
                "step %d/%d loss %.4f acc %.3f doc-doc cos %.3f scale %.1f lr %.3g %.0f tokens/s",
                self.step,
                cfg.steps,
                row["loss"],
                row["accuracy"],
                row["doc_cosine"],
                row["scale"],
                row["lr"],
                row["tokens_per_s"],
            )

    def merged_embedder(self) -> Embedder:
        """The trained model as an ``Embedder`` (LoRA merged into the weights, eval mode),
        with the task prompts and the settings of the input model. Ends training."""
        backbone = self.backbone
        if self.peft_model is not None:
            backbone = self.peft_model.merge_and_unload()
            self.peft_model = None
        if self.config.gradient_checkpointing:
            backbone.activation_checkpointing_disable()
        backbone.eval()
        if self._use_cache is not None:
            backbone.config.use_cache = self._use_cache
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.backbone = backbone
        return Embedder(
            backbone,
            self.embedder.tokenizer,
            pooling=self.embedder.pooling,
            normalize=self.embedder.normalize,
            max_length=max(self.config.max_query_length, self.config.max_doc_length),
            prompts=self.saved_prompts,
            prompt_template=self.embedder.prompt_template,
            include_instruction=self.embedder.include_instruction,
            precision=self.saved_precision,
            padding_side=self.embedder.padding_side,
            **(self.embedder.readout.settings() if self.embedder.readout is not None else {}),
        )

    def save_model(self, out: Path) -> Path:
        """Save the merged model to ``out`` with ``Embedder.save`` (atomic)."""
        embedder = self.merged_embedder()
        embedder.save(out, overwrite=self.config.overwrite)  # --out was checked at the start
        write_trained_dims(out, self.config.matryoshka)  # read by trained_dims
        logger.info("saved %s (prompts: %s)", out, ", ".join(sorted(self.saved_prompts)))
        return out

    def write_logs(self, directory: Path) -> None:
        """Write ``log.csv``, ``training.png`` and ``finetune.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        write_log_csv(directory / "log.csv", self.log, LOG_COLUMNS)
        plot_log(self.log, directory / "training.png", LOG_PANELS, line_width=1, grid=True)
        write_json(
            directory / "finetune.json",
            {
                "config": self.config.to_json(),
                "pairs_sha256": self.pairs_sha256,
                "pairs": len(self.pairs),
                "world_size": self.world_size,
                "attention": self.embedder.attention,
                "pooling": self.embedder.pooling,
                "prompts": self.prompts,
                "truncated_texts": self.truncated,
                "final_loss": self.log[-1]["loss"] if self.log else None,
                "mean_tokens_per_s": (
                    float(np.mean([r["tokens_per_s"] for r in self.log])) if self.log else None
                ),
                "torch": torch.__version__,
            },
        )

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        self.ctx.close()


def finetune(config: FinetuneConfig, pairs: list[Pair] | None = None) -> Path:
    """Run contrastive fine-tuning as configured; returns the output model directory.

    ``pairs`` may be given instead of being read from ``config.pairs``. Resumes from a
    checkpoint when ``config.resume`` is set.
    """
    check_output_dir(config.out, config.overwrite)  # before any work
    trainer = Trainer(config, pairs)
    try:
        checkpoint = trainer.resolve_resume()
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        if config.resume and trainer.rank == 0:
            clean_checkpoint_debris(config.checkpoints)
        return trainer.train()
    finally:
        trainer.close()
