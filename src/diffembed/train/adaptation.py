"""Adapting an autoregressive LM to masked diffusion, as DiffuLLaMA and Dream do.

Two settings of the diffusion objective (``PretrainConfig.anneal_steps`` and ``.shift``):

* **Attention-mask annealing** (DiffuLLaMA, Gong et al. 2024, arXiv 2410.17891; their training
  code, HKUNLP/DiffuLLaMA, draws the mask this way; Dream's paper names AR initialization, the
  shift and token-level noise rescheduling, not annealing): the causal mask is opened towards
  full attention over the first ``anneal_steps`` optimizer steps. At step ``s`` (0-based) every
  query/key pair above the diagonal is opened independently with probability
  ``p(s) = s / anneal_steps``; the causal part always stays open. Step 0 is exactly causal; from
  step ``anneal_steps`` on, attention is full (no mask is passed: the model's own bidirectional
  attention, as saved). One mask per step, shared by every sequence and every process, drawn
  from a generator keyed by (seed, step), so a resumed run draws the same masks. (DiffuLLaMA
  uses ``min(1, (s + 1) / anneal_steps)``; we start at 0 so that step 0 is the AR model's own
  attention.)
* **Shift** (Dream, Ye et al. 2025, arXiv 2508.15487, and DiffuLLaMA): the output at position
  ``i`` predicts the (masked) token at ``i + 1``, so the AR model's LM head keeps its meaning.
  Position 0 has no previous position: it is never masked (it is context, as Dream's BOS) and
  the loss covers the ``T - 1`` tokens after it. Samplers shift the logits back
  (``diffembed.model.generate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffembed.errors import ConfigError

# The third key of the annealing generator's seed; sequence generators use indices in a batch
# (``pretrain_data.sample_generators``), which never reach it.
_ANNEAL_STREAM = 2**32 - 1


def anneal_ratio(step: int, anneal_steps: int) -> float:
    """Share of the above-diagonal query/key pairs open at ``step``: ``min(1, step / N)``; 1 when
    ``anneal_steps`` is 0 (full attention from the start)."""
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, step / anneal_steps)


def anneal_mask(
    step: int,
    anneal_steps: int,
    seq_len: int,
    seed: int,
    attn_implementation: str = "sdpa",
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """The attention mask of optimizer step ``step``: ``[1, 1, T, T]`` (query, key) or None for
    full attention (``step >= anneal_steps``).

    sdpa takes a boolean mask (True = may attend); eager an additive float mask (0 or the
    float32 minimum). Other kernels take no custom mask and are refused while annealing.
    """
    ratio = anneal_ratio(step, anneal_steps)
    if ratio >= 1.0:
        return None
    g = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, _ANNEAL_STREAM]).generate_state(1)[0])
    )
    position = torch.arange(seq_len)
    causal = position.view(1, -1) <= position.view(-1, 1)  # key j <= query i
    allowed = causal | (torch.rand(seq_len, seq_len, generator=g) < ratio)
    allowed = allowed.view(1, 1, seq_len, seq_len).to(device)
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        zero = torch.zeros((), device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(torch.float32).min)
    raise ConfigError(
        f"attention-mask annealing needs the sdpa or eager attention kernel, not "
        f"{attn_implementation!r}; set anneal_steps to 0"
    )


def default_shift(objective: str, init_attention: str | None, init_shift: bool = False) -> bool:
    """The shift's default for the diffusion objective: on when starting from a causal (AR) LM,
    whose LM head predicts the next token, or from a model trained with the shift; off
    otherwise (from scratch, or from an unshifted bidirectional model)."""
    return objective == "diffusion" and (init_attention == "causal" or init_shift)


def resolve_shift(config: Any, init: Path | None) -> Any:
    """``config`` with ``shift`` decided (``default_shift``) when it is None; unchanged else."""
    import dataclasses

    if config.shift is not None:
        return config
    attention, init_shift = None, False
    if init is not None:
        from diffembed.model.backbone import inspect_backbone
        from diffembed.model.model_dir import ModelDir

        attention = inspect_backbone(init).default_attention  # checks the directory
        init_shift = ModelDir(init).shift
    return dataclasses.replace(config, shift=default_shift(config.objective, attention, init_shift))


def record_adaptation(hf_config: Any, config: Any, init: Path | None) -> None:
    """Write the adaptation settings onto the model's config (saved in ``config.json``):
    ``diffembed_shift`` (what the sampler must honour), ``diffembed_anneal_steps`` and
    ``diffembed_init`` (the model the run started from). Diffusion only."""
    if config.objective != "diffusion":
        return
    hf_config.diffembed_shift = bool(config.shift)
    hf_config.diffembed_anneal_steps = int(config.anneal_steps)
    hf_config.diffembed_init = str(init) if init is not None else None


def check_adaptation(config: Any) -> None:
    """Refuse annealing or shift outside the diffusion objective, and an annealing that does not
    end before the run does. Messages name the config field and the CLI flag."""
    if config.anneal_steps < 0:
        raise ConfigError(f"anneal_steps (--anneal-steps) must be >= 0, got {config.anneal_steps}")
    if config.objective != "diffusion" and (config.anneal_steps or config.shift):
        raise ConfigError(
            "anneal_steps (--anneal-steps) and shift (--shift) adapt a model to the diffusion "
            f"objective; the objective is {config.objective!r}: drop them"
        )
    if config.anneal_steps and config.anneal_steps >= config.steps:
        raise ConfigError(
            f"anneal_steps (--anneal-steps) {config.anneal_steps} must be < steps (--steps) "
            f"{config.steps}, so that the run ends with full attention, as the model is saved"
        )
