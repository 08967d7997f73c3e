"""int8 for the layers kept in full precision: really int8 on the CPU, binary convs unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import irconvert
from irconvert.errors import DataError
from irconvert.export.calibration import calibration_images
from irconvert.export.openvino_export import (
    _POOL_NODES,
    _int8_row,
    _runtime_row,
    binary_conv_layers,
    compile_openvino,
    export_openvino,
)
from irconvert.export.openvino_int8 import (
    WEIGHT_QMAX,
    activation_range,
    int8_weights,
    kept_layers,
    quantize_kept_layers,
    runtime_precisions,
)
from tests.conftest import TinyNet
from tests.export.test_freeze import randomize_bn

pytestmark = pytest.mark.openvino
pytest.importorskip("openvino", reason="openvino is not installed "
                    "(pip install 'irconvert[openvino]')")

STEP = 0.01  # the int8 grid of the test inputs and stem weights


class ResidualNet(nn.Module):
    """stem -> binary block with a 1x1 stride-2 downsample shortcut -> classifier."""

    irconvert_input_size = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False),
                                        nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardtanh(self.bn0(self.stem(x)))
        y = nn.functional.hardtanh(self.bn1(self.conv1(x)) + self.downsample(x))
        y = nn.functional.hardtanh(self.bn2(self.conv2(y)) + y)
        return self.fc(y.mean((2, 3)))


def grid_model() -> ResidualNet:
    """A binarized ResidualNet whose stem weights lie on their own int8 grid (:func:`grid_stem`)."""
    torch.manual_seed(0)
    model = ResidualNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    grid_stem(model.stem)
    return model.eval()


def grid_stem(stem: nn.Conv2d) -> None:
    """Stem weights on their own int8 grid.

    Each output channel's largest |weight| is WEIGHT_QMAX steps, so per-channel int8
    holds the weights exactly; with inputs on the calibrated grid too
    (:func:`grid_images`) the int8 stem computes what the fp32 one does, and
    the binary layers after it see the same signs.
    """
    w = torch.randint(-WEIGHT_QMAX, WEIGHT_QMAX + 1, stem.weight.shape).float()
    w[:, 0, 0, 0] = WEIGHT_QMAX
    stem.weight.data = w * STEP


def grid_images(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (n, 3, 8, 8), generator=g).float() * STEP
    x[0, 0, 0, :2] = torch.tensor([-128 * STEP, 127 * STEP])  # the calibrated range
    return x.numpy()


def kept_kernels(compiled: object) -> dict[str, tuple[str, str, str]]:
    """Runtime Convolution / FullyConnected nodes (the kept layers) by name."""
    rows = {}
    for node in compiled.get_runtime_model().get_ops():  # type: ignore[attr-defined]
        info = node.get_rt_info()
        kind = str(info["layerType"].astype(str)) if "layerType" in info else ""
        if kind in ("Convolution", "FullyConnected"):
            rows[node.get_friendly_name()] = (kind, str(info["runtimePrecision"].astype(str)),
                                              str(info["primitiveType"].astype(str)))
    return rows


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResidualNet, object, object]:
    model = grid_model()
    out = tmp_path_factory.mktemp("ov")
    fp32 = export_openvino(model, out / "fp32")
    int8 = export_openvino(model, out / "int8", calibration=grid_images(64, 1),
                           calibration_source="grid")
    return model, fp32, int8


def test_kept_layers_run_int8_in_the_compiled_graph(exports: tuple) -> None:
    _, fp32, int8 = exports
    assert int8.int8_layers == 3 and int8.calibration == "grid"
    report = {layer.name: layer for layer in int8.layers}
    assert {n for n, lay in report.items() if lay.precision == "int8"} == {
        "stem", "downsample.0", "fc"}
    assert {n for n, lay in report.items() if lay.precision == "binary"} == {"conv1", "conv2"}
    assert report["stem"].why.startswith("stem 3->8 3x3")
    assert report["downsample.0"].why.startswith("1x1 downsample 8->16 1x1/2")
    assert report["fc"].why.startswith("classifier 16->5")

    compiled = compile_openvino(int8.xml, 4)
    kernels = kept_kernels(compiled)
    assert len(kernels) == 3  # stem, downsample, classifier
    # the runtime precision says int8; kernel names differ between CPUs
    # (brgemm_avx512_I8, brgconv_avx512_amx_1x1_i8, jit_avx2_...): not checked
    for kind, precision, kernel in kernels.values():
        assert precision in ("u8", "i8"), (kind, precision, kernel)
    # binary convolutions are untouched
    assert len(binary_conv_layers(compiled)) == 2 == int8.binary_convolutions
    assert len(binary_conv_layers(compile_openvino(fp32.xml, 4))) == 2
    # the weights are stored as int8 (4x smaller than fp32)
    assert 'element_type="i8"' in int8.xml.read_text()
    assert 'element_type="i8"' not in fp32.xml.read_text()


def test_without_calibration_the_kept_layers_stay_fp32(exports: tuple) -> None:
    model, fp32, _ = exports
    assert fp32.int8_layers == 0 and fp32.calibration is None
    kept = [lay for lay in fp32.layers if lay.precision == "fp32"]
    assert {lay.name for lay in kept} == {"stem", "downsample.0", "fc"}
    assert all("no calibration data" in lay.why for lay in kept)
    compiled = compile_openvino(fp32.xml, 4)
    assert all(p == "f32" for _, p, _ in kept_kernels(compiled).values())
    x = torch.from_numpy(grid_images(4, 2))
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(np.asarray(compiled(x.numpy())[0]) - ref).max() <= 1e-4  # exact as before


def test_int8_parity(tmp_path: Path) -> None:
    """Stem on its grid, binary convs, int8 classifier: logits within int8 rounding."""
    torch.manual_seed(0)
    model = TinyNet(num_classes=6)
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    grid_stem(model.stem)
    model.eval()
    res = export_openvino(model, tmp_path / "ov", calibration=grid_images(64, 1))
    assert res.int8_layers == 2
    x = grid_images(32, 3)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    compiled = compile_openvino(res.xml, len(x))
    assert len(binary_conv_layers(compiled)) == 2
    out = np.asarray(compiled(x)[0])
    scale = np.abs(ref).max()
    err = np.abs(out - ref).max()
    assert err <= 0.05 * scale, (err, scale)  # the classifier's int8 rounding only
    top2 = np.sort(ref, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * err  # a margin int8 rounding cannot cross
    assert clear.sum() >= len(x) // 2
    assert np.array_equal(out.argmax(1)[clear], ref.argmax(1)[clear])


def test_int8_helpers() -> None:
    lo, hi = activation_range(-1.0, 3.0)
    scale = (hi - lo) / 255
    assert lo <= -1.0 + scale and hi >= 3.0 - scale  # within a step of the measured range
    assert abs(round(-lo / scale) - (-lo / scale)) < 1e-6  # 0 is a level
    assert activation_range(0.5, 2.0)[0] == 0.0  # non-negative: u8 from 0
    w = np.array([[1.0, -0.5], [0.0, 0.0], [-2.0, 1.0]], np.float32)
    q, s = int8_weights(w, 0)
    assert q.dtype == np.int8 and q[0, 0] == 64 and q[2, 0] == -64 and not q[1].any()
    assert np.allclose(q * s, w, atol=s.max() / 2)


def _folder(root: Path, size: int, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def test_calibration_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 8)
    meta = {"normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "input_size": [3, 8, 8]}
    calib = calibration_images(f"imagefolder:{root}", 4, meta)
    assert calib.images.shape == (4, 3, 8, 8) and calib.images.dtype == np.float32
    assert "train, 4 of 6 images" in calib.source
    assert calib.images.min() >= -2.0 and calib.images.max() <= 2.0  # (x - 0.5) / 0.25
    with pytest.raises(DataError, match="the model takes 3x32x32"):
        calibration_images(f"imagefolder:{root}", 2, {"input_size": [3, 32, 32]})
    with pytest.raises(DataError, match="not found"):
        calibration_images(f"imagefolder:{tmp_path / 'none'}", 2, meta)


def test_runtime_precisions_names_original_layers(exports: tuple) -> None:
    _, _, int8 = exports
    names = runtime_precisions(compile_openvino(int8.xml, 1))
    assert any(kind == "BinaryConvolution" for kind, _, _ in names.values())


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_int8_layers_do_not_saturate_on_cpus_without_vnni(kind: str) -> None:
    """Inputs and weights at the top of their ranges: every u8 x i8 pair must fit int16.

    CPUs without VNNI (AVX2) add u8 x i8 products in pairs into int16 with
    saturation; with weights up to 127 this conv came out at half its value
    on an AVX2 AMD EPYC. (On a VNNI CPU it passes either way.)
    """
    import openvino as ov
    import openvino.opset13 as ops

    w = np.ones((16, 72), np.float32)
    w[:, 0] = 0.5  # two magnitudes per channel: a float layer, not a binary one
    if kind == "conv":
        x = ops.parameter([1, 8, 4, 4], np.float32)
        layer = ops.convolution(x, ops.constant(w.reshape(16, 8, 3, 3)), [1, 1], [0, 0],
                                [0, 0], [1, 1])
        inputs = np.full((1, 8, 4, 4), 2.55, np.float32)
    else:
        x = ops.parameter([1, 72], np.float32)
        layer = ops.matmul(x, ops.constant(w), False, True)
        inputs = np.full((1, 72), 2.55, np.float32)
    model = ov.Model([layer], [x])
    layers, _ = kept_layers(model)
    assert len(layers) == 1
    quantize_kept_layers(layers, [(0.0, 2.55)])  # 2.55 is u8 255
    model.validate_nodes_and_infer_types()
    # f32 for what is not int8: the default hint is bf16 on CPUs with AMX or
    # AVX512_BF16, which rounds the 182.325 this test checks to 182.0
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert "u8" in {p for _, p, _ in kept_kernels(compiled).values()}  # really int8
    out = np.asarray(compiled(inputs)[0])
    assert np.allclose(out, 2.55 * w[0].sum(), rtol=1e-4), out.ravel()[:4]


class PoolNet(nn.Module):
    """stem -> max-pool -> binary block with an identity shortcut -> classifier.

    The start of a torchvision ResNet-18.
    """

    irconvert_input_size = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(nn.functional.hardtanh(self.bn0(self.stem(x))))
        x = nn.functional.hardtanh(self.bn1(self.conv1(x)) + x)
        return self.fc(x.mean((2, 3)))


def _pool_input(xml: Path) -> Any:
    """The node that feeds the IR's MaxPool."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    pool = next(op for op in model.get_ordered_ops() if op.get_type_name() == "MaxPool")
    return pool.input_value(0).get_node()


def test_a_max_pool_after_an_int8_stem_runs_int8(tmp_path: Path) -> None:
    """The stem writes int8 and the max-pool reads it; the graph computes what PyTorch
    does with the same quantization of the pool's input."""
    torch.manual_seed(0)
    model = PoolNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    grid_stem(model.stem)
    model.eval()
    res = export_openvino(model, tmp_path / "ov", calibration=grid_images(64, 1))
    report = {layer.name: layer for layer in res.layers}
    assert report["pool"].precision == "int8", report["pool"]
    assert report["pool"].why.startswith("max-pool after an int8 layer")
    assert res.int8_layers == 2  # stem and classifier: the pool has no weights

    compiled = compile_openvino(res.xml, 32)
    pools = {precision for kind, precision, _ in runtime_precisions(compiled).values()
             if kind == "Pooling"}
    assert pools and pools <= {"u8", "i8"}, pools

    # reference: PyTorch with the pool's input quantized on the IR's own grid
    fq = _pool_input(res.xml)
    assert fq.get_type_name() == "FakeQuantize"
    assert fq.get_attributes()["levels"] == 256
    low, high = (float(np.asarray(fq.input_value(i).get_node().get_data()).ravel()[0])
                 for i in (1, 2))
    scale = (high - low) / 255
    zero = round(-low / scale)

    def quantized(module: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        return (torch.fake_quantize_per_tensor_affine(args[0], scale, zero, 0, 255),)

    x = grid_images(32, 3)
    with torch.no_grad():
        plain = model(torch.from_numpy(x)).numpy()
        handle = model.pool.register_forward_pre_hook(quantized)
        ref = model(torch.from_numpy(x)).numpy()
        handle.remove()
    out = np.asarray(compiled(x)[0])
    err = np.abs(out - ref).max()
    assert err <= 0.05 * np.abs(ref).max(), err  # the classifier's int8 rounding only
    top2 = np.sort(ref, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * err
    assert clear.sum() >= len(x) // 2
    assert np.array_equal(out.argmax(1)[clear], ref.argmax(1)[clear])
    assert not np.array_equal(plain, ref)  # the quantization is real, not a no-op


def test_a_max_pool_after_a_binary_layer_stays_float(tmp_path: Path) -> None:
    """Only a pool that reads a kept layer's output gets an int8 input: elsewhere the
    FakeQuantize would be a pass of its own."""
    class BinaryThenPool(PoolNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.hardtanh(self.bn0(self.stem(x)))
            x = self.pool(nn.functional.hardtanh(self.bn1(self.conv1(x)) + x))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = BinaryThenPool()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    model.eval()
    res = export_openvino(model, tmp_path / "ov", calibration=grid_images(16, 1))
    assert "pool" not in {layer.name for layer in res.layers}
    assert _pool_input(res.xml).get_type_name() != "FakeQuantize"
    assert res.int8_layers == 2


def test_a_layer_meant_for_int8_is_reported_by_what_the_compiled_graph_runs() -> None:
    ran_int8 = _int8_row("conv1", ("Convolution", "u8", "brgconv_i8"), "stem")
    assert (ran_int8.precision, ran_int8.why) == ("int8", "stem; brgconv_i8")
    ran_float = _int8_row("conv1", ("Convolution", "f32", "jit"), "stem")
    assert (ran_float.precision, ran_float.why) == ("fp32", "stem, but this CPU runs it in f32")
    missing = _int8_row("conv1", ("", "", ""), "stem")
    assert missing.precision == "fp32"
    assert missing.why.endswith("shows no node for it to confirm int8")


def test_a_renamed_node_is_found_only_among_the_kinds_that_stand_for_the_layer() -> None:
    ran = {"pool/reorder": ("Reorder", "f32", "ref"), "pool/fused": ("Pooling", "u8", "jit_i8"),
           "conv/reorder": ("Reorder", "f32", "ref"), "conv/fused": ("Convolution", "u8", "i8")}
    assert _runtime_row(ran, "pool", _POOL_NODES) == ("Pooling", "u8", "jit_i8")
    assert _runtime_row(ran, "conv") == ("Convolution", "u8", "i8")
    # A pool is not found among convolution kinds, nor a layer whose only
    # renamed node is a reorder: "no node", never the reorder's precision.
    assert _runtime_row(ran, "pool") == ("", "", "")
    assert _runtime_row({"fc/reorder": ("Reorder", "f32", "ref")}, "fc") == ("", "", "")
