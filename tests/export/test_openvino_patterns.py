"""Graph patterns that crash OpenVINO's BinaryConvolution are exported as float convolutions.

The model runs in a child process: if the pattern came back, a segmentation
fault would otherwise take the whole test session down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import irconvert
from irconvert.export.openvino_export import export_openvino
from tests.export.test_openvino import needs_ov

pytestmark = pytest.mark.openvino


class ChannelsLastScale(nn.Module):
    """A per-channel scale applied in NHWC, as LayerNorm2d does: ends with a permute."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.permute(0, 2, 3, 1) * self.weight).permute(0, 3, 1, 2)


def permuted_input_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), ChannelsLastScale(16), nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@needs_ov
def test_permute_before_binary_conv_runs_as_float_conv(tmp_path: Path) -> None:
    model = permuted_input_net()
    report = irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    assert report.binarized_layers == 1
    model.eval()
    res = export_openvino(model, tmp_path / "ov", input_size=(3, 8, 8))
    assert res.binary_convolutions == 0
    [(_node, why)] = res.fallback.items()
    assert "Transpose" in why and "crashes" in why
    x = torch.randn(2, 3, 8, 8)
    np.save(tmp_path / "x.npy", x.numpy())
    code = textwrap.dedent(f"""
        import numpy as np
        from irconvert.export.runtime import load_predictor
        x = np.load({str(tmp_path / 'x.npy')!r})
        for _ in range(3):
            y = load_predictor({str(tmp_path / 'ov')!r}, threads=1)(x)
        np.save({str(tmp_path / 'y.npy')!r}, y)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-4)
