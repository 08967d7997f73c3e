"""RSign thresholds, RPReLU, their calibration, and the distillation losses around them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import irconvert
from irconvert.config import BinarizeConfig
from irconvert.errors import ConfigError
from irconvert.models import cifar_resnet
from irconvert.nn import IRConv2d, IRLayer, RPReLU, set_binarization
from irconvert.nn.thresholds import init_act_thresholds
from irconvert.train.distill import DistillationLoss, FeatureMatcher, attention_map
from irconvert.train.precision import resolve_amp


def test_threshold_shifts_the_sign_per_channel() -> None:
    conv = IRConv2d(3, 4, 3, padding=1, bias=False)
    b = torch.tensor([0.5, -0.25, 0.0])
    conv.enable_act_threshold(b)
    x = torch.randn(2, 3, 5, 5)
    expected = F.conv2d(torch.where(x - b.view(1, 3, 1, 1) >= 0, 1.0, -1.0),
                        conv.binary_weight(), None, 1, 1)
    assert torch.equal(conv(x), expected)
    # the threshold learns: its gradient is minus the EDE gradient summed per channel
    conv(x).sum().backward()
    assert conv.act_threshold is not None and conv.act_threshold.grad is not None
    assert conv.act_threshold.grad.abs().sum() > 0


def test_switching_binarization_off_uses_latent_values() -> None:
    conv = IRConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    set_binarization(nn.Sequential(conv), weights=False, activations=False)
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, None, 1, 1))
    set_binarization(nn.Sequential(conv), weights=True, activations=False)
    assert torch.equal(conv(x), F.conv2d(x, conv.binary_weight(), None, 1, 1))


def test_rprelu_formula() -> None:
    act = RPReLU(3)
    with torch.no_grad():
        act.shift_in.copy_(torch.tensor([0.1, -0.2, 0.3]))
        act.slope.copy_(torch.tensor([0.25, 0.5, 1.0]))
        act.shift_out.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    x = torch.randn(2, 3, 4, 4)
    y = x - act.shift_in.view(1, 3, 1, 1)
    y = torch.where(y >= 0, y, act.slope.view(1, 3, 1, 1) * y) + act.shift_out.view(1, 3, 1, 1)
    assert torch.allclose(act(x), y)


def test_binarize_config_adds_thresholds_and_rprelu_and_reloads() -> None:
    cfg = BinarizeConfig(act_bits=1, act_threshold=True, block_act="rprelu")
    model = cifar_resnet(20)
    irconvert.binarize_(model, cfg, warn=False)
    layers = [m for m in model.modules() if isinstance(m, IRLayer)]
    assert layers and all(m.act_threshold is not None for m in layers)
    # 2 per block + the stem activation, each with its own width
    acts = [m for m in model.modules() if isinstance(m, RPReLU)]
    assert len(acts) == 19 and {a.channels for a in acts} == {16, 32, 64}
    rebuilt = cifar_resnet(20)
    irconvert.binarize_(rebuilt, BinarizeConfig(act_bits=1, block_act="rprelu"), warn=False)
    rebuilt.load_state_dict(model.state_dict())  # thresholds are created on load
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))
    with pytest.raises(ConfigError, match="'act_threshold' must be false when act_bits is 32"):
        BinarizeConfig(act_bits=32, act_threshold=True)


def test_calibration_balances_bits_per_channel() -> None:
    torch.manual_seed(0)
    # a ReLU before the binary conv: without a threshold every bit would be +1
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          IRConv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
    model[2].enable_act_threshold()
    batches = [torch.randn(16, 3, 8, 8) for _ in range(4)]
    assert init_act_thresholds(model, batches, 4) == 1
    seen: list[torch.Tensor] = []
    hook = model[2].register_forward_pre_hook(lambda _, a: seen.append(a[0]))
    model(batches[0])
    hook.remove()
    bits = (seen[0] - model[2].act_threshold.view(1, -1, 1, 1)) >= 0
    frac = bits.float().mean((0, 2, 3))
    # no channel is constant; where the input is mostly exact zeros (ReLU) the
    # best split is the fraction of non-zeros, otherwise half and half
    assert ((frac > 0.05) & (frac < 0.95)).all(), frac
    assert (((frac - 0.5).abs() < 0.1).sum() >= 4), frac


def test_balanced_threshold_moves_above_a_crowded_median() -> None:
    from irconvert.nn.thresholds import balanced_threshold

    x = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, -1.0]).view(1, 1, 1, 10)
    b = balanced_threshold(x.transpose(0, 1))  # one channel, 10 values
    assert b.item() > 0.0 and b.item() < 1e-30  # just above zero: 3 of 10 bits are +1
    y = torch.arange(10.0).view(10, 1)
    # torch's lower median is 4 (6 of 10 are >= 4); just above it splits 5 / 5
    assert 4.0 < balanced_threshold(y).item() < 4.001


def test_distributional_loss_is_cross_entropy_with_teacher_probabilities() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(5, 4)
    x, y = torch.randn(6, 5), torch.randint(0, 4, (6,))
    student = torch.randn(6, 4)
    loss = DistillationLoss(teacher, kind="distributional", alpha=0.1, temperature=3.0)
    q = teacher(x).softmax(1)
    expected = -(q * student.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss(x, student, y), expected, atol=1e-6)


def test_feature_matching_is_zero_for_identical_blocks_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    teacher.load_state_dict(student.state_dict())
    matcher = FeatureMatcher(student, teacher, ["0", "1"], weight=2.0)
    x = torch.randn(2, 3, 8, 8)
    student(x), teacher(x)
    assert matcher.loss().item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        student[1].weight.add_(torch.randn_like(student[1].weight))
    student(x), teacher(x)
    assert matcher.loss().item() > 0
    a = attention_map(torch.randn(2, 4, 3, 3))
    assert torch.allclose(a.norm(dim=1), torch.ones(2))


def test_amp_resolution_falls_back_cleanly() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp(cpu, "none") == "none"
    assert resolve_amp(cpu, "fp16") == "none"
    assert resolve_amp(cpu, "bf16") in ("bf16", "none")
    assert resolve_amp(torch.device("cuda"), "fp16") == "fp16"


def test_calibration_works_on_models_whose_loader_needs_version_metadata() -> None:
    # torchvision's MNASNet refuses a state dict without its version metadata:
    # calibration must restore running statistics without load_state_dict
    import torchvision

    from irconvert.nn.thresholds import init_act_thresholds

    model = torchvision.models.mnasnet0_5(num_classes=4)
    irconvert.binarize_(model, irconvert.BinarizeConfig(act_bits=1, act_threshold=True),
                        warn=False, probe=False)
    before = model.layers[1].running_mean.clone()
    assert init_act_thresholds(model, [torch.randn(2, 3, 32, 32)], 1) > 0
    assert torch.equal(model.layers[1].running_mean, before)
