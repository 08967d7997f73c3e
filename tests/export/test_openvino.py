"""OpenVINO export: binary convolutions really run as BinaryConvolution, with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import irconvert
from irconvert.errors import MissingDependencyError
from irconvert.export import openvino_export
from irconvert.export.openvino_export import (
    binary_conv_layers,
    compile_openvino,
    export_openvino,
)
from irconvert.export.runtime import load_predictor
from tests.conftest import RESNET20, TinyNet
from tests.export.test_freeze import randomize_bn
from tests.export.test_onnx import assert_parity, first_binary
from tests.export.test_packed import binarized

pytestmark = pytest.mark.openvino

try:
    import openvino  # noqa: F401

    HAVE_OV = True
except ImportError:
    HAVE_OV = False
needs_ov = pytest.mark.skipif(not HAVE_OV, reason="openvino is not installed "
                              "(pip install 'irconvert[openvino]')")


def run(xml: Path, x: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    compiled = compile_openvino(xml, x.shape[0])
    return np.asarray(compiled(x.numpy())[0]), binary_conv_layers(compiled)


@needs_ov
def test_tiny_net(tmp_path: Path) -> None:
    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    model.eval()
    res = export_openvino(model, tmp_path / "ov")
    assert res.xml == tmp_path / "ov" / "model.xml" and res.bin.is_file()
    assert res.binary_convolutions == 2 and res.fallback == {}
    x = torch.randn(3, 3, 8, 8)
    out, binary = run(res.xml, x)
    assert len(binary) == 2  # the CPU plugin runs both as bit-packed kernels
    assert_parity(model, out, x)
    assert_parity(model, load_predictor(tmp_path / "ov")(x.numpy()), x)


@needs_ov
def test_sign_of_zero_and_padding(tmp_path: Path) -> None:
    model, x = first_binary()  # binary conv on the raw input, with exact +-0.0
    res = export_openvino(model, tmp_path / "m.xml", input_size=(8, 6, 6))
    assert res.xml.name == "m.xml" and res.bin == tmp_path / "m.bin"
    out, binary = run(res.xml, x)
    assert len(binary) == 2
    assert_parity(model, out, x)


class OddChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.conv1 = nn.Conv2d(12, 16, 3, padding=1)  # 12 inputs: no binary kernel
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.head = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.hardtanh(self.stem(x))
        x = self.conv2(torch.nn.functional.hardtanh(self.conv1(x)))
        return self.head(self.fc(x.mean((2, 3))))


@needs_ov
def test_fallback_is_reported_and_exact(tmp_path: Path) -> None:
    model = OddChannels()
    irconvert.binarize_(model, irconvert.BinarizeConfig(include=("conv*", "fc")), warn=False)
    model.eval()
    res = export_openvino(model, tmp_path / "ov", input_size=(3, 8, 8))
    assert res.binary_convolutions == 1
    assert set(res.fallback) == {"conv1", "fc"}
    assert "multiple of 8" in res.fallback["conv1"]
    x = torch.randn(2, 3, 8, 8)
    out, binary = run(res.xml, x)
    assert len(binary) == 1
    assert_parity(model, out, x)


@needs_ov
@pytest.mark.parametrize("arch", ["cifar_resnet20", "irnet_resnet20"])  # irnet: a BatchNorm1d head
def test_resnet20(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    model = binarized(arch, 10, RESNET20 if arch == "cifar_resnet20" else None)
    res = export_openvino(model, tmp_path / "ov")
    assert res.binary_convolutions == 18 and res.fallback == {}
    x = torch.randn(4, 3, 32, 32)
    out, binary = run(res.xml, x)
    assert len(binary) == 18
    assert_parity(model, out, x)


def test_missing_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'irconvert\[openvino\]'"):
        openvino_export.import_openvino()
    with pytest.raises(MissingDependencyError):
        export_openvino(TinyNet(), tmp_path / "ov")
    assert list(tmp_path.iterdir()) == []


@needs_ov
@pytest.mark.slow
def test_resnet18(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = binarized("resnet18", 1000)
    res = export_openvino(model, tmp_path / "ov")
    assert res.binary_convolutions == 16 and res.fallback == {}
    x = torch.randn(2, 3, 224, 224)
    out, binary = run(res.xml, x)
    assert len(binary) == 16
    assert_parity(model, out, x)


@needs_ov
def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino as ov

    def broken(model: object, path: str, **kwargs: object) -> None:
        Path(path).write_text("<partial")
        Path(path).with_suffix(".bin").write_bytes(b"\0")
        raise RuntimeError("disk full")

    import openvino.opset13 as ops

    param = ops.parameter([1, 3], np.float32)
    tiny = ov.Model([ops.relu(param)], [param])
    monkeypatch.setattr(openvino_export, "to_openvino_model",
                        lambda *a, **k: openvino_export.OpenVinoGraph(tiny, 0))
    monkeypatch.setattr(ov, "save_model", broken)
    for target in (tmp_path / "m.xml", tmp_path / "ov"):
        with pytest.raises(RuntimeError, match="disk full"):
            export_openvino(TinyNet(), target)
    assert list(tmp_path.iterdir()) == []


@needs_ov
def test_irc_exports_to_openvino_with_parity(tmp_path: Path) -> None:
    """From the .irc alone: every binary conv runs bit-packed, predictions match."""
    from irconvert.export.api import export_checkpoint
    from irconvert.export.packed import load_packed, save_packed

    torch.manual_seed(0)
    model = binarized("cifar_resnet20", 10)
    save_packed(model, tmp_path / "m.irc", arch="cifar_resnet20", num_classes=10,
                config=irconvert.BinarizeConfig())
    summary = export_checkpoint(tmp_path / "m.irc", "openvino", tmp_path / "ov")
    assert summary.details["BinaryConvolution layers"] == "18"
    x = torch.randn(4, 3, 32, 32)
    out, binary = run(tmp_path / "ov" / "model.xml", x)
    assert len(binary) == 18
    assert_parity(load_packed(tmp_path / "m.irc"), out, x)


@needs_ov
def test_a_static_batch_ir_compiles_with_plain_openvino(tmp_path: Path) -> None:
    import openvino as ov

    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    model.eval()
    res = export_openvino(model, tmp_path / "ov", batch=3)
    core = ov.Core()
    read = core.read_model(str(res.xml))
    assert list(read.input(0).get_shape()) == [3, 3, 8, 8]
    # what a user writes: no reshape; f32 so that the comparison is exact
    compiled = core.compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert len(binary_conv_layers(compiled)) == 2
    x = torch.randn(3, 3, 8, 8)
    assert_parity(model, np.asarray(compiled(x.numpy())[0]), x)
    core.compile_model(core.read_model(str(res.xml)), "CPU")  # the default hint compiles too
    # irconvert's own predictor still runs it at any batch size
    x5 = torch.randn(5, 3, 8, 8)
    assert_parity(model, load_predictor(tmp_path / "ov")(x5.numpy()), x5)
