"""Conversion: a panel of real torchvision/timm architectures, and the selection rules."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import timm
import torch
import torchvision
from torch import nn

import irconvert
from irconvert.config import BinarizeConfig
from irconvert.convert import ConversionReport, binarize, binarize_, plan, unbinarize_
from irconvert.convert.surgery import RELU_WARNING
from irconvert.errors import ConversionError, IRConvertError
from irconvert.nn import IRConv2d, IRLayer, IRLinear, set_ede
from tests.conftest import TinyNet

SIZE = 32  # every panel model runs at 32x32 (ViT is built with img_size=32)

# ------------------------------------------------------------------------ the panel


@dataclass(frozen=True)
class Arch:
    id: str
    build: Callable[[], nn.Module]
    binarized: int  # counted by hand from the architecture, see the comments
    stem: str
    classifier: str
    kept: dict[str, int] = field(default_factory=dict)  # other reasons -> count


def _tv(name: str) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, num_classes=10)


def _vgg11_bn() -> nn.Module:
    # The 25088x4096 first Linear (102M of 129M weights) would dominate the run;
    # pooling to 1x1 keeps the same layers, names and types at 1/6 the weights.
    model = torchvision.models.vgg11_bn(num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier[0] = nn.Linear(512, 4096)
    return model


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


PANEL = [
    # 4 stages x 2 blocks x 2 3x3 convs; 3 1x1 stride-2 downsample convs kept
    Arch("resnet18", _tv("resnet18"), 16, "conv1", "fc", {"downsample shortcut": 3}),
    # 16 bottlenecks x 3 convs; layer1's stride-1 downsample also kept (by name)
    Arch("resnet50", _tv("resnet50"), 48, "conv1", "fc", {"downsample shortcut": 4}),
    # 11 blocks: 10 expand 1x1 (block 1 has none), 11 project 1x1, last 1x1 conv
    # (features.12), classifier.0 Linear; 11 depthwise and 9 SE x 2 convs kept
    Arch("mobilenet_v3_small", _tv("mobilenet_v3_small"), 23, "features.0.0", "classifier.3",
         {"depthwise": 11, "squeeze-excite gate": 18}),
    # 16 MBConv: 15 expand (stage 1 has none), 16 project, head 1x1 conv;
    # 16 depthwise and 16 SE x 2 convs kept
    Arch("efficientnet_b0", _tv("efficientnet_b0"), 32, "features.0.0", "classifier.1",
         {"depthwise": 16, "squeeze-excite gate": 32}),
    # 8 convs minus the stem, plus 2 of the 3 classifier Linears
    Arch("vgg11_bn", _vgg11_bn, 9, "features.0", "classifier.6"),
    # 58 dense layers x (1x1 + 3x3), 3 transition 1x1 convs (stride 1, not shortcuts)
    Arch("densenet121", _tv("densenet121"), 119, "features.conv0", "classifier"),
    # 22 blocks (1+2+7+12): f.a and f.c 1x1 binarized, f.b grouped 3x3 kept,
    # 4 proj shortcuts kept
    Arch("regnet_x_400mf", _tv("regnet_x_400mf"), 44, "stem.0", "fc",
         {"grouped": 22, "downsample shortcut": 4}),
    Arch("timm_resnet18", _timm("resnet18"), 16, "conv1", "fc", {"downsample shortcut": 3}),
    # 12 blocks x (mlp.fc1 + mlp.fc2), 3 stage downsample 2x2 convs; 12 conv_dw kept
    Arch("timm_convnext_atto", _timm("convnext_atto"), 27, "stem.0", "head.fc",
         {"depthwise": 12}),
    # ds block: conv_pw; 10 ir blocks x (pw + pwl); cn 1x1; conv_head;
    # 11 depthwise and 9 SE x 2 convs kept
    Arch("timm_mobilenetv3_small_100", _timm("mobilenetv3_small_100"), 23, "conv_stem",
         "classifier", {"depthwise": 11, "squeeze-excite gate": 18}),
    # ds block: conv_pw; 15 ir blocks x (pw + pwl); conv_head;
    # 16 depthwise and 16 SE x 2 convs kept
    Arch("timm_efficientnet_b0", _timm("efficientnet_b0"), 32, "conv_stem", "classifier",
         {"depthwise": 16, "squeeze-excite gate": 32}),
    # 12 blocks x (qkv, proj, fc1, fc2)
    Arch("timm_vit_tiny", _timm("vit_tiny_patch16_224", img_size=SIZE), 48,
         "patch_embed.proj", "head"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Many small ops: on a shared 2-core machine one intra-op thread is ~10x
    # faster than two that contend with other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Converted:
    arch: Arch
    original: nn.Module
    original_out: torch.Tensor
    model: nn.Module
    report: ConversionReport
    x: torch.Tensor
    out: torch.Tensor  # the converted model's eval output on x


def _prepare(model: nn.Module) -> nn.Module:
    # the ReLU probe runs on this input size instead of 224x224: keeps the panel fast
    model.irconvert_input_size = (3, SIZE, SIZE)  # type: ignore[assignment]
    return model.eval()


@pytest.fixture(scope="module", params=PANEL, ids=lambda a: a.id)
def converted(request: pytest.FixtureRequest) -> Iterator[Converted]:
    arch: Arch = request.param
    torch.manual_seed(0)
    original = _prepare(arch.build())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        original_out = original(x)
    model, report = binarize(original, warn=False)
    with torch.no_grad():
        out = model(x)
    yield Converted(arch, original, original_out, model, report, x, out)


def _ir_names(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, IRLayer)}


def test_panel_selection(converted: Converted) -> None:
    arch, report = converted.arch, converted.report
    assert report.binarized_layers == arch.binarized
    assert len(_ir_names(converted.model)) == arch.binarized
    reasons = {r.name: r.reason for r in report.rows if not r.binarize}
    assert reasons.pop(arch.stem) == "stem"
    assert reasons.pop(arch.classifier) == "classifier"
    assert dict(Counter(reasons.values())) == arch.kept
    # what the report says is what the model got
    assert {r.name for r in report.rows if r.binarize} == _ir_names(converted.model)
    assert report.packed_bytes < report.fp32_bytes
    assert 0 < report.binarized_params < report.total_params
    for name in reasons:
        assert not isinstance(converted.model.get_submodule(name), IRLayer)


def test_panel_forward_backward(converted: Converted) -> None:
    model = converted.model
    model.zero_grad()
    out = model(converted.x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(out.detach(), converted.out)
    out.square().mean().backward()
    for name in _ir_names(model):
        grad = model.get_submodule(name).weight.grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
    assert any(bool(model.get_submodule(n).weight.grad.abs().sum() > 0) for n in _ir_names(model))
    model.zero_grad()


def test_panel_original_untouched(converted: Converted) -> None:
    original = converted.original
    assert not _ir_names(original)
    with torch.no_grad():
        torch.testing.assert_close(original(converted.x), converted.original_out)
    latent = {id(p) for p in converted.model.parameters()}
    assert not latent & {id(p) for p in original.parameters()}


def test_panel_convert_twice_is_noop(converted: Converted) -> None:
    model = converted.model
    before = dict(model.named_modules())
    report = binarize_(model, warn=False)
    assert report.binarized_layers == converted.arch.binarized
    after = dict(model.named_modules())
    assert before.keys() == after.keys()
    assert all(before[n] is after[n] for n in before)
    with torch.no_grad():
        torch.testing.assert_close(model(converted.x), converted.out, rtol=0, atol=0)


def test_panel_state_dict_round_trip(converted: Converted) -> None:
    model = converted.model
    set_ede(model, 2.5, 1.0)
    try:
        state = model.state_dict()
        fresh = _prepare(converted.arch.build())
        binarize_(fresh, warn=False)
        fresh.load_state_dict(state)
        fresh.eval()
        with torch.no_grad():
            # t, k shape only the backward: the forward must be the saved one
            torch.testing.assert_close(fresh(converted.x), converted.out, rtol=0, atol=0)
        for name in _ir_names(fresh):
            assert fresh.get_submodule(name).ede_t.item() == 2.5
    finally:
        set_ede(model, 1.0, 1.0)


def test_timm_pretrained_cfg_is_honoured() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE,
                              num_classes=10)
    assert model.pretrained_cfg["first_conv"] == "patch_embed.proj"
    assert model.pretrained_cfg["classifier"] == "head"
    # rename what the cfg points at: the structural fallback would pick other layers
    model.pretrained_cfg = {**model.pretrained_cfg, "first_conv": "blocks.0.attn.qkv",
                            "classifier": "blocks.11.mlp.fc2"}
    decisions = irconvert.convert.decide(model, BinarizeConfig(),
                                         irconvert.convert.DEFAULT_LAYER_MAP)
    assert decisions["blocks.0.attn.qkv"].reason == "stem"
    assert decisions["blocks.11.mlp.fc2"].reason == "classifier"
    # the cfg wins over the structural guess (first conv, last linear)
    assert decisions["head"].binarize
    assert decisions["patch_embed.proj"].binarize


# ------------------------------------------------------------------- selection rules


class Plain(nn.Module):
    """stem -> conv a (after a ReLU) -> conv b (after Hardtanh) -> depthwise -> 1x1 s2 -> fc."""

    irconvert_input_size = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.reduce = nn.Conv2d(8, 16, 1, stride=2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        x = torch.nn.functional.hardtanh(self.bn_a(self.conv_a(x)))
        x = self.conv_b(x)
        x = self.grouped(self.dw(x))
        return self.fc(self.reduce(x).mean((2, 3)))


def _decisions(model: nn.Module, **kwargs: object) -> dict[str, str]:
    report = plan(model, BinarizeConfig(act_bits=32, **kwargs))  # type: ignore[arg-type]
    return {r.name: r.reason for r in report.rows}


ALL_BIN = "binarized"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, dict(stem="stem", conv_a=ALL_BIN, conv_b=ALL_BIN, dw="depthwise",
                  grouped="grouped", reduce="downsample shortcut", fc="classifier")),
        (dict(keep_stem=False), dict(stem=ALL_BIN)),
        (dict(keep_classifier=False), dict(fc=ALL_BIN)),
        (dict(keep_downsample=False), dict(reduce=ALL_BIN)),
        (dict(keep_depthwise=False), dict(dw=ALL_BIN, grouped="grouped")),
        (dict(keep_grouped=False), dict(grouped=ALL_BIN, dw="depthwise")),
        (dict(exclude=("conv_*",)), dict(conv_a="excluded by pattern",
                                         conv_b="excluded by pattern", stem="stem")),
        (dict(include=("conv_a",)), dict(conv_a="included by pattern",
                                         conv_b="not matched by include patterns",
                                         stem="not matched by include patterns")),
        # include wins over every keep_* default
        (dict(include=("stem", "dw", "grouped", "reduce", "fc")),
         dict(stem="included by pattern", dw="included by pattern",
              grouped="included by pattern", reduce="included by pattern",
              fc="included by pattern", conv_a="not matched by include patterns")),
        # exclude wins over include
        (dict(include=("conv_*",), exclude=("conv_b",)),
         dict(conv_a="included by pattern", conv_b="excluded by pattern")),
    ],
)
def test_selection_rules(kwargs: dict[str, object], expected: dict[str, str]) -> None:
    got = _decisions(Plain(), **kwargs)
    assert {name: got[name] for name in expected} == expected


def test_include_patterns_are_globs_on_dotted_names() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    report = plan(model, BinarizeConfig(act_bits=32, include=("layer1.*.conv?",)))
    assert {r.name for r in report.rows if r.binarize} == {
        "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"}


def test_plan_changes_nothing(tiny_net: TinyNet) -> None:
    report = plan(tiny_net)
    assert report.binarized_layers == 2
    assert not _ir_names(tiny_net)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)),
         "parameter '2.weight' is uninitialized .*run one forward pass"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(4, 2)),
         r"all 2 conv/linear layers stay full precision \(classifier, stem\); relax"),
        (nn.Sequential(nn.ReLU(), nn.Flatten()), "the model has no conv or linear layer"),
    ],
)
def test_nothing_to_convert(model: nn.Module, match: str) -> None:
    with pytest.raises(ConversionError, match=match) as info:
        binarize_(model, BinarizeConfig(act_bits=32))
    assert isinstance(info.value, IRConvertError)
    assert "\n" not in str(info.value)


def test_nothing_to_convert_because_of_patterns(tiny_net: TinyNet) -> None:
    with pytest.raises(ConversionError, match="excluded by pattern"):
        binarize_(tiny_net, BinarizeConfig(exclude=("*",)))


def test_relu_fed_conv_is_warned_by_name_when_asked() -> None:
    model = Plain()
    with pytest.warns(UserWarning, match=r"irconvert: conv_a: input is always >= 0"):
        report = binarize_(model, BinarizeConfig(act_bits=1, one_signed_inputs="warn"))
    rows = {r.name: r for r in report.rows}
    assert rows["conv_a"].warning == RELU_WARNING
    assert rows["conv_b"].warning is None  # Hardtanh-fed: both signs
    assert report.warnings == [f"conv_a: {RELU_WARNING}"]
    assert report.to_dict()["warnings"] == report.warnings
    assert model.conv_a.act_threshold is None


def test_relu_fed_conv_gets_a_balancing_threshold_by_default() -> None:
    model = Plain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fixed, so nothing to warn about
        report = binarize_(model, BinarizeConfig(act_bits=1))
    rows = {r.name: r for r in report.rows}
    assert rows["conv_a"].warning is None and "threshold added" in (rows["conv_a"].fix or "")
    assert "8 of 8 input channels" in (rows["conv_a"].fix or "")
    assert rows["conv_b"].fix is None and model.conv_b.act_threshold is None
    assert report.to_dict()["fixes"] == report.fixes == [f"conv_a: {rows['conv_a'].fix}"]
    # the threshold balances the bits of what conv_a sees: both signs, every channel
    seen: list[torch.Tensor] = []
    model.conv_a.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model.eval()
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 8))
    bits = torch.where(seen[0] - model.conv_a.act_threshold.view(1, -1, 1, 1) >= 0, 1.0, -1.0)
    per_channel = bits.transpose(0, 1).reshape(8, -1)
    assert ((per_channel == 1).any(1) & (per_channel == -1).any(1)).all()


def test_one_signed_report_and_1w32a() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = binarize_(Plain(), BinarizeConfig(act_bits=1, one_signed_inputs="warn"),
                           warn=False)
        assert report.warnings  # still in the report
        report = binarize_(Plain(), BinarizeConfig(act_bits=32))
        assert report.warnings == [] and report.fixes == []


def test_hardtanh_fed_model_has_no_warning(tiny_net: TinyNet) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = binarize_(tiny_net)
    assert report.warnings == []
    assert isinstance(tiny_net.conv1, IRConv2d) and tiny_net.conv1.binary_act


def test_unsupported_and_edge_layers_are_kept() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
        nn.Conv1d(8, 8, 1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 8, 1, groups=8, bias=False),  # one weight per channel
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    got = {r.name: r.reason for r in plan(model, BinarizeConfig(act_bits=32,
                                                                keep_depthwise=False)).rows}
    assert got["1"] == "unsupported padding_mode 'reflect'"
    assert got["2"] == "unsupported layer type torch.nn.modules.conv.Conv1d"
    assert got["3"] == "binarized"
    assert got["4"] == "one weight per output channel"


def test_attention_output_projection_says_why_it_is_kept() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = self.attn(x, x, x, need_weights=False)[0]
            return self.head(self.mlp(x).mean(1))

    got = {r.name: r for r in plan(Block(), BinarizeConfig(act_bits=32)).rows}
    assert not got["attn.out_proj"].binarize
    assert got["attn.out_proj"].reason.startswith("attention output projection")
    assert got["mlp"].reason == "binarized"
    # Not even a layer map that knows the class, nor an include glob, swaps it.
    layer_map = {**irconvert.convert.DEFAULT_LAYER_MAP,
                 type(Block().attn.out_proj): IRLinear}
    decisions = irconvert.convert.decide(Block(), BinarizeConfig(act_bits=32, include=("*",)),
                                         layer_map)
    assert not decisions["attn.out_proj"].binarize


def test_custom_layer_map() -> None:
    class MyConv(nn.Conv2d):
        pass

    class MyIRConv(IRConv2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyConv(4, 4, 3), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    cfg = BinarizeConfig(act_bits=32)
    assert plan(model, cfg).rows[1].reason.startswith("unsupported layer type")
    layer_map = {**irconvert.convert.DEFAULT_LAYER_MAP, MyConv: MyIRConv}
    binarize_(model, cfg, layer_map)
    assert type(model[1]) is MyIRConv


def test_unbinarize_restores_float_layers(tiny_net: TinyNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    tiny_net.eval()
    ref = tiny_net(x)
    binarize_(tiny_net)
    assert isinstance(tiny_net.conv1, IRConv2d)
    assert unbinarize_(tiny_net) == 2
    assert type(tiny_net.conv1) is nn.Conv2d and not _ir_names(tiny_net)
    torch.testing.assert_close(tiny_net(x), ref)


def test_linear_only_model() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Hardtanh(), nn.Linear(16, 16), nn.Hardtanh(),
                          nn.Linear(16, 2))
    report = binarize_(model)
    # no conv: no stem; the last Linear is the classifier
    assert [r.reason for r in report.rows] == ["binarized", "binarized", "classifier"]
    assert isinstance(model[0], IRLinear)
    out = model(torch.randn(3, 8))
    assert torch.isfinite(out).all()


def test_report_sizes_tiny(tiny_net: TinyNet) -> None:
    report = binarize_(copy.deepcopy(tiny_net))
    # conv1 8*16*9 = 1152 weights -> 144 bytes + 16 exponents; conv2 16*16*9 = 2304 -> 288 + 16
    binarized = 1152 + 2304
    assert report.binarized_params == binarized
    assert report.fp32_bytes - report.packed_bytes == 4 * binarized - (144 + 16 + 288 + 16)
    assert report.to_dict()["binarized_layers"] == 2


def test_bare_layer_is_an_error_not_a_silent_no_op() -> None:
    conv = nn.Conv2d(3, 4, 3)
    cfg = BinarizeConfig(act_bits=32, keep_stem=False, keep_classifier=False)
    with pytest.raises(ConversionError, match="bare Conv2d"):
        binarize_(conv, cfg)
    with pytest.raises(ConversionError, match="bare IRLinear"):
        unbinarize_(IRLinear(3, 2))


def test_timm_headless_model_has_no_classifier() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert isinstance(model.fc, nn.Identity)
    decisions = irconvert.convert.decide(model, BinarizeConfig(),
                                         irconvert.convert.DEFAULT_LAYER_MAP)
    assert irconvert.convert.find_classifier(model) == set()
    assert decisions["layer4.1.conv2"].reason == "binarized"  # not mistaken for the head
    assert decisions["conv1"].reason == "stem"


def test_layer_used_twice_is_swapped_everywhere() -> None:
    shared = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Hardtanh(), shared, nn.Hardtanh(),
                          shared, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    report = binarize_(model)
    assert report.binarized_layers == 1
    assert isinstance(model[2], IRConv2d) and model[4] is model[2]
    assert model[2].weight is shared.weight
    assert unbinarize_(model) == 1
    assert type(model[2]) is nn.Conv2d and model[4] is model[2]


def test_squeeze_excite_gates_stay_fp32_by_default() -> None:
    import torchvision

    model = torchvision.models.mobilenet_v3_small()
    rows = {r.name: r for r in irconvert.plan(model, BinarizeConfig(act_bits=32)).rows}
    se = [n for n in rows if ".block.2.fc" in n]  # SqueezeExcitation.fc1 / fc2
    assert se and all(rows[n].reason == "squeeze-excite gate" for n in se)
    rows = {r.name: r for r in irconvert.plan(
        model, BinarizeConfig(act_bits=32, keep_se=False)).rows}
    assert all(rows[n].binarize for n in se)
