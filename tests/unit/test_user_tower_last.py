"""Serving computes the final block at the newest position only; it must equal the full pass."""

from __future__ import annotations

import torch

from stream_rec.model.net import ModelConfig, UserEncoder, UserTower


def test_last_position_only_equals_the_full_pass_with_padding() -> None:
    torch.manual_seed(0)
    tower = UserTower(ModelConfig(dim=32, layers=3, heads=2, max_len=20, dropout=0.0)).eval()
    seq = torch.randn(5, 12, 32)
    mask = torch.ones(5, 12)
    for row, pad in enumerate([0, 3, 7, 11, 0]):  # left padding of different lengths
        mask[row, :pad] = 0.0
        seq[row, :pad] = 0.0
    with torch.no_grad():
        full = tower(seq, mask)[:, -1, :]
        last = tower.last(seq, mask)
        served = UserEncoder(tower)(seq, mask)
    assert last.shape == (5, 32)
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(served, full, atol=1e-5, rtol=1e-5)


def test_a_single_block_tower_too() -> None:
    torch.manual_seed(1)
    tower = UserTower(ModelConfig(dim=16, layers=1, heads=2, max_len=8, dropout=0.0)).eval()
    seq, mask = torch.randn(3, 8, 16), torch.ones(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(tower.last(seq, mask), tower(seq, mask)[:, -1, :])
