"""``irconvert export`` / ``bench`` / ``inspect x.irc``: what a user sees."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import irconvert
from irconvert.checkpoint import atomic_save, model_from_checkpoint, new_checkpoint
from irconvert.cli import app
from irconvert.export.runtime import load_predictor
from irconvert.models import build_model
from irconvert.outputs import default_export
from tests.export.test_packed import binarized

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = binarized("cifar_resnet20", 10)
    out = tmp_path_factory.mktemp("run")
    atomic_save(new_checkpoint(model, arch="cifar_resnet20", num_classes=10,
                               config=irconvert.BinarizeConfig(), epoch=3), out / "best.pt")
    return out


def one_line_error(result: object, needle: str) -> None:
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    err = result.stderr.strip()  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_help() -> None:
    for cmd in ("export", "bench"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_export_packed_and_inspect(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.irc"
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "binary layers" in result.output and "overhead" in result.output
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model_from_checkpoint(run_dir)(x).numpy()
    assert np.abs(load_predictor(out)(x.numpy()) - ref).max() <= 1e-5
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "layer1.0.conv1.weight (bits)" in result.output and "above the minimum" in result.output

    before = out.read_bytes()
    one_line_error(runner.invoke(app, ["export", str(run_dir / "best.pt"), "-o", str(out)]),
                   "already exists")
    assert out.read_bytes() == before
    result = runner.invoke(app, ["export", str(run_dir / "best.pt"), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output


def test_without_out_exports_go_beside_the_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    # `irconvert export runs/r18/best.pt --format onnx`, as users type it
    run = tmp_path / "r18"
    run.mkdir()
    shutil.copy(run_dir / "best.pt", run / "best.pt")
    result = runner.invoke(app, ["export", str(run)])  # a run folder stands for its best.pt
    assert result.exit_code == 0, result.output
    assert (run / "best.irc").is_file()
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(run / "best.irc"), "--format", "onnx"])
    one_line_error(result, "best.onnx already exists")  # from the .irc: the same name
    assert sorted(p.name for p in run.iterdir()) == ["best.irc", "best.onnx", "best.pt"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model_from_checkpoint(run)(x).numpy()
    for name in ("best.irc", "best.onnx"):
        assert np.abs(load_predictor(run / name)(x.numpy()) - ref).max() <= 1e-4, name
    assert default_export(run / "best.pt", "") == run / "best-openvino"  # OpenVINO's folder


def test_export_onnx_and_bench(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(run_dir), "-f", "onnx", "-o", str(out),
                                 "--onnx-packed", "--opset", "17"])
    assert result.exit_code == 0, result.output
    assert "opset" in result.output and "packed bits" in result.output
    irc = tmp_path / "m.irc"
    assert runner.invoke(app, ["export", str(run_dir), "-o", str(irc)]).exit_code == 0
    result = runner.invoke(app, ["bench", str(out), str(irc), "--batch", "1", "--batch", "2",
                                 "--threads", "1", "--runs", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "images/s" in result.output and result.output.count("onnx") >= 2
    assert "1.00x" in result.output  # the first file is the speed-up baseline


@pytest.mark.openvino
def test_bench_side_by_side(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    keep = tmp_path / "files"
    result = runner.invoke(app, ["bench", "--from", str(run_dir), "--threads", "1", "--runs",
                                 "1", "--warmup", "0", "--keep", str(keep)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for label in ("onnxruntime fp32 (original model)", "PyTorch binary (.irc)",
                  "onnxruntime binary", "OpenVINO binary"):
        assert label in result.output
    assert "speed-up" in result.output and "no --data" in result.output
    assert (keep / "original_fp32.onnx").is_file() and (keep / "model_ov" / "model.xml").is_file()
    assert runner.invoke(app, ["bench"]).exit_code == 2  # neither PATHS nor --from
    assert runner.invoke(app, ["bench", str(keep / "model.irc"), "--from",
                               str(run_dir)]).exit_code == 2


@pytest.mark.openvino
@pytest.mark.slow
def test_export_openvino(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    result = runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o",
                                 str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    assert "BinaryConvolution layers  18" in result.output
    assert (tmp_path / "ov" / "model.xml").is_file()


@pytest.mark.openvino
@pytest.mark.slow
def test_export_openvino_int8(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    out = tmp_path / "ov"
    result = runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o", str(out),
                                 "--data", f"imagefolder:{tmp_path / 'data'}",
                                 "--calib-images", "5"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "int8 layers               2" in result.output
    assert "BinaryConvolution layers  18" in result.output
    assert "(train, 5 of 8 images)" in result.output
    # the per-layer table names what the plugin compiled each int8 layer as
    assert "how each layer runs" in result.output
    assert len(re.findall(r"[│|]\s*int8\s*[│|]", result.output)) == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model_from_checkpoint(run_dir)(x).numpy()
    assert load_predictor(out)(x.numpy()).shape == ref.shape
    result = runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o", str(out),
                                 "--force", "--data", f"imagefolder:{tmp_path / 'data'}",
                                 "--no-int8"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "int8 layers               0" in result.output and "--no-int8" in result.output


def test_int8_errors(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    ov = str(tmp_path / "ov")
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o", ov,
                                       "--int8"]), "needs calibration images")
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "m.irc"),
                                       "--data", "digits"]), "--format openvino only")
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o", ov,
                                       "--data", f"imagefolder:{tmp_path / 'none'}"]),
                   "not found")
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o", ov,
                                       "--data", "digits"]), "the model takes 3")
    assert list(tmp_path.iterdir()) == []


def test_errors(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "x.irc"
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-f", "tflite", "-o", str(out)]),
                   "unknown format")
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-o", str(out), "--onnx-packed"]),
                   "--format onnx only")
    one_line_error(runner.invoke(app, ["export", str(tmp_path / "nope"), "-o", str(out)]),
                   "no such file")
    # a checkpoint whose model has no binarized layer
    cfg = irconvert.BinarizeConfig(exclude=("*",))
    float_model = build_model("cifar_resnet20")
    atomic_save(new_checkpoint(float_model, arch="cifar_resnet20", num_classes=10, config=cfg),
                tmp_path / "float.pt")
    one_line_error(runner.invoke(app, ["export", str(tmp_path / "float.pt"), "-o", str(out)]),
                   "nothing to binarize")
    # the optional engine is missing
    monkeypatch.setitem(sys.modules, "openvino", None)
    one_line_error(runner.invoke(app, ["export", str(run_dir), "-f", "openvino", "-o",
                                       str(tmp_path / "ov")]), "pip install")
    one_line_error(runner.invoke(app, ["bench", str(tmp_path / "none.onnx")]), "no such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.pt"]  # nothing partial
