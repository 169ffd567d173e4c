"""Pooling functions against hand-computed values, with left and right padding."""

import pytest
import torch

from diffembed.model.pooling import last_token_pool, mean_pool, pool, weighted_mean_pool

H = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]]])  # [1, 3, 2]


def test_mean_pool_ignores_masked():
    assert torch.allclose(mean_pool(H, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 1.0]]))


def test_weighted_mean_pool_weights_by_position_among_pooled_tokens():
    # pooled tokens 2 and 3 get weights 1 and 2 -> (3*1 + 5*2)/3, (2*1 + 4*2)/3
    out = weighted_mean_pool(H, torch.tensor([[0, 1, 1]]))
    assert torch.allclose(out, torch.tensor([[13 / 3, 10 / 3]]))


def test_last_token_pool_right_and_left_padding():
    assert torch.allclose(last_token_pool(H, torch.tensor([[1, 1, 0]])), torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(last_token_pool(H, torch.tensor([[0, 1, 1]])), torch.tensor([[5.0, 4.0]]))


def test_empty_mask_and_bad_mode_raise():
    with pytest.raises(ValueError, match="no token to pool in batch rows \\[0\\]"):
        mean_pool(H, torch.tensor([[0, 0, 0]]))
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(H, torch.tensor([[1, 1, 1]]), "max")
