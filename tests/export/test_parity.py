"""Layer-by-layer parity of ONNX and OpenVINO exports, with activation thresholds on.

The model has every kind of binary layer that one-signed-input thresholds
reach: a 1x1 conv after a depthwise conv and ReLU (MobileNet's), a 3x3 conv
with padding, a grouped conv (a float convolution of sign(x) in OpenVINO) and
a binary linear layer, with thresholds that include the calibrated ReLU
threshold ``nextafter(0, inf)`` (a subnormal: zeros go to -1), 0, and
negative values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import irconvert
from irconvert.export import export_onnx, freeze
from irconvert.export import openvino_export as ovx
from irconvert.export.parity import check_parity
from irconvert.export.sign_names import SIGN_SUFFIX
from irconvert.nn import IRLayer
from tests.export.test_freeze import randomize_bn
from tests.export.test_thresholds import needs_ov

SUBNORMAL = float(np.nextafter(np.float32(0), np.float32(1)))
SIZE = (3, 12, 12)


class Mobile(nn.Module):
    """stem -> depthwise -> ReLU -> binary 1x1 -> 3x3 -> ReLU -> grouped -> ReLU -> linear -> fc."""

    irconvert_input_size = SIZE

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn1 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 24, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(24)
        self.c3 = nn.Conv2d(24, 32, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False)
        self.bn4 = nn.BatchNorm2d(32)
        self.hidden = nn.Linear(32, 24)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.dw(x)))
        x = self.bn2(self.pw(x))
        x = F.relu(self.bn3(self.c3(x)))
        x = F.relu(self.bn4(self.grouped(x)))
        return self.fc(self.hidden(x.mean((2, 3))))


def thresholded_model() -> nn.Module:
    torch.manual_seed(0)
    model = Mobile()
    irconvert.binarize_(model, irconvert.BinarizeConfig(act_bits=1, one_signed_inputs="warn",
                                                  keep_grouped=False),
                        warn=False)
    randomize_bn(model)
    gen = torch.Generator().manual_seed(1)
    for name in ("pw", "grouped", "hidden"):
        layer = model.get_submodule(name)
        assert isinstance(layer, IRLayer) and layer.binary_act
        n = layer.in_channels if name != "hidden" else layer.in_features  # type: ignore[attr-defined]
        values = torch.rand(n, generator=gen) * 0.4
        values[::3] = SUBNORMAL  # a ReLU channel whose median input is 0
        values[1::5] = 0.0
        layer.enable_act_threshold(values)
    return model.eval()


@pytest.fixture(scope="module")
def frozen() -> nn.Module:
    return freeze(thresholded_model())


def inputs(seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(4, *SIZE).astype(np.float32)


def test_the_thresholded_layers_see_exact_zeros(frozen: nn.Module) -> None:
    # The case the export must get right: ReLU zeros sitting on a subnormal threshold.
    layer = frozen.get_submodule("pw")
    assert layer.act_threshold is not None and (layer.act_threshold == SUBNORMAL).any()
    seen = {}
    handle = layer.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    frozen(torch.from_numpy(inputs()))
    handle.remove()
    assert (seen["x"] == 0).float().mean() > 0.2


@pytest.mark.parametrize("opset", [17, 18])
def test_onnx_names_every_sign_and_agrees_layer_by_layer(frozen: nn.Module, tmp_path: Path,
                                                         opset: int) -> None:
    import onnx

    path = tmp_path / "m.onnx"
    export_onnx(frozen, path, input_size=SIZE, opset=opset)
    names = {o for n in onnx.load(str(path)).graph.node for o in n.output}
    assert {f"{n}{SIGN_SUFFIX}" for n in ("pw", "c3", "grouped", "hidden")} <= names
    report = check_parity(frozen, path, inputs())
    assert report.ok, report.summary()
    assert [row.layer for row in report.layers] == ["pw", "c3", "grouped", "hidden"]


@needs_ov
def test_openvino_agrees_layer_by_layer_with_thresholds(frozen: nn.Module,
                                                        tmp_path: Path) -> None:
    result = ovx.export_openvino(frozen, tmp_path / "ov", input_size=SIZE, check=False)
    assert result.binary_convolutions == 2  # pw and c3; grouped and hidden stay float
    for seed in range(3):
        report = check_parity(frozen, tmp_path / "ov", inputs(seed))
        assert report.ok, report.summary()
        assert len(report.layers) == 4


@needs_ov
def test_the_check_fails_when_a_subnormal_threshold_is_flushed(
        frozen: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the exports did before: OpenVINO's converter reads the subnormal as
    # 0, and every ReLU zero of such a channel turns +1.
    monkeypatch.setattr(ovx, "normal_thresholds", lambda model: model)  # the bug, put back
    ovx.export_openvino(frozen, tmp_path / "ov", input_size=SIZE, check=False)
    report = check_parity(frozen, tmp_path / "ov", inputs())
    assert not report.ok
    assert report.failure.startswith("pw: ") and "the very same input" in report.failure


def test_normal_thresholds_keep_every_normal_input_on_its_side(frozen: nn.Module) -> None:
    fixed = ovx.normal_thresholds(frozen)
    b_old = frozen.get_submodule("pw").act_threshold
    b_new = fixed.get_submodule("pw").act_threshold
    assert b_old is not None and b_new is not None
    assert fixed is not frozen and (b_old == SUBNORMAL).any()  # the original is untouched
    assert not ((b_new != 0) & (b_new.abs() < np.finfo(np.float32).tiny)).any()
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, np.finfo(np.float32).tiny])
    for old, new in zip(b_old.tolist(), b_new.tolist(), strict=True):
        assert torch.equal(x - torch.tensor(old) >= 0, x - torch.tensor(new) >= 0)
    assert ovx.normal_thresholds(fixed) is fixed  # nothing left to change: no copy


def test_a_flip_near_the_threshold_is_replayed_and_one_far_from_it_fails(
        frozen: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import irconvert.export.parity as parity

    path = tmp_path / "m.onnx"
    export_onnx(frozen, path, input_size=SIZE)
    x = inputs()
    signs, values, logits = parity.engine_signs(path, x)
    pre = {}
    layer = frozen.get_submodule("c3")
    handle = layer.register_forward_pre_hook(lambda m, a: pre.update(x=a[0].numpy()))
    frozen(torch.from_numpy(x))
    handle.remove()
    nearest = np.unravel_index(np.argmin(np.abs(pre["x"])), pre["x"].shape)
    farthest = np.unravel_index(np.argmax(np.abs(pre["x"])), pre["x"].shape)

    def engine_with(flipped: tuple[int, ...], nudge: float) -> None:
        bits = {k: v.copy() for k, v in signs.items()}
        bits["c3"][flipped] = ~bits["c3"][flipped]
        monkeypatch.setattr(parity, "engine_signs", lambda *a, **k: (bits, values, logits))
        # the "engine" really computed that pre-activation a rounding away
        monkeypatch.setattr(parity, "MARGIN_RTOL", nudge)

    engine_with(tuple(int(i) for i in farthest), 1e-5)
    report = check_parity(frozen, path, x)
    assert not report.ok and report.failure.startswith("c3: 1 of")
    # Flip the nearest one, with a margin wide enough to cover it: replayed,
    # and then the logits must match the engine's (they do not: the fake
    # engine's logits are those without the flip), unless nothing downstream moves.
    margin = float(np.abs(pre["x"][nearest])) * 2 / max(1.0, float(np.abs(pre["x"]).max()))
    engine_with(tuple(int(i) for i in nearest), max(margin, 1e-12))
    report = check_parity(frozen, path, x)
    assert report.near == 1
    assert report.layers[1].near == 1
