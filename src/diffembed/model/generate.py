"""Sampling from pretrained LMs, to see what each objective learned.

* AR models: left-to-right sampling (transformers ``generate``).
* Diffusion models: iterative unmasking with low-confidence remasking (LLaDA): start from the
  prompt followed by ``length`` mask tokens; at each of ``steps`` steps predict every masked
  position, keep the most confident predictions (an equal share of the positions per step) and
  leave the rest masked.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from diffembed.model.backbone import inspect_backbone
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
) -> torch.Tensor:
    """Generate ``length`` tokens after ``prompt_ids [P]`` by iterative unmasking: ``[P + length]``.

    ``temperature`` 0 takes the argmax; otherwise predictions are sampled. Confidence is the
    probability of the chosen token; ``banned_ids`` (mask, pad, ...) are never produced.
    """
    if steps < 1 or length < 1:
        raise ValueError("steps and length must be >= 1")
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
        logits = model(input_ids=x).logits[0].float()  # [T, V], no shift: position i -> token i
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


def generate_text(
    model_dir: str | Path,
    prompt: str,
    length: int = 64,
    steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Sample a continuation of ``prompt`` from one of our pretrained LM directories."""
    info = inspect_backbone(model_dir)
    tokenizer: PreTrainedTokenizerBase = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    prompt_ids = torch.tensor(tokenizer(prompt)["input_ids"])
    torch.manual_seed(seed)
    if info.objective == "diffusion":
        if info.mask_token_id is None:
            raise ValueError(f"{model_dir}: a diffusion model without mask_token_id in config.json")
        banned = tuple(
            i
            for i in (info.mask_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
            if i is not None
        )
        gen = torch.Generator().manual_seed(seed)
        out = diffusion_sample(
            model, prompt_ids, length, steps or length, info.mask_token_id, temperature, banned, gen
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
        raise ValueError(
            f"{model_dir}: a bidirectional {info.objective or 'unknown'}-objective model samples "
            "neither left to right nor by unmasking"
        )
    return tokenizer.decode(out[len(prompt_ids) :], skip_special_tokens=False)
