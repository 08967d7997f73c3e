"""What the conversion's forward pass finds: layers never called, one-signed inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from irconvert import BinarizeConfig, binarize_
from irconvert.checkpoint import model_from_checkpoint, new_checkpoint
from irconvert.convert.surgery import UNCALLED
from irconvert.models import registry
from irconvert.nn import IRLayer, IRLinear
from irconvert.nn.thresholds import balanced_threshold, init_act_thresholds


class FunctionalAttention(nn.Module):
    """Reads ``qkv.weight`` itself, as torchvision's swin attention does."""

    irconvert_input_size = (6, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 16)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.mlp = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        x = x + self.proj(attn @ v)
        x = x + self.mlp(x)
        return self.head(x.mean(1))


def test_layer_whose_weight_is_read_directly_stays_float() -> None:
    model = FunctionalAttention()
    report = binarize_(model, BinarizeConfig(act_bits=32))
    rows = {r.name: r for r in report.rows}
    assert not rows["qkv"].binarize and rows["qkv"].reason == UNCALLED
    assert rows["proj"].binarize and rows["mlp"].binarize
    assert type(model.qkv) is nn.Linear and isinstance(model.proj, IRLinear)
    out = model(torch.randn(2, 6, 16))  # still runs: qkv.weight is a tensor
    out.sum().backward()
    assert torch.isfinite(model.proj.weight.grad).all()


def test_rebuild_binarizes_the_saved_layers_without_a_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN, "test_functional_attention",
                        lambda num_classes: FunctionalAttention())
    model = FunctionalAttention()
    config = BinarizeConfig(act_bits=1)
    binarize_(model, config)
    ckpt = new_checkpoint(model, arch="test_functional_attention", num_classes=3,
                          config=config)
    rebuilt = model_from_checkpoint(ckpt)
    assert type(rebuilt.qkv) is nn.Linear and isinstance(rebuilt.mlp, IRLinear)
    x = torch.randn(2, 6, 16)
    model.eval()
    assert torch.equal(rebuilt(x), model(x))


def test_linear_thresholds_are_per_feature_on_the_last_axis() -> None:
    # (N, tokens, features) with tokens == features: a dim-1 threshold would
    # broadcast over tokens and still run, silently wrong.
    layer = IRLinear(4, 3, binary_act=True)
    x = torch.randn(2, 4, 4) + torch.tensor([10.0, 0.0, -10.0, 0.0])
    layer.enable_act_threshold(balanced_threshold(x, layer.channel_dim))
    assert torch.allclose(layer.act_threshold.data[[0, 2]], torch.tensor([10.0, -10.0]),
                          atol=3.0)
    seen: list[torch.Tensor] = []
    model = nn.Sequential(layer)
    layer.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    init_act_thresholds(model, [x], 1)
    bits = torch.where(seen[-1] - layer.act_threshold >= 0, 1, -1).reshape(-1, 4)
    assert ((bits == 1).any(0) & (bits == -1).any(0)).all()


class ReluMlp(nn.Module):
    irconvert_input_size = (5, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.fc(torch.relu(self.stem(x)))).mean(1))


def test_relu_fed_linear_on_tokens_gets_a_threshold() -> None:
    model = ReluMlp()
    report = binarize_(model, BinarizeConfig(act_bits=1))
    assert [r.name for r in report.rows if r.fix] == ["fc"]
    assert model.fc.act_threshold is not None and model.fc.act_threshold.shape == (8,)
    assert (model.fc.act_threshold > 0).all()  # above the ReLU's zeros


class ReluChain(nn.Module):
    """stem -> 3 x (ReLU -> 1x1 conv -> BatchNorm) -> classifier: binary convs read ReLUs.

    1x1 without padding, as mobilenet_v2's projections: all-+1 bits make the
    output exactly constant per channel.
    """

    irconvert_input_size = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(*[m for _ in range(3) for m in (
            nn.ReLU(), nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))])
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def _binary_weight_grads(one_signed: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = ReluChain()
    binarize_(model, BinarizeConfig(act_bits=1, one_signed_inputs=one_signed), warn=False)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    init_act_thresholds(model, [x], 1)  # what the trainer does first
    F.cross_entropy(model(x), y).backward()
    return [m.weight.grad for m in model.modules() if isinstance(m, IRLayer)]


def test_relu_fed_layers_learn_only_with_thresholds() -> None:
    # all-+1 bits make each conv's output constant per channel; the BatchNorm
    # after it divides by ~sqrt(eps), and the gradient explodes going back
    exploded = _binary_weight_grads("warn")
    live = _binary_weight_grads("threshold")
    assert len(exploded) == len(live) == 3
    for g in live:
        assert g is not None and torch.isfinite(g).all() and g.abs().max() > 1e-4
    biggest = max(float(g.abs().max()) for g in live)
    assert any(g is not None and (not torch.isfinite(g).all() or g.abs().max() > 1000 * biggest)
               for g in exploded)
