"""Sampling from pretrained LMs, to see what each objective learned.

* AR models: left-to-right sampling (transformers ``generate``).
* Diffusion models: iterative unmasking with low-confidence remasking (LLaDA): start from the
  prompt followed by ``length`` mask tokens; at each of ``steps`` steps predict every masked
  position, keep the most confident predictions (an equal share of the positions per step) and
  leave the rest masked. A model adapted from an AR LM with the shift (``diffembed_shift`` in
  its config.json; ``train.adaptation``) predicts the token at position i from the output at
  i - 1, so its logits are shifted right by one before unmasking, as Dream's sampler does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from diffembed.errors import ConfigError
from diffembed.model.backbone import (
    CheckpointError,
    _quiet_transformers,
    checkpoint_tensors,
    inspect_backbone,
)
from diffembed.model.model_dir import ModelDir, max_positions
from diffembed.model.tokenizer import load_tokenizer


@torch.no_grad()
def diffusion_sample(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    length: int,
    steps: int,
    mask_id: int,
    temperature: float = 0.0,
    banned_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    shift: bool = False,
) -> torch.Tensor:
    """Generate ``length`` tokens after ``prompt_ids [P]`` by iterative unmasking: ``[P + length]``.

    ``temperature`` 0 takes the argmax; otherwise predictions are sampled. Confidence is the
    probability of the chosen token; ``banned_ids`` (mask, pad, ...) are never produced.
    ``shift``: the token at position i is predicted from the output at i - 1 (the prompt then
    needs at least one token).
    """
    if steps < 1 or length < 1:
        raise ConfigError("steps and length must be >= 1")
    if shift and len(prompt_ids) == 0:
        raise ConfigError("a shifted model predicts from the previous position: give a prompt")
    device = next(model.parameters()).device
    x = torch.cat([prompt_ids.to(device), torch.full((length,), mask_id, device=device)]).unsqueeze(
        0
    )
    # How many positions to reveal at each step (as even as possible).
    per_step = [length // steps + (1 if i < length % steps else 0) for i in range(steps)]
    for k in per_step:
        masked = x[0] == mask_id
        if k == 0 or not masked.any():
            continue
        logits = model(input_ids=x).logits[0].float()  # [T, V]: position i -> token i
        if shift:  # the output at i - 1 predicts token i (row 0 is the prompt's, never used)
            logits = torch.cat([logits[:1], logits[:-1]])
        logits[:, list(banned_ids)] = float("-inf")
        probs = (
            torch.softmax(logits / temperature, dim=-1)
            if temperature > 0
            else torch.softmax(logits, dim=-1)
        )
        if temperature > 0:
            choice = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            choice = probs.argmax(dim=-1)
        confidence = probs.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
        confidence[~masked] = float("-inf")
        reveal = confidence.topk(min(k, int(masked.sum()))).indices
        x[0, reveal] = choice[reveal]
    return x[0]


_LM_ARCHITECTURES = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ModelLM")


def check_lm_head(model_dir: str | Path) -> None:
    """Refuse a directory without a language-model head: an embedding model (``Embedder.save``
    writes the bare backbone), whose "generations" would be noise from a head it never had."""
    model = ModelDir.open(model_dir)
    architectures = model.architectures
    if any(a.endswith(_LM_ARCHITECTURES) for a in architectures):
        return
    if any(name.startswith("lm_head.") for name in checkpoint_tensors(model.path)):
        return
    kind = "an embedding model" if model.is_ours else "a bare backbone"
    raise CheckpointError(
        f"{model_dir}: no language-model head ({kind}; architectures: "
        f"{', '.join(map(str, architectures)) or 'none'}), so it cannot generate text; "
        "give a pretrained LM directory (the --out of `diffembed pretrain`)"
    )


def check_positions(model_dir: str | Path, prompt_tokens: int, length: int) -> None:
    """Refuse a generation longer than the model's positions (``max_position_embeddings``):
    ``prompt_tokens`` plus ``length`` new tokens must fit, as ``--max-length`` must for
    embedding; positions beyond were never trained (and a long run would only waste time).
    The ``ValueError`` names the model, ``--length`` or ``--prompt``, and the limit."""
    positions = max_positions(ModelDir.open(model_dir).config)
    if positions is None or prompt_tokens + length <= positions:
        return
    if prompt_tokens >= positions:
        raise ConfigError(
            f"{model_dir}: the prompt (--prompt) is {prompt_tokens} tokens, which leaves no room "
            f"in the model's {positions} positions (max_position_embeddings); shorten --prompt"
        )
    raise ConfigError(
        f"{model_dir}: --length {length} after the prompt's {prompt_tokens} tokens needs "
        f"{prompt_tokens + length} positions, but the model has {positions} "
        f"(max_position_embeddings); set --length to at most {positions - prompt_tokens}"
    )


def generate_text(
    model_dir: str | Path,
    prompt: str,
    length: int = 64,
    steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Sample a continuation of ``prompt`` from one of our pretrained LM directories."""
    if length < 1 or (steps is not None and steps < 1) or temperature < 0:
        raise ConfigError("length and steps must be >= 1 and temperature >= 0")
    info = inspect_backbone(model_dir)
    check_lm_head(model_dir)
    tokenizer: PreTrainedTokenizerBase = load_tokenizer(model_dir)
    prompt_ids = torch.tensor(tokenizer(prompt)["input_ids"])
    check_positions(model_dir, len(prompt_ids), length)
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    torch.manual_seed(seed)
    if info.objective == "diffusion":
        if info.mask_token_id is None:
            raise CheckpointError(
                f"{model_dir}: a diffusion model without mask_token_id in config.json"
            )
        banned = tuple(
            i
            for i in (info.mask_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
            if i is not None
        )
        gen = torch.Generator().manual_seed(seed)
        shift = ModelDir(model_dir).shift
        out = diffusion_sample(
            model,
            prompt_ids,
            length,
            steps or length,
            info.mask_token_id,
            temperature,
            banned,
            gen,
            shift=shift,
        )
    elif info.default_attention == "causal":
        out = model.generate(
            prompt_ids.unsqueeze(0),
            max_new_tokens=length,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            top_p=None,
            pad_token_id=tokenizer.pad_token_id,
        )[0]
    else:
        raise ConfigError(
            f"{model_dir}: a bidirectional {info.objective or 'unknown'}-objective model samples "
            "neither left to right nor by unmasking"
        )
    return tokenizer.decode(out[len(prompt_ids) :], skip_special_tokens=False)
