"""The packed .irc format: exact round trips, size accounting, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import irconvert
from irconvert.errors import ExportError, LoadError
from irconvert.export.freeze import binary_layers
from irconvert.export.packed import describe_packed, load_packed, save_packed
from irconvert.models import build_model
from tests.conftest import RESNET20
from tests.export.test_freeze import randomize_bn


def binarized(arch: str, num_classes: int, weights: Path | None = None,
              config: irconvert.BinarizeConfig | None = None) -> nn.Module:
    model = build_model(arch, num_classes=num_classes)
    if weights is not None and weights.exists():
        state = torch.load(weights, map_location="cpu")["state_dict"]
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    else:
        randomize_bn(model)
    irconvert.binarize_(model, config or irconvert.BinarizeConfig(), warn=False)
    return model.eval()


@pytest.mark.parametrize(("arch", "classes", "shape"), [
    ("cifar_resnet20", 10, (4, 3, 32, 32)),
    pytest.param("resnet18", 1000, (2, 3, 224, 224), marks=pytest.mark.slow),
])
def test_round_trip_exact_and_small(tmp_path: Path, arch: str, classes: int,
                                    shape: tuple[int, ...]) -> None:
    model = binarized(arch, classes, RESNET20 if arch == "cifar_resnet20" else None)
    path = tmp_path / "m.irc"
    size = save_packed(model, path, arch=arch, num_classes=classes,
                       config=irconvert.BinarizeConfig())
    loaded = load_packed(path)
    x = torch.randn(*shape)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert (ref - out).abs().max() <= 1e-5
    assert torch.equal(ref.argmax(1), out.argmax(1))
    # accounting adds up, and the file is within 2 % of the theoretical minimum
    assert size.actual == path.stat().st_size
    assert size.overhead < 0.02
    n_bits = sum(m.numel for m in binary_layers(loaded).values())  # type: ignore[misc]
    assert size.bits == sum((m.numel + 7) // 8 for m in binary_layers(loaded).values())
    assert size.bits * 8 >= n_bits
    fp32 = 4 * sum(t.numel() for k, t in model.state_dict().items()
                   if t.is_floating_point() and not k.endswith(("ede_t", "ede_k")))
    assert fp32 / size.actual > (10 if arch == "resnet18" else 5)


def test_describe(tmp_path: Path) -> None:
    model = binarized("cifar_resnet20", 10)
    path = tmp_path / "m.irc"
    save_packed(model, path, arch="cifar_resnet20", num_classes=10,
                config=irconvert.BinarizeConfig())
    info = describe_packed(path)
    assert info.arch == "cifar_resnet20" and info.num_classes == 10
    assert len(info.layers) == 18
    assert info.layers["layer1.0.conv1"]["shape"] == [16, 16, 3, 3]
    rows = {r.name: r for r in info.tensors}
    assert rows["layer1.0.conv1.weight (bits)"].nbytes == 16 * 16 * 9 // 8
    assert rows["linear.weight"].nbytes == 4 * 640
    assert info.binarize == irconvert.BinarizeConfig().to_dict()


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = binarized("cifar_resnet20", 10)
    cfg = irconvert.BinarizeConfig()
    path = tmp_path / "m.irc"
    with pytest.raises(ExportError, match="architecture name"):
        save_packed(model, path, arch=None, num_classes=10, config=cfg)
    with pytest.raises(ExportError, match="no binarized layer"):
        save_packed(build_model("cifar_resnet20"), path, arch="cifar_resnet20",
                    num_classes=10, config=cfg)
    import safetensors.torch

    def broken(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_packed(model, path, arch="cifar_resnet20", num_classes=10, config=cfg)
    assert list(tmp_path.iterdir()) == []  # no partial output, no temp file
    monkeypatch.undo()
    save_packed(model, path, arch="cifar_resnet20", num_classes=10, config=cfg)
    before = path.read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        save_packed(model, path, arch="cifar_resnet20", num_classes=10, config=cfg)
    assert path.read_bytes() == before
    save_packed(model, path, arch="cifar_resnet20", num_classes=10, config=cfg, force=True)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no such file"):
        load_packed(tmp_path / "missing.irc")
    junk = tmp_path / "junk.irc"
    junk.write_bytes(b"\x00" * 4)
    with pytest.raises(LoadError, match="not a safetensors file"):
        load_packed(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.irc"
    save_file({"a": torch.zeros(2)}, str(other), metadata={"format": "something"})
    with pytest.raises(LoadError, match="not an irconvert packed model"):
        describe_packed(other)
    newer = tmp_path / "newer.irc"
    save_file({"a": torch.zeros(2)}, str(newer),
              metadata={"format": "irconvert-packed", "format_version": "99",
                        "layers": json.dumps({})})
    with pytest.raises(LoadError, match="newer"):
        describe_packed(newer)


def test_weights_only_mode_round_trip(tmp_path: Path) -> None:
    cfg = irconvert.BinarizeConfig(act_bits=32, keep_classifier=False)
    model = binarized("cifar_resnet20", 10, config=cfg)
    path = tmp_path / "w.irc"
    save_packed(model, path, arch="cifar_resnet20", num_classes=10, config=cfg)
    loaded = load_packed(path)
    assert len(describe_packed(path).layers) == 19  # the classifier is binary too
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
