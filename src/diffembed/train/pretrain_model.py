"""The pretraining model and what is computed with it: the Llama-style LM (``build_model``, or
``initial_model`` from a directory), its training FLOPs and the hardware's measured matmul peak
(for MFU), the loss of one micro-batch for each objective (``ScoredLM`` computes the LM head only
where predictions are scored), the held-out evaluation, and the checkpoint of model and
optimizer that a run resumes from.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from diffembed.errors import DiffembedError
from diffembed.io import atomic_dir, read_json, write_json
from diffembed.model.backbone import CheckpointError
from diffembed.model.precision import autocast, bf16_wanted
from diffembed.train.adaptation import record_adaptation
from diffembed.train.checkpoint import OptimizerFiles, optimizer_files, restore_optimizer
from diffembed.train.objectives import (
    ar_loss,
    diffusion_loss,
    mask_for_diffusion,
    mask_for_mntp,
    sample_t,
    shift_left,
)
from diffembed.train.pretrain_data import sample_generators

if TYPE_CHECKING:
    from diffembed.train.pretrain_config import PretrainConfig

EVAL_MASK_RATES = (0.15, 0.5, 0.85)
ELBO_GRID = 8  # t values for the held-out diffusion bound: (k + 0.5) / ELBO_GRID


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
        raise DiffembedError(
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
    record_adaptation(hf, config, None)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(hf)
    if config.residual_init == "zero":
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
    return model


def initial_model(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, init: Path | None
) -> LlamaForCausalLM:
    """The LM a run starts from: ``build_model`` without ``init``, else the model in ``init``
    (for ``mntp``, an AR model of the preset's shape) with the run's objective and attention."""
    if init is None:
        return build_model(config, tokenizer)
    from diffembed.model.backbone import inspect_backbone

    info = inspect_backbone(init)
    if config.objective == "mntp" and info.objective != "ar":
        raise CheckpointError(
            f"{init}: mntp starts from an AR model, this one's objective is {info.objective!r}"
        )
    hf = LlamaConfig.from_pretrained(str(init))
    if (hf.hidden_size, hf.num_hidden_layers, hf.vocab_size) != (
        config.hidden,
        config.layers,
        len(tokenizer),
    ):
        raise CheckpointError(
            f"{init}: model shape does not match the preset (hidden/layers/vocab)"
        )
    hf.is_causal = config.objective == "ar"
    hf.diffembed_objective = config.objective
    hf.mask_token_id = tokenizer.mask_token_id
    record_adaptation(hf, config, init)
    model = LlamaForCausalLM.from_pretrained(str(init), config=hf, dtype=torch.float32)
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


def weighted_head_ce(
    hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_i weights_i * CE(hidden_i @ head^T, targets_i)``: the LM head and the loss of the
    scored positions in one function, which ``torch.compile`` fuses (the upcast, log-softmax and
    their backward in one pass over the logits instead of materialising ``[N, V]`` float32
    copies, the largest cost of a CPU step at a vocabulary of 8k and hidden 128).

    ``hidden [N, H]``, ``head [V, H]`` (the LM head's weight), ``targets [N]`` token ids,
    ``weights [N]`` float32; returns a float32 scalar (nats, weighted).
    """
    logits = torch.nn.functional.linear(hidden, head)
    ce = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return (ce * weights).sum()


class ScoredLM(torch.nn.Module):
    """An LM whose forward returns LM-head logits only where predictions are scored, or the
    weighted loss there.

    ``forward(input_ids [B, T], select [B, T] bool | None, attention_mask)`` gives ``[M, V]``
    logits for the M selected positions, or ``[B, T-1, V]`` (all but the last position) when
    ``select`` is None; ``attention_mask`` is None (the model's own attention) or a
    ``[1, 1, T, T]`` mask (``adaptation.anneal_mask``). With ``targets`` (``[M]``, or
    ``[B, T-1]`` when ``select`` is None) and ``weights`` of the same shape it returns
    ``weighted_head_ce`` instead (a scalar): ``compile()`` then compiles the head and the loss
    together. Computing the head only where needed saves most of its cost for diffusion and
    MNTP. This is the module DDP wraps, so gradient synchronisation sees the whole computation.
    """

    def __init__(self, lm: LlamaForCausalLM) -> None:
        super().__init__()
        self.lm = lm
        self.head_loss = weighted_head_ce

    def compile_loss(self) -> None:
        """Compile the transformer body (in place: parameter names stay the same) and the head
        + loss (shapes vary with the number of scored positions: dynamic)."""
        self.lm.model.compile()
        self.head_loss = torch.compile(weighted_head_ce, dynamic=True)

    def forward(
        self,
        input_ids: torch.Tensor,
        select: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.lm.model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # [B, T, H], post-norm
        hidden = hidden[:, :-1] if select is None else hidden[select]
        if targets is None:
            return self.lm.lm_head(hidden)
        if weights is None:
            raise ValueError("targets need weights")
        h = hidden.reshape(-1, hidden.shape[-1])
        return self.head_loss(h, self.lm.lm_head.weight, targets.reshape(-1), weights.reshape(-1))


def micro_batch_loss(
    scored: torch.nn.Module,
    tokens: torch.Tensor,
    gens: list[torch.Generator],
    config: PretrainConfig,
    mask_id: int | None,
    vocab_size: int,
    special_ids: tuple[int, ...] = (),
    attention: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed loss over the rows of a micro-batch and the number of LM-head positions computed.

    ``scored`` is a ``ScoredLM`` (possibly DDP-wrapped); ``tokens [B, T]``; ``gens`` one
    generator per row; ``attention`` the step's annealed mask (diffusion only) or None. The
    caller divides by the global batch size. Each objective's loss is the weighted
    cross-entropy of ``train.objectives`` (``ar_loss``, ``diffusion_loss``, ``mntp_loss``),
    computed by ``ScoredLM`` with the head so that both compile together.
    """
    if config.objective == "ar":
        targets = tokens[:, 1:]
        weights = torch.full(targets.shape, 1.0 / targets.shape[1], device=tokens.device)
        loss = scored(tokens, None, None, targets, weights)  # per-row mean, summed
        return loss, targets.numel()
    if config.objective == "diffusion":
        t = sample_t(gens, config.mask_eps).to(tokens.device)
        noisy, masked = mask_for_diffusion(tokens, mask_id, t, gens, keep_first=bool(config.shift))
        maskable = tokens.shape[1] - int(bool(config.shift))
        t_rows = t.view(-1, 1).expand_as(masked)[masked]
        # With the AR shift, masked token i is predicted from the output at i - 1.
        select = shift_left(masked) if config.shift else masked
        loss = scored(noisy, select, attention, tokens[masked], 1.0 / (t_rows * maskable))
        return loss, int(masked.sum())
    noisy, selected = mask_for_mntp(
        tokens, mask_id, vocab_size, gens, config.mntp_rate, special_ids
    )
    # Selected position i is predicted from the output at i - 1 (position 0 is never selected).
    counts = selected.sum(dim=1, keepdim=True).clamp(min=1).expand_as(selected)[selected]
    loss = scored(noisy, shift_left(selected), None, tokens[selected], 1.0 / counts.float())
    return loss, int(selected.sum())


@torch.no_grad()
def evaluate(
    scored: ScoredLM, heldout: np.ndarray, config: PretrainConfig, device: torch.device
) -> dict[str, float]:
    """Held-out metrics in nats per token, with fixed noise (the same at every call).

    AR: cross-entropy and perplexity. Diffusion: masked-token cross-entropy at t = 0.15, 0.5,
    0.85, and the negative ELBO per token on an 8-point t grid (a bound on the NLL; its exp is a
    perplexity bound). MNTP: masked next-token cross-entropy. Diffusion is scored with the
    run's shift (then over the T - 1 tokens after position 0, as AR's cross-entropy is) and
    always with full attention, the attention the model is saved with, also while annealing.
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
        shift = bool(config.shift)
        for j, b in enumerate(batches):
            t = torch.full((len(b),), rate, device=device)
            gens = sample_generators(seed, j, range(len(b)))
            noisy, masked = mask_for_diffusion(b, mask_id, t, gens, keep_first=shift)
            logits = scored(noisy, shift_left(masked) if shift else masked).float()
            ce += float(torch.nn.functional.cross_entropy(logits, b[masked], reduction="sum"))
            t_rows = t.view(-1, 1).expand_as(masked)[masked]
            bound += float(diffusion_loss(logits, b[masked], t_rows, b.shape[1] - int(shift)))
            count += int(masked.sum())
        return ce, bound, count

    with autocast(device, bf16_wanted(config.precision, device)):
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


def save_checkpoint(
    path: Path,
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    compact: bool = False,
) -> None:
    """Write model, optimizer tensors (safetensors) and trainer state (JSON) atomically.

    ``compact``: the weights and both Adam moments in bf16 (half the float32 size); a resumed
    run continues from the rounded values (a relative change of at most 2^-9 per number, well
    under one step's update at the rates pretraining uses)."""
    dtype = torch.bfloat16 if compact else None
    with atomic_dir(path) as tmp:
        save_file(
            {
                k: v.detach().to(dtype=dtype).contiguous().cpu()
                for k, v in model.state_dict().items()
                if k != "lm_head.weight"
            },
            str(tmp / "model.safetensors"),
        )
        opt = optimizer_files(optimizer)
        tensors = opt.tensors
        if compact:
            tensors = {
                k: v if k.endswith(".step") else v.to(torch.bfloat16) for k, v in tensors.items()
            }
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        scalars = {
            f"{pid}.{k}": v for pid, entries in opt.scalars.items() for k, v in entries.items()
        }
        write_json(
            tmp / "trainer.json",
            {
                **state,
                "optimizer_groups": opt.param_groups,
                "optimizer_scalars": scalars,
                "compact": compact,
            },
        )


def load_checkpoint(
    path: Path, model: LlamaForCausalLM, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote (either precision); returns the trainer state."""
    state = read_json(path / "trainer.json", CheckpointError)
    state.pop("compact", None)
    weights = load_file(str(path / "model.safetensors"))
    model.load_state_dict(weights, strict=False)  # copies into the model's float32 parameters
    missing = set(model.state_dict()) - set(weights) - {"lm_head.weight"}
    if missing:
        raise CheckpointError(f"{path / 'model.safetensors'}: missing {sorted(missing)[:5]}")
    scalars: dict[str, dict[str, Any]] = {}
    for key, value in state.pop("optimizer_scalars").items():
        pid, name = key.split(".", 1)
        scalars.setdefault(pid, {})[name] = value
    tensors = load_file(str(path / "optimizer.safetensors"))  # the optimizer upcasts bf16
    restore_optimizer(optimizer, OptimizerFiles(tensors, scalars, state.pop("optimizer_groups")))
    return state


def save_snapshot(
    path: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, info: dict[str, Any]
) -> None:
    """The weights (bf16) as a model directory that ``AutoModelForCausalLM`` loads, with the
    tokenizer and ``snapshot.json`` (``info``: step, tokens, ...), written atomically."""
    weights = {k: v.detach().to(torch.bfloat16).cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:  # the copy is not the embedding's own tensor any more
        weights.pop("lm_head.weight", None)
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp), state_dict=weights)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / "snapshot.json", info)
