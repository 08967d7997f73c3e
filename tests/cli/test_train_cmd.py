"""``irconvert binarize``, ``eval`` and ``demo`` as a user sees them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from irconvert.cli import app
from irconvert.models import build_model
from tests._train_helpers import make_imagefolder

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    data = make_imagefolder(base / "data", train=8, val=4)
    torch.manual_seed(0)
    model = base / "digits.pt"
    torch.save(build_model("digits_cnn", num_classes=4).state_dict(), model)
    recipe = base / "tiny.yaml"
    recipe.write_text(
        "epochs: 1\nbatch_size: 8\nworkers: 0\ndevice: cpu\noptimizer: {lr: 0.05}\n"
        "data: {mean: [0.5], std: [0.25], crop: 8, padding: 1}\n")
    return {"base": base, "data": data, "model": model, "recipe": recipe}


def _binarize(s: dict[str, Path], out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["binarize", str(s["model"]), "--arch", "digits_cnn",
                               "--data", f"imagefolder:{s['data']}", "--recipe",
                               str(s["recipe"]), "--out", str(out), "--quiet", *extra])


def test_binarize_resume_and_eval(setup: dict[str, Path]) -> None:
    out = setup["base"] / "run"
    result = _binarize(setup, out, "--seed", "2")
    assert result.exit_code == 0, result.output
    assert "binary top-1 (1W/1A, best)" in result.output and "size after packing" in result.output
    assert (out / "best.pt").is_file() and (out / "config.yaml").is_file()
    assert "seed: 2" in (out / "config.yaml").read_text()  # the override is recorded

    # continue the finished run for one more epoch: RUNDIR --resume with an override
    result = runner.invoke(app, ["binarize", str(out), "--resume", "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]

    result = runner.invoke(app, ["eval", str(out), "--data", f"imagefolder:{setup['data']}",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kind"] == "checkpoint" and report["images"] == 16
    assert report["mean"] == [0.5]  # the run's normalisation is reused
    result = runner.invoke(app, ["eval", str(out / "last.pt"), "--data", str(setup["data"])])
    assert result.exit_code == 0 and "top-1" in result.output

    # an export, run by irconvert.export.runtime: it records the run's normalisation
    from irconvert.export.api import export_checkpoint

    export_checkpoint(out, "packed", setup["base"] / "model.irc")
    result = runner.invoke(app, ["eval", str(setup["base"] / "model.irc"), "--data",
                                 str(setup["data"]), "--json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["kind"] == "exported" and exported["top1"] == report["top1"]
    assert exported["mean"] == [0.5] and exported["notes"] == []

    # an original model, through irconvert.io
    result = runner.invoke(app, ["eval", str(setup["model"]), "--arch", "digits_cnn",
                                 "--data", str(setup["data"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "original"


def test_dry_run_writes_nothing(setup: dict[str, Path]) -> None:
    out = setup["base"] / "dry"
    result = _binarize(setup, out, "--dry-run", "--lr", "0.3")
    assert result.exit_code == 0, result.output
    assert "binarize" in result.output and "lr: 0.3" in result.output
    assert not out.exists()


def test_budget_option_sets_the_recipe_field(setup: dict[str, Path]) -> None:
    result = _binarize(setup, setup["base"] / "dry", "--dry-run", "--budget", "45")
    assert result.exit_code == 0, result.output
    assert "budget_minutes: 45.0" in result.output


def test_dry_run_needs_no_out(setup: dict[str, Path]) -> None:
    result = runner.invoke(app, ["binarize", str(setup["model"]), "--arch", "digits_cnn",
                                 "--data", f"imagefolder:{setup['data']}", "--recipe",
                                 str(setup["recipe"]), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.05" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "imagefolder:/no/such/dir"], "data folder not found"),
    (["--lr", "-1"], "field 'optimizer.lr' must be a positive number, got -1.0"),
    (["--act-bits", "4"], "field 'binarize.act_bits' must be one of 1, 32, got 4"),
])
def test_one_line_errors(setup: dict[str, Path], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["binarize", str(setup["model"]), "--arch", "digits_cnn",
                                 "--data", f"imagefolder:{setup['data']}", "--out",
                                 str(setup["base"] / "err"), "--quiet", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def test_bad_recipe_field_is_one_line(setup: dict[str, Path]) -> None:
    bad = setup["base"] / "bad.yaml"
    bad.write_text("optimizer:\n  lr: abc\n")
    result = runner.invoke(app, ["binarize", str(setup["model"]), "--data", str(setup["data"]),
                                 "--recipe", str(bad), "--out", str(setup["base"] / "x")])
    assert result.exit_code == 1
    assert f"{bad}: field 'optimizer.lr' must be a positive number, got 'abc'" in " ".join(
        result.output.split())


def test_class_count_mismatch_and_replace(setup: dict[str, Path]) -> None:
    model10 = setup["base"] / "digits10.pt"
    torch.save(build_model("digits_cnn").state_dict(), model10)
    args = ["binarize", str(model10), "--arch", "digits_cnn", "--data", str(setup["data"]),
            "--recipe", str(setup["recipe"]), "--quiet"]
    result = runner.invoke(app, [*args, "--out", str(setup["base"] / "m1")])
    assert result.exit_code == 1
    assert "10 outputs" in result.output and "--replace-classifier" in result.output
    result = runner.invoke(app, [*args, "--out", str(setup["base"] / "m2"),
                                 "--replace-classifier"])
    assert result.exit_code == 0, result.output


def test_without_out_each_run_gets_a_new_folder_under_runs(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `irconvert binarize MODEL --data D --recipe R`, as users type it
    monkeypatch.chdir(tmp_path)
    args = ["binarize", str(setup["model"]), "--arch", "digits_cnn", "--data",
            f"imagefolder:{setup['data']}", "--recipe", str(setup["recipe"]), "--quiet"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "no --out: the run goes to runs/digits-1w1a/" in first.stderr
    assert (tmp_path / "runs" / "digits-1w1a" / "best.pt").is_file()
    second = runner.invoke(app, [*args, "--set", "binarize.act_bits=32"])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "runs" / "digits-1w32a" / "best.pt").is_file()
    third = runner.invoke(app, args)  # never into a run that is there
    assert third.exit_code == 0, third.output
    assert "runs/digits-1w1a-2/" in third.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "digits-1w1a", "digits-1w1a-2", "digits-1w32a"]


def test_torchrun_needs_out(setup: dict[str, Path], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["binarize", str(setup["model"]), "--data", str(setup["data"])])
    assert result.exit_code == 2 and "--out" in result.output and "torchrun" in result.output
    assert "internal error" not in result.output and not (tmp_path / "runs").exists()


def test_run_dir_without_resume_and_an_out_taken(setup: dict[str, Path]) -> None:
    run = setup["base"] / "run2"
    assert _binarize(setup, run).exit_code == 0
    result = runner.invoke(app, ["binarize", str(run), "--quiet"])
    assert result.exit_code == 2 and "add --resume" in result.output
    result = _binarize(setup, run)  # the same --out again
    assert result.exit_code == 1 and "already holds a run" in result.output


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # The demo's model is tiny: on a busy 2-core box extra threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_demo_smoke(tmp_path: Path) -> None:
    args = ["demo", "--epochs", "1", "--fp-epochs", "2", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "run"), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "full-precision top-1 (original): " in result.output
    assert (tmp_path / "c" / "digits_cnn-fp-v3-e2.pt").is_file()
    assert (tmp_path / "run" / "best.pt").is_file()
    fp = float(result.output.split("full-precision top-1 (original): ")[1].split("%")[0])
    binary = float(result.output.split("(1W/1A, best): ")[1].split("%")[0])
    assert fp > 50.0 and binary > 30.0
    result = runner.invoke(app, args)  # again: the float model comes from the cache
    assert result.exit_code == 0 and "training the full-precision" not in result.output


@pytest.mark.slow
def test_demo_reaches_good_binary_accuracy(tmp_path: Path) -> None:
    from irconvert.demo import run_demo

    result = run_demo(tmp_path / "run", cache_dir=tmp_path / "c", quiet=True)
    assert result.fp_top1 is not None and result.fp_top1 > 95.0
    assert result.best_top1 > 95.0


@pytest.mark.data
def test_eval_shared_resnet20(resnet20_weights: Path, cifar10_root: Path) -> None:
    result = runner.invoke(app, ["eval", str(resnet20_weights), "--data",
                                 f"imagefolder:{cifar10_root}", "--limit", "500", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 500 and report["top1"] > 85.0  # ImageNet normalisation


def test_set_overrides_any_recipe_field(setup: dict[str, Path]) -> None:
    out = setup["base"] / "run-set"
    result = _binarize(setup, out, "--set", "distill.alpha=0.25", "--set",
                       "bn_recalibration=1", "--set", "data.flip=false",
                       "--set", "optimizer.lr=2e-3")
    assert result.exit_code == 0, result.output
    config = (out / "config.yaml").read_text()
    assert "alpha: 0.25" in config and "bn_recalibration: 1" in config
    assert "lr: 0.002" in config  # 2e-3 read as a number, as in a recipe file
    assert "flip: false" in config


@pytest.mark.parametrize("value", ["nonsense", "distill.alpha=7", "no_such_field=1"])
def test_bad_set_is_one_line(setup: dict[str, Path], value: str) -> None:
    result = _binarize(setup, setup["base"] / "run-bad-set", "--set", value)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
