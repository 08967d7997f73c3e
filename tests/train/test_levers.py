"""Accuracy levers a recipe turns on: another teacher, alternating flips, a 1-d lr scale.

Each lever is checked against what it promises (the arithmetic, the images a
loader yields, the classes a teacher must have) and for an exact ``--resume``
with it on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from irconvert.config import DataConfig, OptimizerConfig, ScheduleConfig
from irconvert.config.recipe_file import recipe_from_dict
from irconvert.data.loaders import AugmentedDataset, GPUCachedLoader, alternate_flips
from irconvert.errors import ConfigError
from irconvert.models import build_model
from irconvert.train.optim import build_optimizer, lr_factor_fn
from irconvert.train.run import fit
from irconvert.train.teachers import TeacherEnsemble, load_teacher
from tests._train_helpers import cut_and_resume, fit_on_one_thread
from tests.train.test_trainer import _assert_same, make_model, tiny_data, tiny_recipe  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# -- alternating flips ------------------------------------------------------------------

def test_alternate_flips_invert_every_other_epoch() -> None:
    first = alternate_flips(3, 0, range(2000))
    assert 900 < sum(first) < 1100  # a fair coin per image
    assert alternate_flips(3, 1, range(2000)) == [not f for f in first]
    assert alternate_flips(3, 2, range(2000)) == first
    assert alternate_flips(4, 0, range(2000)) != first  # the seed draws them


def _views(loader: GPUCachedLoader, epoch: int) -> dict[int, torch.Tensor]:
    """Image index -> the augmented image the loader yields for it in ``epoch``."""
    loader.sampler.set_epoch(epoch)
    order = list(iter(loader.sampler))
    out: dict[int, torch.Tensor] = {}
    for b, (x, _) in enumerate(loader):
        for j, i in enumerate(order[b * loader.batch_size:(b + 1) * loader.batch_size]):
            out[i] = x[j]
    return out


def test_cached_loader_shows_both_views_in_two_epochs() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(16)
    cfg = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), flip="alternate")
    loader = GPUCachedLoader(images, labels, cfg, cfg.mean, cfg.std, batch_size=4, train=True,
                             seed=5, device=torch.device("cpu"))  # type: ignore[arg-type]
    plain = images.float() / 255.0
    bits = alternate_flips(5, 0, range(16))
    for epoch in (0, 1):
        views = _views(loader, epoch)
        for i in range(16):
            flipped = bits[i] != bool(epoch)
            want = plain[i].flip(-1) if flipped else plain[i]
            assert torch.equal(views[i], want), (epoch, i)


def test_dataset_path_flips_the_same_images() -> None:
    base = [(torch.arange(6.0).view(1, 2, 3) + 10 * i, 0) for i in range(8)]
    ds = AugmentedDataset(base, lambda x: x, seed=5, alternate_flip=True)
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        bits = alternate_flips(5, epoch, range(8))
        for i in range(8):
            x = ds[i]
            assert x is not None
            want = base[i][0].flip(-1) if bits[i] else base[i][0]
            assert torch.equal(x[0], want)


def test_flip_field_takes_alternate_only() -> None:
    assert recipe_from_dict({"data": {"flip": "alternate"}}).data.flip == "alternate"
    assert recipe_from_dict({"data": {"flip": False}}).data.flip is False
    with pytest.raises(ConfigError, match=r"data\.flip"):
        recipe_from_dict({"data": {"flip": "sometimes"}})


# -- a learning-rate scale for the 1-d parameters -----------------------------------------

def test_norm_lr_scale_sets_the_1d_group_and_follows_the_schedule() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    opt = build_optimizer(model, OptimizerConfig(name="adam", lr=1e-2, norm_lr_scale=0.1,
                                                 weight_decay=1e-4))
    weights, ones = opt.param_groups
    assert weights["lr"] == pytest.approx(1e-2) and ones["lr"] == pytest.approx(1e-3)
    assert ones["weight_decay"] == 0.0
    assert {id(p) for p in ones["params"]} == {id(model[1].weight), id(model[1].bias),
                                                id(model[0].bias), id(model[3].bias)}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor_fn(ScheduleConfig(), 1e-2, 10, 1))
    for _ in range(5):
        opt.step()
        sched.step()
    assert weights["lr"] == pytest.approx(0.5e-2) and ones["lr"] == pytest.approx(0.5e-3)


def test_norm_lr_scale_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.norm_lr_scale"):
        recipe_from_dict({"optimizer": {"norm_lr_scale": 0}})


# -- a teacher other than the model being converted ---------------------------------------

def _save_resnet(path: Path, classes: int, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(build_model("cifar_resnet20", num_classes=classes).state_dict(), path)
    return path


def test_teacher_by_path_loads_and_an_ensemble_averages(tmp_path: Path) -> None:
    a = _save_resnet(tmp_path / "a.pth", 4, 0)
    b = _save_resnet(tmp_path / "b.pth", 4, 1)
    one = load_teacher([str(a)], 4)
    assert one.sources[0]["arch"] == "cifar_resnet20" and one.sources[0]["sha256"]
    assert not any(p.requires_grad for p in one.module.parameters())
    both = load_teacher([str(a), str(b)], 4)
    assert isinstance(both.module, TeacherEnsemble)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = (load_teacher([str(a)], 4).module(x) + load_teacher([str(b)], 4).module(x)) / 2
        assert torch.allclose(both.module(x), want, atol=1e-6)


def test_teacher_with_other_classes_or_missing_is_one_line(tmp_path: Path) -> None:
    ten = _save_resnet(tmp_path / "ten.pth", 10, 0)
    with pytest.raises(ConfigError, match=r"has 10 classes but the data has 4") as err:
        load_teacher([str(ten)], 4)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"distill\.teacher .*missing\.pth") as err:
        load_teacher([str(tmp_path / "missing.pth")], 4)
    assert "\n" not in str(err.value)


def test_teacher_field_rules() -> None:
    assert recipe_from_dict({"distill": {"teacher": "t.pth"}}).distill.teacher == ("t.pth",)
    with pytest.raises(ConfigError, match=r"distill\.features"):
        recipe_from_dict({"distill": {"teacher": ["t.pth"], "features": 1.0}})
    with pytest.raises(ConfigError, match=r"stages"):
        recipe_from_dict({"distill": {"teacher": "t.pth"}, "stages": [
            {"epochs": 1, "binarize": "activations"},
            {"epochs": 1, "binarize": "both", "distill": {"teacher": "u.pth"}}]})


LEVERS = {"epochs": 2, "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"},
          "optimizer": {"lr": 0.05, "norm_lr_scale": 0.5, "decay_norms": True},
          "data": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop": 8,
                   "padding": 1, "flip": "alternate"}}


def test_a_run_with_the_levers_trains_and_resumes_exactly(tiny_data: str,  # noqa: F811
                                                          tmp_path: Path) -> None:
    teacher = _save_resnet(tmp_path / "teacher.pth", 4, 2)
    recipe = tiny_recipe(**LEVERS, distill={"teacher": str(teacher), "alpha": 0.5})
    fit_on_one_thread(make_model(), tiny_data, recipe, tmp_path / "full", quiet=True)
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert full["teacher"][0]["source"] == str(teacher)

    cut_and_resume(make_model, tiny_data, recipe, tmp_path / "cut", at_step=4)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    _assert_same(full["model"], cut["model"])
    assert full["history"][-1]["train_loss"] == cut["history"][-1]["train_loss"]


def test_the_teacher_changes_the_loss(tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    # the same run with another teacher must train differently: the teacher is used
    a = _save_resnet(tmp_path / "a.pth", 4, 0)
    b = _save_resnet(tmp_path / "b.pth", 4, 1)
    rows = []
    for name, path in (("a", a), ("b", b)):
        recipe = tiny_recipe(epochs=1, distill={"teacher": str(path), "alpha": 1.0})
        fit_on_one_thread(make_model(), tiny_data, recipe, tmp_path / name, quiet=True)
        rows.append(torch.load(tmp_path / name / "last.pt", weights_only=True)["history"][-1])
    assert rows[0]["train_loss"] != rows[1]["train_loss"]


# -- init: starting from another run's weights (1W/1A from a 1W/32A run) ------------------

@pytest.fixture(scope="module")
def run_1w32a(tiny_data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("init") / "w"
    torch.manual_seed(0)
    fit_on_one_thread(build_model("cifar_resnet20", num_classes=4), tiny_data,
                      tiny_recipe(epochs=1, binarize={"act_bits": 32}), out, quiet=True,
                      arch="cifar_resnet20")
    return out


def test_init_copies_every_fitting_tensor(run_1w32a: Path) -> None:
    from irconvert.config import BinarizeConfig
    from irconvert.convert import binarize_
    from irconvert.train.init_weights import init_from_run

    model = build_model("cifar_resnet20", num_classes=4)
    binarize_(model, BinarizeConfig(act_bits=1), warn=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = init_from_run(model, str(run_1w32a), "cifar_resnet20")
    theirs = torch.load(run_1w32a / "best.pt", weights_only=True)["model"]
    after = model.state_dict()
    copied = [k for k in after if k in theirs and not k.endswith(("ede_t", "ede_k"))]
    assert info["copied"] == len(copied) > 0 and info["mode"] == 32
    # ResNet-20's two forms share every name: all but the schedule's t and k come over
    assert info["schedule"] == 2 * 18 and info["copied"] == info["tensors"] - info["schedule"]
    for key in copied:
        assert torch.equal(after[key], theirs[key]), key
    for key in after:
        if key not in copied:
            assert torch.equal(after[key], before[key]), key
    # the 1W/32A run trained its weights: they are not the fresh model's
    assert any(not torch.equal(before[k], after[k]) for k in copied)


def test_init_errors_are_one_line(run_1w32a: Path, tmp_path: Path) -> None:
    from irconvert.train.init_weights import init_from_run

    model = build_model("cifar_resnet20", num_classes=4)
    (tmp_path / "m.irc").write_bytes(b"IRC")
    cases = [(str(tmp_path / "m.irc"), "cifar_resnet20", r"signs, not the latent"),
             (str(tmp_path / "none.pt"), "cifar_resnet20", r"init: .*no such file"),
             (str(run_1w32a), "cifar_resnet32", r"a run of cifar_resnet20, but this run"),
             (str(run_1w32a), None, None)]
    for source, arch, message in cases:
        if message is None:
            init_from_run(model, source, arch)  # the architecture unknown here: allowed
            continue
        with pytest.raises(ConfigError, match=message) as err:
            init_from_run(model, source, arch)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"conv1.weight is \[16, 3, 3, 3\] there but "
                                          r"\[16, 8, 3, 3\] here"):
        init_from_run(make_model(), str(run_1w32a), None)
    with pytest.raises(ConfigError, match=r"no tensor of it fits"):
        init_from_run(nn.Sequential(nn.Linear(2, 2)), str(run_1w32a), None)


def test_a_run_with_init_records_it_and_resumes_exactly(tiny_data: str,  # noqa: F811
                                                        run_1w32a: Path,
                                                        tmp_path: Path) -> None:
    recipe = tiny_recipe(epochs=2, init=str(run_1w32a),
                         ede={"t_min": 0.1, "t_max": 10.0, "per": "step"})

    def model() -> nn.Module:
        torch.manual_seed(3)
        return build_model("cifar_resnet20", num_classes=4)

    fit_on_one_thread(model(), tiny_data, recipe, tmp_path / "full", quiet=True,
                      arch="cifar_resnet20")
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert full["init"]["source"] == str(run_1w32a) and full["init"]["copied"] > 0

    cut_and_resume(model, tiny_data, recipe, tmp_path / "cut", at_step=4, arch="cifar_resnet20")
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    _assert_same(full["model"], cut["model"])
    assert cut["init"] == full["init"]


def test_a_missing_init_fails_before_the_data_is_read(tmp_path: Path) -> None:
    recipe = tiny_recipe(init=str(tmp_path / "no-run"))
    with pytest.raises(ConfigError, match=r"^init: .*no-run: no such file"):
        fit(make_model(), f"imagefolder:{tmp_path / 'no-data'}", recipe, tmp_path / "run",
            quiet=True)
    assert not (tmp_path / "run").exists()
