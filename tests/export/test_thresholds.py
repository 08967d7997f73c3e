"""Exports of ReActNet-style models: learnt activation thresholds and RPReLU.

Every format must reproduce ``sign(x - b)`` with ``x - b >= 0 -> +1`` and the
RPReLU activations of the eval-mode PyTorch model: frozen and ``.irc``
bit for bit, ONNX and OpenVINO up to float rounding of the logits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import irconvert
from irconvert.errors import ExportError
from irconvert.export.freeze import (
    binary_layers,
    freeze,
    freeze_layer,
    layer_from_config,
)
from irconvert.export.openvino_graph import fq_thresholds
from irconvert.export.packed import describe_packed, load_packed, save_packed
from irconvert.export.runtime import load_predictor
from irconvert.models import build_model
from irconvert.nn import IRConv2d, IRLayer, IRLinear, RPReLU, set_binarization
from tests.conftest import TinyNet
from tests.export.test_freeze import randomize_bn
from tests.export.test_onnx import FirstBinary

REACT = irconvert.BinarizeConfig(act_threshold=True, block_act="rprelu")
ARCH = "cifar_resnet20"

try:
    import openvino  # noqa: F401

    HAVE_OV = True
except ImportError:
    HAVE_OV = False
try:
    import onnxruntime  # noqa: F401

    HAVE_ORT = True
except ImportError:
    HAVE_ORT = False
needs_ov = pytest.mark.skipif(not HAVE_OV, reason="openvino is not installed "
                              "(pip install 'irconvert[openvino]')")


def randomize_react(model: nn.Module, gen: torch.Generator) -> None:
    """Non-zero thresholds and RPReLU parameters, as training would leave them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, IRLayer) and m.act_threshold is not None:
                m.act_threshold.copy_(torch.rand(m.act_threshold.shape, generator=gen) * 0.6 - 0.3)
            if isinstance(m, RPReLU):
                for p, lo, hi in ((m.shift_in, -0.2, 0.2), (m.slope, -0.3, 0.5),
                                  (m.shift_out, -0.2, 0.2)):
                    p.copy_(torch.rand(p.shape, generator=gen) * (hi - lo) + lo)


def reestimate_bn(model: nn.Module, shape: tuple[int, ...], gen: torch.Generator) -> None:
    """BatchNorm statistics of the binary model itself, so the signs it feeds are mixed."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, *shape, generator=gen))
    model.eval()


def react_model(arch: str = ARCH, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = build_model(arch, num_classes=10)
    randomize_bn(model)
    irconvert.binarize_(model, REACT, warn=False)
    randomize_react(model, gen)
    reestimate_bn(model, (3, 32, 32), gen)
    return model


@pytest.fixture(scope="module")
def react() -> nn.Module:
    model = react_model()
    layers = [m for m in model.modules() if isinstance(m, IRLayer)]
    assert len(layers) == 18 and all(m.act_threshold is not None for m in layers)
    assert sum(isinstance(m, RPReLU) for m in model.modules()) >= 18
    return model


def inputs(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def first_threshold(model: nn.Module) -> torch.Tensor:
    """The threshold of ``model.conv``, sharing its storage."""
    conv = model.get_submodule("conv")
    assert isinstance(conv, IRConv2d) and conv.act_threshold is not None
    return conv.act_threshold.detach()


def boundary_model() -> tuple[nn.Module, torch.Tensor]:
    """A model whose first sign sees inputs exactly at, just above and just below b."""
    model = FirstBinary()
    cfg = irconvert.BinarizeConfig(keep_stem=False, act_threshold=True)
    irconvert.binarize_(model, cfg, warn=False)
    randomize_bn(model)
    gen = torch.Generator().manual_seed(3)
    randomize_react(model, gen)
    model.eval()
    b = first_threshold(model)
    b[0] = 0.0  # a zero threshold: sign(x) as without one
    x = torch.randn(4, 8, 6, 6, generator=gen)
    at = b.view(1, -1, 1, 1).expand(1, 8, 6, 6)
    x[0] = at  # x - b == 0 exactly: +1
    x[1] = torch.nextafter(at, torch.tensor(-1.0))  # just below b: -1
    # below 0 that is a subnormal, above the -FLT_MIN threshold OpenVINO uses
    # for b = 0 (the documented exception): the closest normal value instead
    x[1, 0] = -torch.finfo(torch.float32).tiny
    x[2, :, ::2] = torch.nextafter(at, torch.tensor(1.0))[:, :, ::2]  # just above: +1
    x[3, 0] = -0.0
    return model, x


def assert_parity(model: nn.Module, out: np.ndarray, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4
    assert np.array_equal(out.argmax(1), ref.argmax(1))


# --- frozen -----------------------------------------------------------------


def test_frozen_exact_with_thresholds_and_rprelu(react: nn.Module) -> None:
    frozen = freeze(react)
    layers = binary_layers(frozen)
    sources = {n: m for n, m in react.named_modules() if isinstance(m, IRLayer)}
    assert set(layers) == set(sources)
    for name, layer in layers.items():
        assert layer.act_threshold is not None
        assert torch.equal(layer.act_threshold, sources[name].act_threshold.detach())  # type: ignore[union-attr]
    x = inputs()
    # the signs are not trivial: every binary layer sees both signs
    seen: list[float] = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, a: seen.append(float((mod.act(a[0]) > 0).float().mean())))
        for m in layers.values()]
    with torch.no_grad():
        ref = react(x)
        assert torch.equal(frozen(x), ref)
    for h in hooks:
        h.remove()
    assert len(seen) == 18 and all(0.02 < f < 0.98 for f in seen)
    with torch.no_grad():
        for layer in layers.values():
            layer.use_packed_(True)
        assert torch.equal(frozen(x), ref)
        # the thresholds matter: without them the logits change
        plain = copy.deepcopy(frozen)
        for layer in binary_layers(plain).values():
            layer.act_threshold.zero_()  # type: ignore[union-attr]
        assert not torch.equal(plain(x), ref)


def test_frozen_layer_sign_convention_and_config() -> None:
    conv = IRConv2d(8, 4, 3, padding=1, bias=True)
    b = conv.enable_act_threshold(torch.linspace(-0.5, 0.5, 8))
    conv.eval()
    frozen = freeze_layer(conv)
    assert frozen.config()["act_threshold"] is True  # type: ignore[operator]
    assert "act_threshold=True" in repr(frozen)
    x = torch.randn(2, 8, 5, 5)
    x[0] = b.detach().view(-1, 1, 1)  # exactly at the threshold: x - b = 0 -> +1
    with torch.no_grad():
        assert torch.equal(frozen.act(x)[0], torch.ones(8, 5, 5))
        assert torch.equal(frozen(x), conv(x))
    # the record rebuilds a layer with the buffer, filled by load_state_dict
    rebuilt = layer_from_config(frozen.config())  # type: ignore[operator]
    assert rebuilt.act_threshold is not None
    rebuilt.load_state_dict(frozen.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), conv(x))
    linear = IRLinear(16, 3)
    linear.enable_act_threshold(torch.randn(16))
    linear.eval()
    y = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(freeze_layer(linear)(y), linear(y))


def test_layer_without_threshold_is_unchanged() -> None:
    frozen = freeze_layer(IRConv2d(8, 4, 3).eval())
    assert frozen.act_threshold is None and "act_threshold" not in frozen.state_dict()
    assert "act_threshold" not in frozen.config()  # type: ignore[operator]
    old_record = {"kind": "linear", "in_features": 4, "out_features": 2, "bias": False,
                  "binary_act": True}  # as written before thresholds existed
    assert layer_from_config(old_record).act_threshold is None


def test_staged_training_model_is_refused() -> None:
    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    set_binarization(model, weights=True, activations=False)
    with pytest.raises(ExportError, match=r"conv1 has its binarization switched off"):
        freeze(model)
    set_binarization(model, weights=True, activations=True)
    assert len(binary_layers(freeze(model))) == 2


# --- packed .irc --------------------------------------------------------------


def test_packed_round_trip_exact(tmp_path: Path, react: nn.Module) -> None:
    path = tmp_path / "react.irc"
    save_packed(react, path, arch=ARCH, num_classes=10, config=REACT)
    info = describe_packed(path)
    assert info.format_version == 2
    assert info.binarize["act_threshold"] is True and info.binarize["block_act"] == "rprelu"
    assert all(r["act_threshold"] is True for r in info.layers.values())
    rows = {r.name for r in info.tensors}
    assert {"layer1.0.conv1.act_threshold", "layer1.0.act1.slope"} <= rows
    loaded = load_packed(path)
    assert sum(isinstance(m, RPReLU) for m in loaded.modules()) == sum(
        isinstance(m, RPReLU) for m in react.modules())
    x = inputs(5)
    with torch.no_grad():
        assert torch.equal(loaded(x), react(x))
    out = load_predictor(path)(x.numpy())
    with torch.no_grad():
        assert np.array_equal(out, react(x).numpy())


def test_checkpoint_export_exact(tmp_path: Path, react: nn.Module) -> None:
    """What ``irconvert export`` does: checkpoint -> rebuilt model -> .irc / ONNX."""
    from irconvert.checkpoint import atomic_save, new_checkpoint
    from irconvert.export.api import export_checkpoint

    atomic_save(new_checkpoint(react, arch=ARCH, num_classes=10, config=REACT),
                tmp_path / "best.pt")
    x = inputs(3)
    with torch.no_grad():
        ref = react(x).numpy()
    export_checkpoint(tmp_path / "best.pt", "packed", tmp_path / "m.irc")
    assert np.array_equal(load_predictor(tmp_path / "m.irc")(x.numpy()), ref)
    if HAVE_ORT:
        export_checkpoint(tmp_path / "best.pt", "onnx", tmp_path / "m.onnx")
        assert_parity(react, load_predictor(tmp_path / "m.onnx")(x.numpy()), x)


def test_packed_without_thresholds_stays_version_1(tmp_path: Path) -> None:
    model = build_model(ARCH, num_classes=10)
    randomize_bn(model)
    cfg = irconvert.BinarizeConfig()
    irconvert.binarize_(model, cfg, warn=False)
    model.eval()
    path = tmp_path / "plain.irc"
    save_packed(model, path, arch=ARCH, num_classes=10, config=cfg)
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    meta = header["__metadata__"]
    # what an older irconvert wrote (and reads): no new fields, version 1
    assert meta["format_version"] == "1"
    assert not {"act_threshold", "block_act"} & set(json.loads(meta["binarize"]))
    assert "act_threshold" not in meta["layers"]
    info = describe_packed(path)
    assert info.binarize == cfg.to_dict()  # the defaults are filled back in
    x = inputs()
    with torch.no_grad():
        assert torch.equal(load_packed(path)(x), model(x))


def test_packed_thresholds_only(tmp_path: Path) -> None:
    """Thresholds with Hardtanh blocks: version 2, and no RPReLU is rebuilt."""
    gen = torch.Generator().manual_seed(5)
    cfg = irconvert.BinarizeConfig(act_threshold=True)
    model = build_model(ARCH, num_classes=10)
    irconvert.binarize_(model, cfg, warn=False)
    randomize_react(model, gen)
    reestimate_bn(model, (3, 32, 32), gen)
    path = tmp_path / "t.irc"
    save_packed(model, path, arch=ARCH, num_classes=10, config=cfg)
    assert describe_packed(path).format_version == 2
    loaded = load_packed(path)
    assert not any(isinstance(m, RPReLU) for m in loaded.modules())
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_packed_rprelu_needs_its_config(tmp_path: Path, react: nn.Module) -> None:
    with pytest.raises(ExportError, match="block_act='rprelu'"):
        save_packed(react, tmp_path / "x.irc", arch=ARCH, num_classes=10,
                    config=irconvert.BinarizeConfig(act_threshold=True))
    assert list(tmp_path.iterdir()) == []


# --- ONNX ---------------------------------------------------------------------


def test_onnx_parity(tmp_path: Path, react: nn.Module) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from irconvert.export.onnx_export import export_onnx

    x = inputs(6)
    outputs = []
    for packed in (False, True):
        path = export_onnx(react, tmp_path / f"m{int(packed)}.onnx", packed=packed).path
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        assert {n.domain for n in proto.graph.node} <= {""}  # standard ops only
        ops = {n.op_type for n in proto.graph.node}
        assert {"Sub", "GreaterOrEqual", "Where", "PRelu", "Add"} <= ops
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert_parity(react, out, x)
        outputs.append(load_predictor(path)(x.numpy()))
        assert_parity(react, outputs[-1], x)
    assert np.array_equal(outputs[0], outputs[1])  # packed bits are the same numbers


@pytest.mark.parametrize("opset", [17, 18])  # the legacy and the dynamo exporter
def test_onnx_threshold_boundary(tmp_path: Path, opset: int) -> None:
    pytest.importorskip("onnxruntime")
    from irconvert.export.onnx_export import export_onnx

    model, x = boundary_model()
    path = export_onnx(model, tmp_path / "b.onnx", input_size=(8, 6, 6), opset=opset).path
    # a sign flip at x == b changes the logits by ~0.1
    assert_parity(model, load_predictor(path)(x.numpy()), x)


# --- OpenVINO -----------------------------------------------------------------


def test_fq_thresholds_match_subtraction() -> None:
    """``x > t`` is ``x - b >= 0`` for x at, next to and far from b (float32).

    Subnormal ``x`` are left out: thresholds near 0 stay clear of subnormals
    (see :func:`fq_thresholds`), so those may differ.
    """
    rng = np.random.default_rng(0)
    tiny = np.finfo(np.float32).tiny
    b = np.concatenate([rng.uniform(-2, 2, 200), [0.0, 1.0, -1.0, 3 * tiny, -3 * tiny]])
    b = b.astype(np.float32)
    t = fq_thresholds(b)
    assert t[200] == -tiny  # b = 0: the threshold a plain sign(x) has always used
    up, down = np.float32(np.inf), np.float32(-np.inf)
    for x in (b, np.nextafter(b, up), np.nextafter(b, down),
              np.nextafter(np.nextafter(b, down), down), b + 0.5, b - 0.5):
        x = x.astype(np.float32)
        normal = (x == 0) | (np.abs(x) >= tiny)
        assert normal.sum() >= 200
        assert np.array_equal((x > t)[normal], ((x - b) >= 0)[normal])


def fake_quantize_thresholds(ov_model: object) -> list[np.ndarray]:
    from irconvert.export.openvino_int8 import const_value

    found = []
    for node in ov_model.get_ordered_ops():  # type: ignore[attr-defined]
        if node.get_type_name() == "FakeQuantize":
            low = const_value(node.input_value(1).get_node())
            assert low is not None
            found.append(low)
    return found


def compile_and_run(xml: Path, x: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    from irconvert.export.openvino_export import binary_conv_layers, compile_openvino

    compiled = compile_openvino(xml, x.shape[0])
    return np.asarray(compiled(x.numpy())[0]), binary_conv_layers(compiled)


@needs_ov
@pytest.mark.openvino
def test_openvino_parity_with_binary_convolutions(tmp_path: Path, react: nn.Module) -> None:
    import openvino as ov

    from irconvert.export.openvino_export import export_openvino

    res = export_openvino(react, tmp_path / "ov")
    assert res.binary_convolutions == 18 and res.fallback == {}
    # each threshold is folded into its FakeQuantize, one value per channel
    lows = fake_quantize_thresholds(ov.Core().read_model(str(res.xml)))
    assert len(lows) == 18
    assert all(low.shape[:1] == (1,) and low.shape[2:] == (1, 1) and low.shape[1] > 1
               for low in lows)
    x = inputs(4)
    out, binary = compile_and_run(res.xml, x)
    assert len(binary) == 18  # still bit-packed kernels in the compiled model
    assert_parity(react, out, x)
    assert_parity(react, load_predictor(tmp_path / "ov")(x.numpy()), x)


@needs_ov
@pytest.mark.openvino
def test_openvino_threshold_boundary(tmp_path: Path) -> None:
    import openvino as ov

    from irconvert.export.openvino_export import export_openvino

    model, x = boundary_model()
    res = export_openvino(model, tmp_path / "b.xml", input_size=(8, 6, 6))
    assert res.binary_convolutions == 2
    lows = fake_quantize_thresholds(ov.Core().read_model(str(res.xml)))
    b = first_threshold(model).numpy()
    assert np.array_equal(lows[0].reshape(-1), fq_thresholds(b))  # the raw-input layer
    out, binary = compile_and_run(res.xml, x)
    assert len(binary) == 2
    assert_parity(model, out, x)


@needs_ov
@pytest.mark.openvino
def test_openvino_without_thresholds_keeps_scalar_threshold(tmp_path: Path) -> None:
    import openvino as ov

    from irconvert.export.openvino_export import export_openvino

    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    model.eval()
    res = export_openvino(model, tmp_path / "ov")
    lows = fake_quantize_thresholds(ov.Core().read_model(str(res.xml)))
    tiny = np.finfo(np.float32).tiny
    assert len(lows) == 2 and all(low.shape == (1, 1, 1, 1) and low.item() == -tiny
                                  for low in lows)
