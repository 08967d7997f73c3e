"""Exports record the input preprocessing, so ``eval`` of an export needs no --mean/--std."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from typer.testing import CliRunner

import irconvert
from irconvert.checkpoint import atomic_save, new_checkpoint
from irconvert.cli import app
from irconvert.errors import ExportError, LoadError
from irconvert.export.api import export_checkpoint
from irconvert.export.meta import ONNX_KEY, check_metadata, decode_metadata
from irconvert.export.packed import describe_packed, save_packed
from irconvert.export.runtime import load_predictor
from tests._train_helpers import make_imagefolder
from tests.export.test_packed import binarized

runner = CliRunner()
NORM = {"mean": [0.5], "std": [0.25]}  # digits-like: one channel, not ImageNet

try:
    import openvino  # noqa: F401

    HAVE_OV = True
except ImportError:
    HAVE_OV = False

FORMATS = [
    ("packed", "m.irc"),
    ("onnx", "m.onnx"),
    pytest.param("openvino", "ov", marks=[
        pytest.mark.openvino,
        pytest.mark.skipif(not HAVE_OV, reason="openvino is not installed")]),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("meta")
    data = make_imagefolder(base / "data", train=1, val=3)
    torch.manual_seed(0)
    model = binarized("digits_cnn", 4)
    config = irconvert.BinarizeConfig()
    with_norm = base / "norm.pt"
    atomic_save(new_checkpoint(model, arch="digits_cnn", num_classes=4, config=config,
                               normalization=NORM,
                               recipe={"data": {"eval_resize": 8, "eval_crop": 8}}), with_norm)
    bare = base / "bare.pt"  # an older or hand-made checkpoint: no normalisation
    atomic_save(new_checkpoint(model, arch="digits_cnn", num_classes=4, config=config), bare)
    return {"base": base, "data": data, "norm": with_norm, "bare": bare}


def _eval(path: Path, data: Path, *extra: str) -> tuple[dict[str, Any], str]:
    result = runner.invoke(app, ["eval", str(path), "--data", f"imagefolder:{data}", "--json",
                                 *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize(("fmt", "name"), FORMATS)
def test_export_records_normalization_and_eval_matches(
        setup: dict[str, Path], tmp_path: Path, fmt: str, name: str) -> None:
    out = tmp_path / name
    export_checkpoint(setup["norm"], fmt, out)
    predictor = load_predictor(out)
    assert predictor.normalization == NORM
    assert predictor.preprocessing == {"normalization": NORM, "input_size": [1, 8, 8],
                                       "eval_resize": 8, "eval_crop": 8}
    assert predictor.input_size == (1, 8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing left aside
    if fmt == "packed":
        shown = runner.invoke(app, ["inspect", str(out)])
        assert shown.exit_code == 0 and "mean [0.5] std [0.25]" in shown.output, shown.output

    ref, _ = _eval(setup["norm"], setup["data"])
    got, err = _eval(out, setup["data"])  # no --mean/--std
    assert got["kind"] == "exported" and ref["kind"] == "checkpoint"
    assert got["mean"] == ref["mean"] == [0.5] and got["std"] == [0.25]
    assert got["images"] == ref["images"] == 12
    assert got["top1"] == ref["top1"] and got["top5"] == ref["top5"]
    assert got["notes"] == [] and "note" not in err
    # explicit --mean/--std still win over the recorded values
    over, _ = _eval(out, setup["data"], "--mean", "0.4", "--std", "0.3")
    assert over["mean"] == [0.4] and over["std"] == [0.3]


@pytest.mark.parametrize(("fmt", "name"), FORMATS)
def test_export_without_normalization_falls_back_with_a_note(
        setup: dict[str, Path], tmp_path: Path, fmt: str, name: str) -> None:
    out = tmp_path / name
    export_checkpoint(setup["bare"], fmt, out)
    predictor = load_predictor(out)
    assert predictor.normalization is None
    assert predictor.preprocessing == {"input_size": [1, 8, 8]}
    got, err = _eval(out, setup["data"])
    assert len(got["mean"]) == 1 and got["mean"] != [0.5]  # ImageNet, as a grey channel
    assert "records no input normalisation" in err and len(got["notes"]) == 1


def test_library_functions_take_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = binarized("digits_cnn", 4)
    meta = {"normalization": {"mean": [0.1], "std": [0.2]}}
    save_packed(model, tmp_path / "a.irc", arch="digits_cnn", num_classes=4,
                config=irconvert.BinarizeConfig(), metadata=meta)
    assert describe_packed(tmp_path / "a.irc").preprocessing == meta
    save_packed(model, tmp_path / "b.irc", arch="digits_cnn", num_classes=4,
                config=irconvert.BinarizeConfig())
    assert describe_packed(tmp_path / "b.irc").preprocessing is None
    assert load_predictor(tmp_path / "b.irc").normalization is None

    from irconvert.export.onnx_export import export_onnx

    export_onnx(model, tmp_path / "a.onnx", metadata=meta)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "a.onnx")).metadata_props}
    assert json.loads(props[ONNX_KEY]) == meta

    # bad metadata is refused before anything is written
    cases: list[tuple[dict[str, Any], str]] = [
        ({"normalization": {"mean": [0.5], "std": [0.0]}}, "std"),
        ({"normalization": {"mean": [0.5, 0.5], "std": [1.0]}}, "2 means"),
        ({"input_size": [1, -8, 8]}, "input_size"),
        ({"normalisation": NORM}, "unknown"),
        ({"normalization": NORM, "input_size": [3, 8, 8]}, "channels"),
    ]
    for bad, needle in cases:
        with pytest.raises(ExportError, match=needle) as info:
            save_packed(model, tmp_path / "bad.irc", arch="digits_cnn", num_classes=4,
                        config=irconvert.BinarizeConfig(), metadata=bad)
        assert "\n" not in str(info.value)
        with pytest.raises(ExportError, match=needle):
            export_onnx(model, tmp_path / "bad.onnx", metadata=bad)
    assert not (tmp_path / "bad.irc").exists() and not (tmp_path / "bad.onnx").exists()


def test_metadata_codec() -> None:
    assert check_metadata(None) is None and check_metadata({}) is None
    assert check_metadata({"input_size": (3, 32, 32)}) == {"input_size": [3, 32, 32]}
    assert decode_metadata(None, "f") is None
    assert decode_metadata('{"normalization":{"mean":[1],"std":[2]},"future":1}', "f") == {
        "normalization": {"mean": [1.0], "std": [2.0]}}  # unknown keys from newer versions
    for damaged in ("{", "[1]", '{"normalization":{"mean":[1]}}'):
        with pytest.raises(LoadError, match="f: damaged preprocessing metadata"):
            decode_metadata(damaged, "f")
