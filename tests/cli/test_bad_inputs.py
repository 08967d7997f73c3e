"""The bad-input panel: every damaged file or folder a user can hand a command.

Each case checks what a user sees: exit code 1, one line on stderr that names
the file and says what is wrong with it, no traceback, nothing written.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import irconvert
from irconvert.checkpoint import atomic_save, new_checkpoint
from irconvert.cli import app
from irconvert.export.packed import save_packed
from irconvert.models import build_model
from tests._train_helpers import make_imagefolder

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    model = build_model("digits_cnn", num_classes=4)
    fp = base / "fp.pt"
    torch.save(model.state_dict(), fp)
    config = irconvert.BinarizeConfig()
    irconvert.binarize_(model, config, warn=False)
    run = base / "run"
    atomic_save(new_checkpoint(model.eval(), arch="digits_cnn", num_classes=4, config=config),
                run / "best.pt")
    irc = base / "m.irc"
    save_packed(model, irc, arch="digits_cnn", num_classes=4, config=config)
    data = make_imagefolder(base / "data", train=2, val=1)
    recipe = base / "tiny.yaml"
    recipe.write_text("epochs: 1\nbatch_size: 4\nworkers: 0\ndevice: cpu\n"
                      "data: {mean: [0.5], std: [0.25], crop: 8}\n")
    return {"base": base, "fp": fp, "run": run, "irc": irc, "data": data, "recipe": recipe}


def _cut(src: Path, dst: Path, keep: float) -> Path:
    dst.write_bytes(src.read_bytes()[:int(len(src.read_bytes()) * keep)])
    return dst


def one_line_error(result: Any, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in result.output and "internal error" not in result.output
    return err


# How to make each damaged input from the good files; what the line must say.
DAMAGED: dict[str, tuple[Callable[[dict[str, Path], Path], Path], str]] = {
    "truncated .irc": (lambda f, t: _cut(f["irc"], t / "cut.irc", 0.5), "truncated"),
    "header-only .irc": (lambda f, t: _cut(f["irc"], t / "head.irc", 0.02), "truncated"),
    "empty .irc": (lambda f, t: _cut(f["irc"], t / "empty.irc", 0), "empty file"),
    "not an .irc": (lambda f, t: _cut(f["fp"], t / "model.irc", 1), "not an .irc file"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
@pytest.mark.parametrize("command", ["inspect", "eval", "bench"])
def test_damaged_irc(files: dict[str, Path], tmp_path: Path, case: str, command: str) -> None:
    # Regression: inspect exited 0 with negative sizes; eval and bench said
    # "internal error: SafetensorError" without naming the file.
    make, what = DAMAGED[case]
    path = make(files, tmp_path)
    args = {"inspect": ["inspect", str(path)],
            "eval": ["eval", str(path), "--data", f"imagefolder:{files['data']}"],
            "bench": ["bench", str(path), "--runs", "1", "--warmup", "0"]}[command]
    one_line_error(runner.invoke(app, args), str(path), what)


@pytest.mark.parametrize(("keep", "what"), [(0.5, "truncated or corrupt"),
                                            (0.0, "is empty (0 bytes)")])
@pytest.mark.parametrize("command", ["eval", "export", "inspect"])
def test_damaged_checkpoint(files: dict[str, Path], tmp_path: Path, keep: float, what: str,
                            command: str) -> None:
    path = _cut(files["run"] / "best.pt", tmp_path / "best.pt", keep)
    args = {"eval": ["eval", str(path), "--data", f"imagefolder:{files['data']}"],
            "export": ["export", str(path), "--out", str(tmp_path / "x.irc")],
            "inspect": ["inspect", str(path)]}[command]
    one_line_error(runner.invoke(app, args), str(path), what)
    assert not (tmp_path / "x.irc").exists()


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_damaged_onnx_and_openvino(files: dict[str, Path], tmp_path: Path,
                                   command: str) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from tests.export.test_runtime import _tiny_onnx

    cut = _cut(_tiny_onnx(tmp_path / "good.onnx"), tmp_path / "cut.onnx", 0.6)
    ov = tmp_path / "ov"
    ov.mkdir()
    (ov / "model.xml").write_text("<net/>")  # model.bin not copied
    for path, what, named in ((cut, "truncated or damaged", cut),
                              (ov, "missing; OpenVINO IR is model.xml and model.bin", ov)):
        args = (["eval", str(path), "--data", f"imagefolder:{files['data']}"]
                if command == "eval" else ["bench", str(path), "--runs", "1"])
        one_line_error(runner.invoke(app, args), str(named), what)


def test_inspect_of_an_onnx_or_openvino_export(tmp_path: Path) -> None:
    # Regression: "is not a PyTorch checkpoint" / "is a directory; pass the
    # checkpoint file inside it" for files irconvert itself wrote.
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "model.xml").write_text("<net/>")
    for path, kind in ((tmp_path / "m.onnx", "ONNX"), (tmp_path / "ov", "OpenVINO")):
        one_line_error(runner.invoke(app, ["inspect", str(path)]),
                       f"{path}: an {kind} export", "irconvert eval")


def _spoiled(files: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(files["data"], data)
    bad = data / "train" / "class2" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])
    return data, bad


def test_a_corrupt_training_image_stops_with_its_name(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    # Regression: "internal error: OSError: Caught OSError in DataLoader worker
    # process 0", the file not named, a run folder with only config files left.
    data, bad = _spoiled(files, tmp_path)
    out = tmp_path / "run"
    for workers in ("0", "1"):
        result = runner.invoke(app, ["binarize", str(files["fp"]), "--arch", "digits_cnn",
                                     "--data", f"imagefolder:{data}", "--recipe",
                                     str(files["recipe"]), "--out", str(out), "--quiet",
                                     "--workers", workers])
        one_line_error(result, f"{bad}: unreadable image", "--skip-bad-images")
        assert not out.exists()


def test_corrupt_images_can_be_skipped_and_counted(files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    data, bad = _spoiled(files, tmp_path)
    out = tmp_path / "run"
    result = runner.invoke(app, ["binarize", str(files["fp"]), "--arch", "digits_cnn",
                                 "--data", f"imagefolder:{data}", "--recipe",
                                 str(files["recipe"]), "--out", str(out), "--quiet",
                                 "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    assert "unreadable images skipped: 1" in result.output
    assert str(bad) in result.output  # the log line names it
    assert "bad_files: skip" in (out / "config.yaml").read_text()  # --resume keeps skipping
    # eval: the same choice
    val_bad = data / "val" / "class0" / "0.png"
    val_bad.write_bytes(b"")
    one_line_error(runner.invoke(app, ["eval", str(out), "--data", f"imagefolder:{data}"]),
                   f"{val_bad}: unreadable image")
    result = runner.invoke(app, ["eval", str(out), "--data", f"imagefolder:{data}",
                                 "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    assert "left out 1 unreadable image file(s)" in result.stderr and "3 images" in result.stdout


def test_post_training_counts_and_names_the_images_it_skipped(files: dict[str, Path],
                                                               tmp_path: Path) -> None:
    # Regression: without fine-tuning, --skip-bad-images left files out silently.
    data, bad = _spoiled(files, tmp_path)
    val_bad = data / "val" / "class0" / "0.png"
    val_bad.write_bytes(b"")
    result = runner.invoke(app, ["binarize", str(files["fp"]), "--arch", "digits_cnn",
                                 "--data", f"imagefolder:{data}", "--recipe",
                                 str(files["recipe"]), "--epochs", "0",
                                 "--out", str(tmp_path / "pt"), "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    # the training image is met by the BatchNorm re-estimate, the other by the evaluation
    assert "unreadable images skipped" in result.output
    assert "2 (listed below)" in result.output
    for path in (bad, val_bad):
        assert f"skipped unreadable image: {path}" in result.output
    assert "3 images" in result.output  # the evaluation left it out


@pytest.mark.parametrize(("target", "what"), [
    ("notarun", "notarun: not a run directory (no last.pt, config.yaml, run.yaml)"),
    ("nosuch", "nosuch: no such run directory"),
    ("run/best.pt", "--resume takes a run directory"),
])
def test_resume_of_what_is_not_a_run(files: dict[str, Path], target: str, what: str) -> None:
    # Regression: "DIR --resume --data D" said "--out is required" instead.
    (files["base"] / "notarun").mkdir(exist_ok=True)
    path = files["base"] / target
    for extra in ([], ["--data", f"imagefolder:{files['data']}"]):
        one_line_error(runner.invoke(app, ["binarize", str(path), "--resume", *extra]), what)


def test_an_output_that_cannot_be_written(files: dict[str, Path], tmp_path: Path) -> None:
    # Regression: "internal error: FileExistsError: 'afile'", exit 2.
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for args in (["export", str(files["run"]), "--out", str(blocker / "sub" / "m.irc")],
                 ["binarize", str(files["fp"]), "--arch", "digits_cnn", "--out",
                  str(blocker / "model.pt")]):
        one_line_error(runner.invoke(app, args), str(blocker / ""),
                       "cannot write it (a file stands where its folder should be)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_full_disk_names_the_output(files: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: a full disk was "internal error: SafetensorError ... os error 28"
    # (export) or "RuntimeError: unexpected pos 64 vs 0" (torch.save), exit 2,
    # and a failed export left the folders it had made.
    import irconvert.atomic as atomic

    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)

    def full(*args: object, **kwargs: object) -> None:
        raise RuntimeError(" . unexpected pos 64 vs 0")  # what torch.save says

    monkeypatch.setattr("irconvert.checkpoint.torch.save", full)
    out = tmp_path / "new" / "m.irc"
    monkeypatch.setattr("safetensors.torch.save_file", full)
    one_line_error(runner.invoke(app, ["export", str(files["run"]), "--out", str(out)]),
                   f"{out}: cannot write it (no space left on device)")
    # a checkpoint save in training: the run leaves nothing (it had no last.pt)
    run = tmp_path / "run"
    one_line_error(runner.invoke(app, ["binarize", str(files["fp"]), "--arch", "digits_cnn",
                                       "--data", f"imagefolder:{files['data']}", "--recipe",
                                       str(files["recipe"]), "--out", str(run), "--quiet"]),
                   f"{run / 'last.pt'}: cannot write it (no space left on device)")
    assert list(tmp_path.iterdir()) == []
