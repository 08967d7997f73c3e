"""The fine-tuning loop: run-dir files, exact resume, interruption, class counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from irconvert.checkpoint import load_run_checkpoint
from irconvert.config.recipe_file import TrainConfig, recipe_from_dict
from irconvert.data.datasets import BadImageError
from irconvert.errors import DataError
from irconvert.nn import IRLayer
from irconvert.train.outcome import TrainingInterrupted
from irconvert.train.run import fit
from irconvert.train.trainer import Trainer
from tests._train_helpers import fit_on_one_thread, make_imagefolder
from tests.conftest import TinyNet


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = make_imagefolder(tmp_path_factory.mktemp("data") / "tiny")
    return f"imagefolder:{root}"


def tiny_recipe(**over: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "epochs": 3, "batch_size": 8, "workers": 0, "device": "cpu",
        "optimizer": {"lr": 0.05}, "ede": {"t_min": 0.1, "t_max": 10.0},
        "data": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop": 8,
                 "padding": 1, "flip": True},
    }
    data.update(over)
    return recipe_from_dict(data)


def make_model() -> TinyNet:
    torch.manual_seed(1)
    return TinyNet(num_classes=4)


def test_fit_writes_run_dir_and_learns(tiny_data: str, tmp_path: Path) -> None:
    result = fit(make_model(), tiny_data, tiny_recipe(epochs=2), tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for name in ("config.yaml", "run.yaml", "last.pt", "best.pt", "metrics.jsonl",
                 "curves.png"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                "lr", "t", "k", "images_per_s", "time"):
        assert key in rows[0]
    assert rows[0]["t"] == pytest.approx(0.1) and rows[1]["t"] == pytest.approx(1.0)
    assert result.best_top1 > 40.0  # chance is 25 %
    ckpt = load_run_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["recipe"]["epochs"] == 2
    # the size of an evaluation input, for exports of this run
    from irconvert.data.datasets import open_data

    first = open_data(tiny_data).val[0][0]
    assert ckpt["input_size"] == [3, first.size[1], first.size[0]]
    assert result.amp == "none"  # what the summary labels its accuracies with
    assert {"optimizer", "scheduler", "rng", "metrics"} <= set(ckpt)
    assert any(k.endswith("ede_t") for k in ckpt["model"])
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]  # type: ignore[no-any-return]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# Tiny models: extra threads only contend on a busy 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


RESUME_RECIPE = {"epochs": 2, "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"}}


@pytest.fixture(scope="module")
def full_run(tiny_data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    fit_on_one_thread(make_model(), tiny_data, tiny_recipe(**RESUME_RECIPE), out, quiet=True)
    return out


# 48 images, batch 8: 6 steps per epoch; 6 stops at the epoch's end, 4 inside it
@pytest.mark.parametrize("stop_at", [6, 4])
def test_resume_is_exact(tiny_data: str, full_run: Path, tmp_path: Path, stop_at: int) -> None:
    recipe = tiny_recipe(**RESUME_RECIPE)

    def stop(trainer: Trainer) -> None:
        if trainer.global_step == stop_at:
            trainer.stop_requested = True  # what the SIGINT/SIGTERM handler does

    with pytest.raises(TrainingInterrupted, match="--resume"):
        fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, on_step=stop)
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["step"] == stop_at
    fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, resume=True)
    _assert_same(_weights(full_run), _weights(tmp_path / "cut"))
    full = (full_run / "metrics.jsonl").read_text().splitlines()
    cut = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_top1"] for x in full] == [json.loads(x)["val_top1"] for x in cut]


def test_gpu_cache_path_runs_and_resumes(tiny_data: str, tmp_path: Path) -> None:
    data = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop": 8, "padding": 1,
            "gpu_cache": True}
    recipe = tiny_recipe(epochs=2, data=data)
    fit(make_model(), tiny_data, recipe, tmp_path / "full", quiet=True)

    def stop(trainer: Trainer) -> None:
        trainer.stop_requested = trainer.global_step == 2

    with pytest.raises(TrainingInterrupted):
        fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, on_step=stop)
    fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, resume=True)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))


def test_class_count_mismatch(tiny_data: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--replace-classifier"):
        fit(TinyNet(num_classes=10), tiny_data, tiny_recipe(epochs=1), tmp_path / "r",
            quiet=True)
    model = TinyNet(num_classes=10)
    fit(model, tiny_data, tiny_recipe(epochs=1), tmp_path / "r", quiet=True,
        replace_classifier=True, evaluate_fp=False)
    assert model.fc.out_features == 4
    assert any(isinstance(m, IRLayer) for m in model.modules())


def test_refuses_to_overwrite_a_run(tiny_data: str, tmp_path: Path) -> None:
    from irconvert.errors import ConfigError

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--resume"):
        fit(make_model(), tiny_data, tiny_recipe(), tmp_path / "r", quiet=True)


def test_steps_schedule_warmup_and_milestones() -> None:
    from irconvert.config import ScheduleConfig
    from irconvert.train.optim import lr_factor_fn

    cfg = ScheduleConfig(name="step", unit="step", milestones=(10, 20), gamma=0.1, warmup=4,
                         warmup_start_lr=0.2)
    f = lr_factor_fn(cfg, 0.8, 30, 5)
    assert f(0) == pytest.approx(0.25) and f(2) == pytest.approx(0.625)
    assert f(4) == 1.0 and f(10) == pytest.approx(0.1) and f(25) == pytest.approx(0.01)
    cos = lr_factor_fn(ScheduleConfig(), 0.1, 100, 10)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)


def test_no_weight_decay_on_bn_and_bias() -> None:
    from irconvert.train.optim import param_groups

    model = TinyNet()
    groups = param_groups(model, 1e-4, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}  # type: ignore[attr-defined]
    assert id(model.conv1.weight) in decayed and id(model.fc.weight) in decayed
    assert id(model.bn1.weight) not in decayed and id(model.fc.bias) not in decayed
    assert groups[1]["weight_decay"] == 0.0


def test_decay_norms_decays_bn_and_bias_as_sgd_weight_decay() -> None:
    # the authors' code decays every parameter: one SGD step with zero
    # gradients shrinks each 1-d parameter by lr * wd, and nothing else moves
    from irconvert.config import OptimizerConfig
    from irconvert.train.optim import build_optimizer, param_groups

    model = TinyNet()
    groups = param_groups(model, 1e-4, 0.1, decay_norms=True)
    assert len(groups) == len(param_groups(model, 1e-4, 0.1))  # same groups, same state
    assert groups[-1]["weight_decay"] == 1e-4
    opt = build_optimizer(model, OptimizerConfig(lr=0.5, weight_decay=0.01, momentum=0.0,
                                                 decay_norms=True))
    with torch.no_grad():
        model.bn1.weight.uniform_(0.5, 1.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] * (1 - 0.5 * 0.01))


def test_sigterm_saves_last_pt(tiny_data: str, tmp_path: Path) -> None:
    import os
    import signal

    def kill(trainer: Trainer) -> None:
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"last\.pt saved") as err:
        fit(make_model(), tiny_data, tiny_recipe(epochs=1), tmp_path / "r", quiet=True,
            on_step=kill)
    assert err.value.exit_code == 143  # 128 + SIGTERM, as shells expect (Ctrl-C: 130)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["step"] == 2


def test_distillation_from_the_float_teacher(tiny_data: str, tmp_path: Path) -> None:
    recipe = tiny_recipe(epochs=1, distill={"alpha": 0.5, "temperature": 2.0})
    seen: list[Any] = []
    fit(make_model(), tiny_data, recipe, tmp_path / "r", quiet=True,
        on_step=lambda t: seen.append(t.distill))
    teacher = seen[0].teacher
    assert not any(isinstance(m, IRLayer) for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_adamw_grad_clip_label_smoothing_step_schedule(tiny_data: str, tmp_path: Path) -> None:
    recipe = tiny_recipe(
        epochs=1, steps=4, grad_clip=0.5, label_smoothing=0.1,
        optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
        schedule={"name": "step", "unit": "step", "milestones": [2], "warmup": 1},
    )
    lrs: list[float] = []
    result = fit(make_model(), tiny_data, recipe, tmp_path / "r", quiet=True,
                 on_step=lambda t: lrs.append(t.optimizer.param_groups[0]["lr"]))
    assert len(lrs) == 4 and result.history[0]["val_top1"] is not None
    # lr set for the next step: warmup 0 -> 0.01 at step 1, x0.1 from step 2 on
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 0.001])


@pytest.fixture
def spoiled_data(tmp_path: Path) -> tuple[str, Path]:
    root = make_imagefolder(tmp_path / "spoiled", train=6, val=2)
    bad = root / "train" / "class1" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    return f"imagefolder:{root}", bad


@pytest.mark.parametrize("gpu_cache", [False, True])
def test_an_unreadable_image_stops_the_run_and_leaves_nothing(
        spoiled_data: tuple[str, Path], tmp_path: Path, gpu_cache: bool) -> None:
    data, bad = spoiled_data
    data_cfg = {"mean": [0.5] * 3, "std": [0.25] * 3, "crop": 8, "padding": 1,
                "gpu_cache": gpu_cache}
    out = tmp_path / "run"
    with pytest.raises(BadImageError, match=f"^{bad}: unreadable image"):
        fit(make_model(), data, tiny_recipe(epochs=1, data=data_cfg), out, quiet=True,
            evaluate_fp=False)
    assert not out.exists()  # no folder with only config.yaml/run.yaml in it


@pytest.mark.parametrize("gpu_cache", [False, True])
def test_unreadable_images_can_be_skipped_and_counted(
        spoiled_data: tuple[str, Path], tmp_path: Path, gpu_cache: bool) -> None:
    data, bad = spoiled_data
    data_cfg = {"mean": [0.5] * 3, "std": [0.25] * 3, "crop": 8, "padding": 1,
                "gpu_cache": gpu_cache, "bad_files": "skip"}
    logged: list[str] = []
    from irconvert.train.progress import make_progress

    progress = make_progress(quiet=True)
    progress.log = logged.append  # type: ignore[method-assign]
    result = fit(make_model(), data, tiny_recipe(epochs=1, data=data_cfg), tmp_path / "run",
                 progress=progress, evaluate_fp=False)
    assert result.skipped == [str(bad)]
    assert any("skipped 1 unreadable image file(s)" in line and str(bad) in line
               for line in logged), logged
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["skipped_images"] == 1 and row["skipped_files"] == [str(bad)]
    assert load_run_checkpoint(tmp_path / "run" / "last.pt")["skipped_files"] == [str(bad)]


def test_a_failure_after_the_first_epoch_keeps_the_run(tiny_data: str, tmp_path: Path) -> None:
    def fail(trainer: Trainer) -> None:
        if trainer.epoch == 1:
            raise DataError("x.png: unreadable image")

    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"x.png: unreadable image; .*last.pt is kept: .*"
                                        r"irconvert binarize .* --resume"):
        fit(make_model(), tiny_data, tiny_recipe(epochs=2), out, quiet=True, on_step=fail,
            evaluate_fp=False)
    assert load_run_checkpoint(out / "last.pt")["epoch"] == 1


def test_a_field_added_since_the_checkpoint_is_no_recipe_change(tiny_data: str,
                                                                  tmp_path: Path) -> None:
    recipe = tiny_recipe(epochs=1)
    out = tmp_path / "run"
    fit(make_model(), tiny_data, recipe, out, quiet=True, evaluate_fp=False)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["recipe"]["data"]["bad_files"]  # written before the field existed
    torch.save(ckpt, out / "last.pt")
    logged: list[str] = []
    from irconvert.train.progress import make_progress

    progress = make_progress(quiet=True)
    progress.log = logged.append  # type: ignore[method-assign]
    fit(make_model(), tiny_data, recipe, out, progress=progress, resume=True)
    assert not any("changed recipe" in line for line in logged), logged
    assert any("has finished all its 1 epochs" in line for line in logged), logged
