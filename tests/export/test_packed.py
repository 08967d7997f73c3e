"""The packed .irc format: exact round trips, size accounting, errors."""

from __future__ import annotations

import io
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
    ("irnet_resnet20", 10, (4, 3, 32, 32)),  # a float BatchNorm1d before the classifier
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
    with pytest.raises(LoadError, match=r"not an \.irc file"):
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


def _damage(data: bytes, how: str) -> bytes:
    header_end = 8 + int.from_bytes(data[:8], "little")
    if how == "empty":
        return b""
    if how == "cut in the length":
        return data[:5]
    if how == "cut in the header":
        return data[:header_end // 2]
    if how == "cut in the tensors":
        return data[:(header_end + len(data)) // 2]
    if how == "last byte missing":
        return data[:-1]
    if how == "trailing bytes":
        return data + b"\0" * 16
    if how == "not safetensors":
        return b"\x01" * 8 + data[8:]
    if how == "a .pt renamed":
        buffer = io.BytesIO()
        torch.save({"a": torch.zeros(2)}, buffer)
        return buffer.getvalue()
    if how == "header not JSON":
        return data[:9] + b"\xff" + data[10:]
    assert how == "offsets past the end"
    return data.replace(b'"data_offsets":[0,', b'"data_offsets":[9,', 1)


DAMAGE = {  # how a file is damaged -> what the one-line error says
    "empty": r"empty file \(0 bytes\)",
    "cut in the length": "not an .irc file",
    "cut in the header": r"truncated \(\d[\d,]* bytes; its header alone needs",
    "cut in the tensors": r"truncated \(\d[\d,]* bytes; its header says",
    "last byte missing": "truncated",
    "trailing bytes": "bytes after the last tensor",
    "not safetensors": "not an .irc file",
    "a .pt renamed": "not an .irc file but a PyTorch checkpoint",
    "header not JSON": "header is not valid JSON",
    "offsets past the end": "do not match its shape",
}


@pytest.fixture(scope="module")
def packed_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("packed") / "m.irc"
    save_packed(binarized("cifar_resnet20", 10), path, arch="cifar_resnet20", num_classes=10,
                config=irconvert.BinarizeConfig())
    return path.read_bytes()


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_files_are_one_line_naming_the_file(tmp_path: Path, packed_bytes: bytes,
                                                    how: str) -> None:
    # Regression: a truncated file used to describe with negative sizes and
    # load with safetensors' own error, which did not name the file.
    path = tmp_path / "damaged.irc"
    path.write_bytes(_damage(packed_bytes, how))
    for read in (describe_packed, load_packed):
        with pytest.raises(LoadError, match=DAMAGE[how]) as err:
            read(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "\n" not in message


def test_damaged_metadata_names_the_file(tmp_path: Path, packed_bytes: bytes) -> None:
    from safetensors.torch import load_file, save_file

    good = tmp_path / "good.irc"
    good.write_bytes(packed_bytes)
    meta = describe_packed(good)
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as fh:  # type: ignore[no-untyped-call]
        stored = dict(fh.metadata())
    cases = {
        "binarize": ("{\"act_bits\": 3}", "act_bits"),
        "arch": ("no_such_arch", "no_such_arch"),
        "layers": ("{\"layer1.0.conv1\": {\"kind\": \"conv2d\"}}", "layer or parameter"),
        "format_version": ("two", "format_version"),
    }
    # without a digest (files of older versions): each field's own check speaks
    undigested = {k: v for k, v in stored.items() if k != "sha256"}
    for key, (value, needle) in cases.items():
        bad = tmp_path / f"bad-{key}.irc"
        save_file(tensors, str(bad), metadata={**undigested, key: value})
        with pytest.raises(LoadError, match=needle) as err:
            load_packed(bad)
        assert str(err.value).startswith(f"{bad}: "), err.value
        # with the digest it was written with, the change itself is the error
        save_file(tensors, str(bad), metadata={**stored, key: value})
        with pytest.raises(LoadError, match="sha256 digest does not match"):
            load_packed(bad)
    assert meta.arch == "cifar_resnet20"


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


def test_exports_that_cannot_be_exported_again(tmp_path: Path) -> None:
    """An .irc exports to ONNX/OpenVINO (tests/export/test_onnx.py), not to .irc
    again; ONNX and OpenVINO files are not sources at all."""
    from irconvert.export.api import export_checkpoint

    model = build_model("cifar_resnet20", num_classes=10)
    cfg = irconvert.BinarizeConfig()
    irconvert.binarize_(model, cfg, warn=False)
    save_packed(model.eval(), tmp_path / "m.irc", arch="cifar_resnet20", num_classes=10,
                config=cfg)
    with pytest.raises(LoadError, match=r"m\.irc: already a packed \.irc model; 'irconvert "
                       r"export' turns it into onnx or openvino"):
        export_checkpoint(tmp_path / "m.irc", "packed", tmp_path / "n.irc")
    assert not (tmp_path / "n.irc").exists()
    (tmp_path / "a.onnx").write_bytes(b"\0")
    for fmt, name in (("packed", "b.irc"), ("onnx", "b.onnx")):
        with pytest.raises(LoadError, match=r"a\.onnx: an exported model \(onnx\), not a run "
                           r"checkpoint; export from the run it came from .* or from its \.irc"):
            export_checkpoint(tmp_path / "a.onnx", fmt, tmp_path / name)
        assert not (tmp_path / name).exists()
