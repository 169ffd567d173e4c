"""Pretraining objectives as small pure functions with explicit shapes.

* masked diffusion (LLaDA / MDLM): ``mask_for_diffusion`` + ``diffusion_loss``;
* autoregressive next-token prediction: ``ar_loss``;
* LLM2Vec's masked next-token prediction (MNTP): ``mask_for_mntp`` + ``mntp_loss``.

Losses are in nats. Noise is drawn from an explicit ``torch.Generator`` per sequence, so the same
sequence gets the same noise whatever the batch it lands in (one process or several).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES: tuple[str, ...] = ("diffusion", "ar", "mntp")


def mask_for_diffusion(
    input_ids: torch.Tensor,
    mask_id: int,
    t: torch.Tensor,
    generators: list[torch.Generator],
    keep_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each token by ``mask_id`` independently with probability ``t`` of its sequence.

    Args:
        input_ids: ``[B, T]`` clean tokens.
        mask_id: the mask token id.
        t: ``[B]`` masking rates in (0, 1].
        generators: one generator per sequence (B of them).
        keep_first: never mask position 0 (with the AR shift it has no previous position to be
            predicted from); the other positions get the same draws either way.

    Returns:
        ``noisy [B, T]`` and ``masked [B, T]`` (bool, True where a token was masked).
    """
    b, n = input_ids.shape
    u = torch.stack([torch.rand(n, generator=g) for g in generators]).to(input_ids.device)
    masked = u < t.view(b, 1)
    if keep_first:
        masked[:, 0] = False
    return torch.where(masked, torch.full_like(input_ids, mask_id), input_ids), masked


def shift_left(targets: torch.Tensor) -> torch.Tensor:
    """The positions whose outputs predict the ``targets [B, T]`` (bool) under the AR shift:
    ``out[:, i] = targets[:, i + 1]`` (token i+1 is predicted from position i; the last
    position predicts nothing). Used by MNTP and by shifted diffusion."""
    previous = torch.zeros_like(targets)
    previous[:, :-1] = targets[:, 1:]
    return previous


def sample_t(generators: list[torch.Generator], eps: float = 1e-3) -> torch.Tensor:
    """Draw one masking rate per sequence, ``t ~ U(eps, 1)``: ``[B]``."""
    u = torch.stack([torch.rand((), generator=g) for g in generators])
    return eps + (1.0 - eps) * u


def diffusion_loss(
    logits: torch.Tensor, targets: torch.Tensor, t: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """Masked-diffusion loss, summed over the sequences given (divide by batch size outside).

    Args:
        logits: ``[M, V]`` predictions of the M masked tokens (made at the masked positions, or
            at the positions before them with the AR shift).
        targets: ``[M]`` the original tokens at those positions.
        t: ``[M]`` the masking rate of the sequence each position belongs to.
        seq_len: the number of maskable positions per sequence: T, or T - 1 with the shift
            (position 0 is then context, never masked).

    Returns:
        scalar ``sum_b (1/T) sum_{i masked in b} CE_i / t_b`` — the negative ELBO of each sequence
        per token, summed over sequences.
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return (ce / t).sum() / seq_len


def ar_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged over the T-1 predictions of each sequence and summed
    over sequences.

    Args:
        logits: ``[B, T-1, V]`` predictions from positions 0..T-2.
        input_ids: ``[B, T]``; position i+1 is the target of position i.
    """
    b, n1, v = logits.shape
    ce = F.cross_entropy(
        logits.reshape(-1, v).float(), input_ids[:, 1:].reshape(-1), reduction="none"
    )
    return ce.view(b, n1).mean(dim=1).sum()


def mask_for_mntp(
    input_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generators: list[torch.Generator],
    rate: float = 0.2,
    special_ids: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption for MNTP: choose ``rate`` of the tokens (never position 0, which has
    no previous position, nor special tokens); of those 80% become ``mask_id``, 10% a random
    token, 10% stay. Returns ``noisy [B, T]`` and ``selected [B, T]`` (bool)."""
    n = input_ids.shape[1]
    draws = [
        (
            torch.rand(n, generator=g),
            torch.rand(n, generator=g),
            torch.randint(0, vocab_size, (n,), generator=g),
        )
        for g in generators
    ]
    u, kind, random_tokens = (torch.stack(x).to(input_ids.device) for x in zip(*draws, strict=True))
    selected = u < rate
    selected[:, 0] = False
    for s in special_ids:
        selected &= input_ids != s
    noisy = torch.where(selected & (kind < 0.9), random_tokens, input_ids)
    noisy = torch.where(selected & (kind < 0.8), torch.full_like(input_ids, mask_id), noisy)
    return noisy, selected


def mntp_loss(logits: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """MNTP loss: the token at a selected position i is predicted from position i-1's output.

    Args:
        logits: ``[M, V]`` outputs at positions i-1 for the M selected positions i.
        targets: ``[M]`` the original tokens at positions i.
        counts: ``[M]`` how many positions were selected in the sequence each one belongs to.

    Returns:
        scalar: per-sequence mean cross-entropy, summed over sequences.
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return (ce / counts).sum()
