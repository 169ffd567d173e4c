"""Pretraining objectives against hand computations and transformers' own AR loss."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from diffembed.train.objectives import (
    ar_loss,
    diffusion_loss,
    mask_for_diffusion,
    mask_for_mntp,
    mntp_loss,
    sample_t,
)
from diffembed.train.pretrain_data import sample_generators


def test_diffusion_loss_by_hand():
    # Two masked positions in a sequence of length 4 with t = 0.5; uniform logits over V = 4.
    logits = torch.zeros(2, 4)
    targets = torch.tensor([1, 2])
    t = torch.tensor([0.5, 0.5])
    expected = 2 * math.log(4) / 0.5 / 4
    assert diffusion_loss(logits, targets, t, seq_len=4).item() == pytest.approx(expected, rel=1e-6)


def test_mask_for_diffusion_rate_and_determinism():
    ids = torch.arange(4000).view(2, 2000) % 50 + 10
    t = torch.tensor([0.1, 0.9])
    noisy, masked = mask_for_diffusion(ids, 3, t, sample_generators(0, 0, range(2)))
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], 3))
    assert torch.equal(noisy[~masked], ids[~masked])
    rates = masked.float().mean(dim=1)
    assert abs(rates[0] - 0.1) < 0.03 and abs(rates[1] - 0.9) < 0.03
    again, _ = mask_for_diffusion(ids, 3, t, sample_generators(0, 0, range(2)))
    assert torch.equal(noisy, again)
    # Row 1's noise does not depend on which other rows share its batch.
    alone, _ = mask_for_diffusion(ids[1:], 3, t[1:], sample_generators(0, 0, [1]))
    assert torch.equal(alone[0], noisy[1])


def test_sample_t_range():
    t = sample_t(sample_generators(1, 2, range(500)), eps=0.01)
    assert t.min() >= 0.01 and t.max() <= 1.0 and abs(t.mean() - 0.505) < 0.05


def test_ar_loss_matches_transformers_causal_lm_loss():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=50,
    )
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 50, (3, 12))
    out = model(input_ids=ids, labels=ids)
    ours = ar_loss(out.logits[:, :-1], ids) / 3  # same token count per row: mean of means
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_mntp_masking_and_loss():
    ids = torch.randint(10, 60, (4, 300))
    ids[:, 5] = 1  # a special token
    gens = sample_generators(0, 0, range(4))
    noisy, sel = mask_for_mntp(ids, 3, 60, gens, rate=0.2, special_ids=(1,))
    assert not sel[:, 0].any() and not sel[:, 5].any()
    assert abs(sel.float().mean() - 0.2) < 0.04
    assert torch.equal(noisy[~sel], ids[~sel])
    share_masked = (noisy[sel] == 3).float().mean()
    assert 0.7 < share_masked < 0.9
    # Loss: per-sequence mean, summed: two rows with 1 and 2 selected, uniform logits.
    logits = torch.zeros(3, 8)
    loss = mntp_loss(logits, torch.tensor([1, 2, 3]), torch.tensor([1.0, 2.0, 2.0]))
    assert loss.item() == pytest.approx(2 * math.log(8), rel=1e-6)
