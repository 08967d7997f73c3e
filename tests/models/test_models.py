"""The built-in CIFAR models: shapes, parameter counts, the shared pretrained weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from irconvert.config import BinarizeConfig
from irconvert.convert import binarize_
from irconvert.errors import ConfigError
from irconvert.models import BUILTIN, build_model, cifar_resnet
from irconvert.nn import IRConv2d, IRLayer
from tests.conftest import WEIGHTS, need_shared

# He et al. (2016) Table 6 / the shared weights' README
PARAMS = {
    "cifar_resnet20": 269_722,
    "cifar_resnet32": 464_154,
    "cifar_resnet44": 658_586,
    "cifar_resnet56": 853_018,
    "irnet_resnet20": 269_722 + 2 * 64,  # + the head BatchNorm1d's scale and shift
}
# 3 stages x n blocks x 2 convs; stem conv1 and classifier linear stay fp32,
# option-A shortcuts have no conv
BINARIZED = {"cifar_resnet20": 18, "cifar_resnet32": 30, "cifar_resnet44": 42,
             "cifar_resnet56": 54, "cifar_resnet18": 16, "vgg_small": 5,
             "irnet_resnet20": 18}
WEIGHT_FILES = {
    "cifar_resnet20": "resnet20-12fca82f.th",
    "cifar_resnet32": "resnet32-d509ac18.th",
    "cifar_resnet44": "resnet44-014dd654.th",
    "cifar_resnet56": "resnet56-4bfd9763.th",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread contends less
    yield
    torch.set_num_threads(threads)


def _load_pretrained(path: Path) -> dict[str, torch.Tensor]:
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("state_dict", data)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _ir(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, IRLayer)}


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_builds_and_runs(name: str) -> None:
    model = build_model(name).eval()
    shape = tuple(model.irconvert_input_size)
    if name != "digits_cnn":
        assert shape == (3, 32, 32)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        assert build_model(name, num_classes=100).eval()(torch.randn(1, *shape)).shape == (1, 100)


@pytest.mark.parametrize(("name", "params"), list(PARAMS.items()))
def test_cifar_resnet_parameter_counts(name: str, params: int) -> None:
    assert sum(p.numel() for p in build_model(name).parameters()) == params


@pytest.mark.parametrize(("name", "count"), list(BINARIZED.items()))
def test_builtin_conversion_counts(name: str, count: int) -> None:
    model = build_model(name)
    report = binarize_(model, BinarizeConfig(act_bits=32))
    assert report.binarized_layers == count == len(_ir(model))
    kept = {r.name: r.reason for r in report.rows if not r.binarize}
    if name == "vgg_small":
        assert kept == {"conv0": "stem", "fc": "classifier"}
    elif name == "cifar_resnet18":
        assert kept.pop("conv1") == "stem" and kept.pop("linear") == "classifier"
        assert kept == {f"layer{i}.0.shortcut.0": "downsample shortcut" for i in (2, 3, 4)}
    else:
        assert kept == {"conv1": "stem", "linear": "classifier"}
    # train-mode BN: the fresh running stats (var 1) do not fit +-1 weights, and
    # 54 such layers overflow in eval mode until the stats are re-estimated
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(4, 3, 32, 32))).all()


def test_irnet_head_normalises_the_pooled_features() -> None:
    # The authors' network is the He et al. one with bn2 between pooling and
    # classifier: with the same weights and an identity bn2 it computes the
    # same function; with a fitted bn2 it computes linear(bn2(pooled)).
    ir, plain = build_model("irnet_resnet20").eval(), build_model("cifar_resnet20").eval()
    assert isinstance(ir.bn2, nn.BatchNorm1d) and plain.bn2 is None
    ir.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ir.bn2.running_var.fill_(1 - ir.bn2.eps)
        torch.testing.assert_close(ir(x), plain(x))
        ir.bn2.running_mean.uniform_(-1, 1)
        ir.bn2.weight.uniform_(0.5, 2)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(
            plain.layer3(plain.layer2(plain.layer1(plain.act(plain.bn1(plain.conv1(x)))))), 1), 1)
        expected = plain.linear((pooled - ir.bn2.running_mean)
                                / torch.sqrt(ir.bn2.running_var + ir.bn2.eps) * ir.bn2.weight
                                + ir.bn2.bias)
        torch.testing.assert_close(ir(x), expected)


def test_aliases_and_depth_validation() -> None:
    assert sum(p.numel() for p in build_model("resnet20").parameters()) == 269_722
    with pytest.raises(ConfigError, match="6n\\+2"):
        cifar_resnet(21)


def test_resnet20_shared_weights_load_and_convert(resnet20_weights: Path) -> None:
    state = _load_pretrained(resnet20_weights)
    assert len(state) == 97
    model = build_model("cifar_resnet20")
    model.load_state_dict(state)  # strict: every key and shape matches
    report = binarize_(model)
    assert report.binarized_layers == 18 == len(_ir(model))
    rows = {r.name: r for r in report.rows}
    assert rows["conv1"].reason == "stem" and rows["linear"].reason == "classifier"
    assert type(model.conv1) is nn.Conv2d and type(model.linear) is nn.Linear
    assert isinstance(model.layer1[0].conv1, IRConv2d)
    # the latent weights are the pretrained ones
    torch.testing.assert_close(model.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(4, 3, 32, 32))).all()


@pytest.mark.parametrize("name", ["cifar_resnet32", "cifar_resnet44", "cifar_resnet56"])
def test_deeper_shared_weights_convert(name: str) -> None:
    path = need_shared(WEIGHTS / WEIGHT_FILES[name])
    model = build_model(name)
    model.load_state_dict(_load_pretrained(path))
    assert binarize_(model, warn=False).binarized_layers == BINARIZED[name]


@pytest.mark.data
def test_resnet20_shared_weights_are_accurate(resnet20_weights: Path, cifar10_root: Path) -> None:
    """The float model really is the 91.7% one: 200 test images, >= 80% right."""
    from PIL import Image

    classes = sorted(p.name for p in (cifar10_root / "test").iterdir())
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((cifar10_root / "test" / cls).glob("*.png"))[:20]:
            array = torch.frombuffer(bytearray(Image.open(path).convert("RGB").tobytes()),
                                     dtype=torch.uint8)
            images.append(array.view(32, 32, 3).permute(2, 0, 1).float() / 255)
            labels.append(label)
    x = torch.stack(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model = build_model("cifar_resnet20")
    model.load_state_dict(_load_pretrained(resnet20_weights))
    model.eval()
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(1)
    accuracy = (pred == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.8


def test_float_checkpoint_loads_into_converted_model(resnet20_weights: Path) -> None:
    model = build_model("cifar_resnet20")
    binarize_(model, warn=False)
    result = model.load_state_dict(_load_pretrained(resnet20_weights))  # strict, no ede keys
    assert not result.missing_keys and not result.unexpected_keys
    assert isinstance(model.layer2[1].conv1, IRConv2d)
    assert model.layer2[1].conv1.ede_t.item() == 1.0
