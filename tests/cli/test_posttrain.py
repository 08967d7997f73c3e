"""``irconvert binarize`` without fine-tuning (no ``--data``, ``--epochs 0``), and
what a user sees of tables and log lines on a narrow terminal or in a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import irconvert
from irconvert.checkpoint import load_run_checkpoint
from irconvert.cli import app
from irconvert.models import build_model
from tests.conftest import REPO

runner = CliRunner()
RESNET20_NAMES = [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)]


@pytest.fixture(autouse=True)
def one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Tiny models on a busy machine: extra threads only contend. The default
    # output (runs/...) is relative: keep it in tmp_path.
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _single_lines(output: str) -> str:
    return " ".join(output.split())


def test_binarize_without_data_writes_a_fresh_checkpoint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["binarize", "cifar_resnet20"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    first = tmp_path / "runs" / "cifar_resnet20-1w1a" / "model.pt"
    assert first.is_file()
    out = result.output
    assert all(name in out for name in RESNET20_NAMES)  # the conversion table
    assert "not fine-tuned" in out and "near chance until it is fine-tuned" in out
    assert ("irconvert binarize cifar_resnet20 --data DATA --out runs/cifar_resnet20-1w1a\n"
            in out)
    ckpt = load_run_checkpoint(first.parent)  # a folder with model.pt is a checkpoint too
    assert ckpt["arch"] == "cifar_resnet20" and ckpt["binarize"]["act_bits"] == 1
    assert ckpt["posttrain"]["data"] is None and ckpt["origin"]["model"] == "cifar_resnet20"

    before = first.read_bytes()
    again = runner.invoke(app, ["binarize", "cifar_resnet20", "--act-bits", "32"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "runs" / "cifar_resnet20-1w32a" / "model.pt").is_file()
    again = runner.invoke(app, ["binarize", "cifar_resnet20"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "runs" / "cifar_resnet20-1w1a-2" / "model.pt").is_file()
    assert first.read_bytes() == before  # never overwritten

    taken = runner.invoke(app, ["binarize", "cifar_resnet20", "--out", str(first.parent)])
    assert taken.exit_code == 1 and "already exists; pass --force" in taken.output
    assert len(taken.output.strip().splitlines()) == 1
    forced = runner.invoke(app, ["binarize", "cifar_resnet20", "--out", str(first.parent),
                                 "--force"])
    assert forced.exit_code == 0, forced.output


def test_the_checkpoint_exports(tmp_path: Path) -> None:
    result = runner.invoke(app, ["binarize", "digits_cnn", "--out", "conv"])
    assert result.exit_code == 0, result.output
    # opset 17: torch's legacy ONNX exporter, seconds faster than the default
    # dynamo one; both read the checkpoint the same way (test_export_onnx.py
    # covers the exporters themselves).
    for fmt, name, extra in (("packed", "m.irc", []), ("onnx", "m.onnx", ["--opset", "17"])):
        exported = runner.invoke(app, ["export", "conv", "--format", fmt, "--out", name,
                                       *extra])
        assert exported.exit_code == 0, exported.output
        assert (tmp_path / name).stat().st_size > 0


@pytest.fixture
def digits_model(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = tmp_path / "digits.pt"
    torch.save(build_model("digits_cnn").state_dict(), model)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("batch_size: 64\nworkers: 0\ndevice: cpu\nbn_recalibration: 2\n"
                      "data: {mean: [0.3075], std: [0.3762], flip: false}\n")
    return model, recipe


def test_epochs_zero_calibrates_and_evaluates(
        tmp_path: Path, digits_model: tuple[Path, Path]) -> None:
    model, recipe = digits_model
    args = ["binarize", str(model), "--arch", "digits_cnn", "--data", "digits",
            "--recipe", str(recipe), "--epochs", "0", "--out", "post"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = _single_lines(result.output)
    assert "re-estimated on 2 training batches" in out and "digits (test, 360 images)" in out
    assert "full-precision top-1 / top-5" in out
    assert "binary top-1 / top-5 (1W/1A, post-training)" in out
    assert (f"irconvert binarize {model} --arch digits_cnn --recipe {recipe} --data digits "
            "--out post") in out
    ckpt = load_run_checkpoint(tmp_path / "post" / "model.pt")
    top1 = ckpt["posttrain"]["binary"]["top1"]
    assert f"{top1:.2f}%" in out and ckpt["classes"] == [str(i) for i in range(10)]

    # the same numbers from the written checkpoint (BatchNorm statistics were saved)
    evaluated = runner.invoke(app, ["eval", "post", "--data", "digits", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert abs(float(evaluated.stdout.split('"top1": ')[1].split(",")[0]) - top1) < 1e-6


def test_the_checkpoint_stands_for_its_original_when_fine_tuned(
        tmp_path: Path, digits_model: tuple[Path, Path]) -> None:
    model, recipe = digits_model
    result = runner.invoke(app, ["binarize", str(model), "--arch", "digits_cnn", "--recipe",
                                 str(recipe), "--out", "conv"])
    assert result.exit_code == 0, result.output
    # the folder (or conv/model.pt) as MODEL: its original model and recipe are used
    tuned = runner.invoke(app, ["binarize", "conv", "--data", "digits", "--steps", "1",
                                "--out", "ft", "--quiet"])
    assert tuned.exit_code == 0, tuned.output
    assert "conv is a post-training conversion" in _single_lines(tuned.output)
    assert f"model: {model}" in (tmp_path / "ft" / "run.yaml").read_text()
    assert "batch_size: 64" in (tmp_path / "ft" / "config.yaml").read_text()
    # and the run can be continued from its run directory alone
    resumed = runner.invoke(app, ["binarize", "ft", "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output


def test_python_api(tmp_path: Path, digits_model: tuple[Path, Path]) -> None:
    model, _ = digits_model
    result = irconvert.post_train(str(model), tmp_path / "api.pt", arch="digits_cnn",
                                  recipe=irconvert.BinarizeConfig(act_bits=32))
    assert result.path == tmp_path / "api.pt" and result.binary is None
    assert result.report.act_bits == 32 and load_run_checkpoint(result.path)["epoch"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["binarize", "cifar_resnet20", "--data", "digits", "--epochs", "0"],
     "digits has 1-channel images but the model takes 3-channel input"),
    (["binarize", "cifar_resnet20", "--data", "imagefolder:/no/such", "--epochs", "0"],
     "data folder not found"),
])
def test_post_training_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_resume_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()
    result = runner.invoke(app, ["binarize", "notarun", "--resume"])
    assert result.exit_code == 1
    assert "notarun: not a run directory (no last.pt" in _single_lines(result.output)
    assert "--data" not in result.output


def test_tables_keep_layer_names_whole_when_narrow() -> None:
    # the real command, output into a pipe, on a 40-column "terminal"
    env = {**os.environ, "COLUMNS": "40", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "irconvert", "inspect", "cifar_resnet20"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert all(name in words for name in RESNET20_NAMES)
    assert "…" not in proc.stdout
    # the post-training summary too, captured in-process
    result = runner.invoke(app, ["binarize", "cifar_resnet20"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert all(name in result.output.split() for name in RESNET20_NAMES)
    assert "…" not in result.output
    assert "  irconvert binarize cifar_resnet20 --data DATA --out runs/cifar_resnet20-1w1a\n" \
        in result.output  # the next command stays one copyable line


def test_epoch_log_lines_are_not_wrapped_in_a_pipe() -> None:
    from rich.console import Console

    from irconvert.train.progress import RichProgress

    buf = io.StringIO()
    progress = RichProgress(Console(file=buf, width=40))
    progress.start(1, 0)
    row = {"epoch": 0, "train_loss": 1.0, "train_top1": 50.0, "val_loss": 1.0,
           "val_top1": 60.0, "val_top5": 90.0, "lr": 0.1, "t": 1.0, "k": 1.0,
           "images_per_s": 100.0, "time": 1.0}
    progress.epoch_end(row)
    progress.log("a long log line " * 5)
    progress.stop()
    lines = buf.getvalue().splitlines()
    assert any(line.startswith("epoch 1/1 loss") and line.endswith("1.0s") for line in lines)
    assert ("a long log line " * 5).strip() in [line.strip() for line in lines]
