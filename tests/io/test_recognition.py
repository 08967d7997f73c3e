"""Recognizing the architecture of an unnamed state_dict (irconvert.io.recognize)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from irconvert.errors import UnknownArchitectureError
from irconvert.io import load_model, recognize
from irconvert.io.recognize import recognize_detailed
from irconvert.io.signatures import (
    _read_cache,
    _write_cache,
    build_on_meta,
    cache_dir,
    signatures,
)
from tests.conftest import WEIGHTS, TinyNet, need_shared


@pytest.fixture(autouse=True, scope="module")
def _signature_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Same folder as test_io's, so the session builds each signature once.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRCONVERT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "irc-cache"))
        yield


def _meta_state(arch: str, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    # Recognition reads names and shapes only, so meta tensors stand in for weights.
    return build_on_meta(arch, num_classes).state_dict()


@pytest.mark.parametrize(("arch", "classes"), [
    ("cifar_resnet20", 10),
    ("cifar_resnet32", 100),
    ("cifar_resnet44", 10),
    ("cifar_resnet56", 10),
    ("cifar_resnet18", 100),
    ("vgg_small", 10),
    ("irnet_resnet20", 10),  # the authors' 1W/1A network: cifar_resnet20's keys + bn2
])
def test_builtin(arch: str, classes: int) -> None:
    assert recognize(_meta_state(arch, classes)) == (arch, classes)


@pytest.mark.parametrize("arch", ["cifar_resnet20", "irnet_resnet20"])  # irnet: the authors' files
def test_prefixes_and_missing_counters(arch: str) -> None:
    sd = {f"module.{k}": v for k, v in _meta_state(arch, 100).items()
          if not k.endswith("num_batches_tracked")}
    assert recognize(sd) == (arch, 100)


@pytest.mark.parametrize(("arch", "classes"), [("resnet18", 7), ("mobilenet_v3_small", 1000)])
def test_torchvision(arch: str, classes: int) -> None:
    assert recognize(_meta_state(arch, classes)) == (arch, classes)


def test_torchvision_regnet_needs_fallback_build() -> None:
    # RegNet's constructor computes with tensors and fails under the meta device.
    assert recognize(_meta_state("regnet_x_400mf", 12)) == ("regnet_x_400mf", 12)


def test_timm_convnext() -> None:
    start = time.perf_counter()
    assert recognize(_meta_state("timm:convnext_atto", 5)) == ("timm:convnext_atto", 5)
    # Generous: a cold cache on a loaded 2-core box; warm lookups are far faster.
    assert time.perf_counter() - start < 60


def test_same_keys_prefer_torchvision_and_name_timm_alternative() -> None:
    sd = _meta_state("timm:resnet18", 3)
    signatures("timm", keys=set(sd))  # what a timm lookup leaves in the cache
    found = recognize_detailed(sd)
    assert (found.arch, found.num_classes) == ("resnet18", 3)
    assert "timm:resnet18" in found.alternatives


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["timm:efficientnet_b0", "timm:resnet18d",
                                  "timm:vit_tiny_patch16_224"])
def test_timm_more(arch: str) -> None:
    found = recognize_detailed(_meta_state(arch, 11))
    # vit_tiny and deit_tiny are one architecture: either name rebuilds it.
    assert arch in [found.arch, *found.alternatives] and found.num_classes == 11


def test_unknown_lists_closest() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        recognize(TinyNet().state_dict())
    msg = str(info.value)
    assert "\n" not in msg and "closest:" in msg and "% keys shared" in msg


def test_cifar_depth_is_distinguished_not_merely_close() -> None:
    sd = _meta_state("cifar_resnet32")
    sd = {k: v for k, v in sd.items() if not k.startswith("layer3.4.")}
    with pytest.raises(UnknownArchitectureError, match="cifar_resnet32"):
        recognize(sd)


def test_damaged_or_unwritable_cache_is_harmless(tmp_path: Path) -> None:
    damaged = tmp_path / "signatures.json"
    damaged.write_text("{not json")
    assert _read_cache(damaged) == {}
    _write_cache(damaged / "below-a-file.json", {"x": None})  # OSError swallowed
    assert cache_dir().name == "irc-cache"


@pytest.mark.data
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_shared_cifar_weights(depth: int) -> None:
    files = sorted(need_shared(WEIGHTS).glob(f"resnet{depth}-*.th"))
    if not files:
        pytest.skip(f"no resnet{depth} weights in {WEIGHTS}")
    loaded = load_model(str(files[0]))
    assert (loaded.arch, loaded.num_classes) == (f"cifar_resnet{depth}", 10)
    assert loaded.meta["format"] == "checkpoint:state_dict"
    assert loaded.meta["stripped_prefixes"] == ["module."]
    assert "best_prec1" in loaded.meta["extra_keys"]
    assert loaded.meta["loaded_tensors"] == loaded.meta["model_tensors"]


@pytest.mark.data
def test_shared_resnet20_weights_match(resnet20_weights: Path) -> None:
    raw = torch.load(resnet20_weights, map_location="cpu", weights_only=True)["state_dict"]
    loaded = load_model(str(resnet20_weights))
    own = loaded.model.state_dict()
    for key, value in raw.items():
        assert torch.equal(own[key.removeprefix("module.")], value), key
    assert loaded.sha256 is not None and loaded.sha256.startswith("12fca82f")
    with torch.no_grad():
        assert torch.isfinite(loaded.model(torch.randn(2, 3, 32, 32))).all()
