"""What a new user hits on the way from a checkpoint to a deployed model: one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import irconvert
from irconvert.checkpoint import atomic_save, new_checkpoint
from irconvert.cli import app
from irconvert.cli._training import render_summary
from irconvert.train.outcome import FitResult
from tests._train_helpers import make_imagefolder
from tests.conftest import REPO
from tests.export.test_freeze import randomize_bn

runner = CliRunner()


def one_line(result: object, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    lines = [x for x in result.output.splitlines() if x.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.output  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision ResNet-18 run fine-tuned on 32x32 images (it records that size)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    randomize_bn(model)
    run = tmp_path_factory.mktemp("run")
    atomic_save(new_checkpoint(model.eval(), arch="resnet18", num_classes=10,
                               config=irconvert.BinarizeConfig(), input_size=[3, 32, 32]),
                run / "best.pt")
    (run / "last.pt").write_bytes((run / "best.pt").read_bytes())
    return run


def test_exports_of_a_run_take_its_input_size(small_run: Path, tmp_path: Path) -> None:
    import onnx

    result = runner.invoke(app, ["export", str(small_run), "--format", "onnx", "--out",
                                 str(tmp_path / "r18.onnx")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{small_run / 'best.pt'}" in "".join(result.output.split())  # which file it read
    dims = onnx.load(str(tmp_path / "r18.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]


def test_an_export_named_as_another_format_is_refused(small_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(small_run), "--format", "onnx", "--out",
                                 str(tmp_path / "r18.irc")])
    one_line(result, 1, "--format onnx writes NAME.onnx", "r18.onnx")
    assert not (tmp_path / "r18.irc").exists()


def test_exporting_a_full_precision_checkpoint_says_binarize_first(tmp_path: Path) -> None:
    path = tmp_path / "fp.pth"
    torch.save(torchvision_free_state_dict(), path)
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "x.irc")])
    one_line(result, 1, "a full-precision model", "binarize it first")


def torchvision_free_state_dict() -> dict[str, torch.Tensor]:
    from irconvert.models import build_model

    return build_model("cifar_resnet20", num_classes=10).state_dict()


def test_bench_of_a_run_checkpoint_points_to_from(small_run: Path) -> None:
    result = runner.invoke(app, ["bench", str(small_run / "best.pt")])
    assert result.exit_code == 2
    assert "bench --from" in result.output


def test_cifar10_spec_on_an_image_folder_suggests_imagefolder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "tiny")
    shipped = REPO / "results" / "cifar10-resnet20-1w32a.irc"
    result = runner.invoke(app, ["eval", str(shipped), "--data", f"cifar10:{root}"])
    one_line(result, 1, "looks like an image folder", f"imagefolder:{root}")


def test_a_num_classes_mismatch_mentions_replace_classifier(tmp_path: Path) -> None:
    path = tmp_path / "r20.pth"
    torch.save(torchvision_free_state_dict(), path)
    result = runner.invoke(app, ["inspect", str(path), "--num-classes", "100"])
    one_line(result, 1, "--replace-classifier")


def test_a_shipped_recipe_is_found_by_name_and_a_typo_is_guessed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: recipes/ is not here
    result = runner.invoke(app, ["binarize", "cifar_resnet20", "--recipe",
                                 "cifar10-resnet20-finetune-1w32a.yaml", "--dry-run"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["binarize", "cifar_resnet20", "--recipe",
                                 "cifar10-resnet20-finetune-1w1", "--dry-run"])
    one_line(result, 1, "did you mean 'cifar10-resnet20-finetune-1w1a'?", "shipped:")
    bad = tmp_path / "r.yaml"
    bad.write_text("optimzer: {lr: 0.1}\n")
    result = runner.invoke(app, ["binarize", "cifar_resnet20", "--recipe", str(bad),
                                 "--dry-run"])
    one_line(result, 1, "did you mean 'optimizer'?")


def test_a_bf16_summary_says_so_beside_its_accuracies(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    report = {"act_bits": 1, "binarized_layers": 2, "rows": [1, 2, 3], "fp32_bytes": 100,
              "packed_bytes": 10, "compression": 10.0}
    result = FitResult(run_dir=tmp_path, fp_top1=90.0, fp_top5=99.0, best_top1=80.0,
                       final={"val_top1": 80.0, "val_top5": 98.0}, report=report,
                       wall_time=1.0, epochs=1, amp="bf16")
    render_summary(result, quiet=True)
    out = capsys.readouterr().out
    assert "binary top-1 (1W/1A, best, bf16 evaluation): 80.00%" in out
    assert f"irconvert eval {tmp_path}/best.pt" in out
