"""ONNX export: standard ops, dynamic batch, onnxruntime reproduces PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import irconvert
from irconvert.errors import ExportError
from irconvert.export.onnx_export import export_onnx
from irconvert.export.runtime import load_predictor
from tests.conftest import RESNET20, TinyNet
from tests.export.test_packed import binarized

ort = pytest.importorskip("onnxruntime")


def session_run(path: Path, x: torch.Tensor) -> np.ndarray:
    # a default session (all graph optimizations on), as a user would open it
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return out


def assert_parity(model: nn.Module, out: np.ndarray, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4
    assert np.array_equal(out.argmax(1), ref.argmax(1))


def check_graph(path: Path, opset: int) -> onnx.ModelProto:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert max(o.version for o in proto.opset_import) == opset
    assert {n.domain for n in proto.graph.node} <= {""}
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value  # dynamic batch axis
    return proto


@pytest.fixture(scope="module")
def resnet20_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = binarized("cifar_resnet20", 10, RESNET20)
    out = tmp_path_factory.mktemp("onnx")
    plain = export_onnx(model, out / "plain.onnx").path
    packed = export_onnx(model, out / "packed.onnx", packed=True).path
    return model, plain, packed


def test_resnet20_parity_both_modes(resnet20_onnx: tuple[nn.Module, Path, Path]) -> None:
    model, plain, packed = resnet20_onnx
    proto = check_graph(plain, 18)
    ops = {n.op_type for n in proto.graph.node}
    assert {"GreaterOrEqual", "Where", "Conv"} <= ops  # sign(0)=+1 as Where(x >= 0, 1, -1)
    check_graph(packed, 18)
    assert packed.stat().st_size < plain.stat().st_size / 4
    torch.manual_seed(1)
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        a, b = session_run(plain, x), session_run(packed, x)
        assert_parity(model, a, x)
        assert np.array_equal(a, b)  # packed weights are the same numbers
        assert_parity(model, load_predictor(packed)(x.numpy()), x)


def test_irnet_head_bn_parity(tmp_path: Path) -> None:
    # the authors' network: a float BatchNorm1d between pooling and classifier
    model = binarized("irnet_resnet20", 10)
    path = export_onnx(model, tmp_path / "m.onnx").path
    check_graph(path, 18)
    x = torch.randn(5, 3, 32, 32)
    assert_parity(model, session_run(path, x), x)


def test_packed_graph_stores_bits(resnet20_onnx: tuple[nn.Module, Path, Path]) -> None:
    model, _, packed = resnet20_onnx
    proto = onnx.load(str(packed))
    uint8 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    layers = [m for m in model.modules() if isinstance(m, irconvert.IRConv2d)]
    assert len(uint8) == len(layers) == 18
    assert sum(int(np.prod(i.dims)) for i in uint8) == sum(
        (m.weight.numel() + 7) // 8 for m in layers)


@pytest.mark.parametrize("packed", [False, True])
def test_opset17_legacy_exporter(tmp_path: Path, packed: bool) -> None:
    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    model.eval()
    res = export_onnx(model, tmp_path / "m.onnx", packed=packed, opset=17)
    assert res.exporter == "torchscript"
    check_graph(res.path, 17)
    x = torch.randn(3, 3, 8, 8)
    # default BatchNorm statistics: binary conv outputs of exactly 0 reach the
    # next sign; the predictor keeps onnxruntime from folding BN into them.
    assert_parity(model, load_predictor(res.path)(x.numpy()), x)


class FirstBinary(nn.Module):
    """A binary conv that sees the raw input: exact zeros reach the sign."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.bn(self.conv(x))).mean((2, 3)))


def first_binary() -> tuple[nn.Module, torch.Tensor]:
    model = FirstBinary()
    irconvert.binarize_(model, irconvert.BinarizeConfig(keep_stem=False), warn=False)
    model.eval()
    x = torch.randn(4, 8, 6, 6)
    x[0] = 0.0
    x[1, :, ::2] = -0.0
    return model, x


def test_sign_of_zero_and_padding(tmp_path: Path) -> None:
    model, x = first_binary()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(8, 6, 6)).path
    # a sign flip (0 -> -1, or a padding value other than 0) changes logits by ~0.1
    assert_parity(model, session_run(path, x), x)
    assert_parity(model, load_predictor(path)(x.numpy()), x)


def test_errors(tmp_path: Path) -> None:
    model = TinyNet()
    with pytest.raises(ExportError, match="no binarized layer"):
        export_onnx(model, tmp_path / "a.onnx")
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    with pytest.raises(ExportError, match="opset 16 is too old"):
        export_onnx(model, tmp_path / "a.onnx", opset=16)
    (tmp_path / "b.onnx").write_bytes(b"keep")
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(model, tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").read_bytes() == b"keep"

    class Histogram(TinyNet):  # aten.histc has no ONNX translation
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = super().forward(x)
            return y + torch.histc(y, bins=4).sum()

    odd = Histogram()
    irconvert.binarize_(odd, irconvert.BinarizeConfig(), warn=False)
    with pytest.raises(ExportError, match=r"cannot be expressed in ONNX: aten\.histc"):
        export_onnx(odd.eval(), tmp_path / "c.onnx", opset=18)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("packed", [False, True])
def test_resnet18_parity(tmp_path: Path, packed: bool) -> None:
    torch.manual_seed(0)
    model = binarized("resnet18", 1000)
    path = export_onnx(model, tmp_path / "r18.onnx", packed=packed).path
    check_graph(path, 18)
    x = torch.randn(2, 3, 224, 224)
    assert_parity(model, session_run(path, x), x)
    assert_parity(model, load_predictor(path)(x.numpy()), x)


def test_irc_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    """A user with only the .irc (as results/ ships) gets ONNX that predicts the same."""
    from irconvert.export.api import export_checkpoint
    from irconvert.export.packed import load_packed, save_packed
    from irconvert.models import build_model
    from tests.export.test_freeze import randomize_bn

    torch.manual_seed(0)
    model = build_model("cifar_resnet20", num_classes=10)
    cfg = irconvert.BinarizeConfig()
    irconvert.binarize_(model, cfg, warn=False)
    randomize_bn(model)
    norm = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    save_packed(model.eval(), tmp_path / "m.irc", arch="cifar_resnet20", num_classes=10,
                config=cfg, metadata={"normalization": norm})
    summary = export_checkpoint(tmp_path / "m.irc", "onnx", tmp_path / "m.onnx")
    assert summary.binary_layers == 18
    check_graph(tmp_path / "m.onnx", 18)
    predictor = load_predictor(tmp_path / "m.onnx")
    # the .irc's preprocessing carries over, with the input size it was traced at
    assert predictor.preprocessing == {"normalization": norm, "input_size": [3, 32, 32]}
    x = torch.randn(5, 3, 32, 32)
    assert_parity(load_packed(tmp_path / "m.irc"), predictor(x.numpy()), x)
    assert_parity(model, session_run(tmp_path / "m.onnx", x), x)
    # a recorded input size is the size the graph is traced at, not the model's default
    save_packed(model, tmp_path / "m40.irc", arch="cifar_resnet20", num_classes=10,
                config=cfg, metadata={"input_size": [3, 40, 40]})
    export_checkpoint(tmp_path / "m40.irc", "onnx", tmp_path / "m40.onnx")
    predictor = load_predictor(tmp_path / "m40.onnx")
    assert predictor.input_size == (3, 40, 40)
    assert predictor.preprocessing == {"input_size": [3, 40, 40]}
    x = torch.randn(2, 3, 40, 40)
    assert_parity(model, predictor(x.numpy()), x)


def test_an_input_of_another_size_is_a_one_line_error(tmp_path: Path) -> None:
    """The graph is traced at one C,H,W; the engine's own error names tensor indices."""
    from irconvert.errors import DataError

    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    path = export_onnx(model.eval(), tmp_path / "m.onnx", input_size=(3, 8, 8)).path
    predictor = load_predictor(path)
    assert predictor.fixed and predictor.input_size == (3, 8, 8)
    predictor(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"m\.onnx: takes inputs of C,H,W = 3,8,8 \(fixed when "
                       r"it was exported\), not 3,10,10; export it again with --input-size "
                       r"3,10,10"):
        predictor(np.zeros((2, 3, 10, 10), np.float32))
