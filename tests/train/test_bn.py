"""BatchNorm re-estimation after binarization: exact averages, modes restored."""

from __future__ import annotations

import torch
from torch import nn

from irconvert.train.bn import recalibrate_bn


def test_running_stats_are_the_exact_average_over_batches() -> None:
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn).eval()
    batches = [torch.randn(8, 3) * (i + 1) + i for i in range(4)]
    used = recalibrate_bn(model, batches, steps=3)
    assert used == 3
    means = torch.stack([b.mean(0) for b in batches[:3]]).mean(0)
    variances = torch.stack([b.var(0, unbiased=True) for b in batches[:3]]).mean(0)
    torch.testing.assert_close(bn.running_mean, means)
    torch.testing.assert_close(bn.running_var, variances)
    assert bn.momentum == 0.1  # restored
    assert not model.training  # restored


def test_pairs_and_no_batchnorm() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    assert recalibrate_bn(model, [(torch.randn(2, 3), torch.zeros(2))], steps=5) == 0
    bn_model = nn.Sequential(nn.BatchNorm1d(3))
    assert recalibrate_bn(bn_model, [(torch.randn(4, 3), torch.zeros(4))], steps=5) == 1
