"""irconvert.io: every form a full-precision model arrives in, and every bad one."""

from __future__ import annotations

import json
import random
import urllib.error
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from irconvert.errors import IRConvertError, LoadError, UnknownArchitectureError
from irconvert.io import LoadedModel, load_model, load_state_dict_file
from irconvert.models import build_model
from tests.conftest import TinyNet


@pytest.fixture(autouse=True, scope="module")
def _signature_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # One cache for the session (test_recognition uses the same folder), never ~/.cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRCONVERT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "irc-cache"))
        yield


@pytest.fixture(scope="module")
def r20_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("cifar_resnet20").state_dict()


def _one_line_error(exc_type: type[IRConvertError], fn: Callable[[], Any]) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def _same_weights(loaded: LoadedModel, sd: dict[str, torch.Tensor]) -> None:
    got = loaded.model.state_dict()
    for key in ("conv1.weight", "layer3.2.bn2.running_var", "linear.bias"):
        assert torch.equal(got[key], sd[key].float()), key


def _strip_counters(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


# --- names ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "arch", "classes"), [
    ("cifar_resnet20", "cifar_resnet20", 10),
    ("resnet20", "cifar_resnet20", 10),
    ("vgg_small", "vgg_small", 10),
    ("resnet18", "resnet18", 1000),
])
def test_load_by_name(name: str, arch: str, classes: int) -> None:
    loaded = load_model(name)
    assert (loaded.arch, loaded.num_classes, loaded.meta["format"]) == (arch, classes, "name")
    assert not loaded.model.training and loaded.sha256 is None


def test_load_by_name_num_classes_and_timm() -> None:
    assert load_model("cifar_resnet18", num_classes=100).num_classes == 100
    loaded = load_model("timm:resnet10t", num_classes=3)
    assert (loaded.arch, loaded.num_classes) == ("timm:resnet10t", 3)


def test_unknown_name_suggests() -> None:
    msg = _one_line_error(UnknownArchitectureError, lambda: load_model("cifar_resnet_20"))
    assert "did you mean" in msg and "cifar_resnet20" in msg
    _one_line_error(UnknownArchitectureError, lambda: load_model("timm:resnet_18_nope"))


def test_pretrained_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    msg = _one_line_error(LoadError, lambda: load_model("resnet18", pretrained=True))
    assert "offline" in msg
    _one_line_error(LoadError, lambda: load_model("cifar_resnet20", pretrained=True))


# --- checkpoint forms ----------------------------------------------------

@pytest.mark.parametrize(("wrap", "prefix", "legacy"), [
    (None, "", False),
    (None, "", True),
    (None, "module.", False),
    ("state_dict", "module.", True),  # the shared CIFAR weights' form
    ("state_dict", "_orig_mod.", False),
    ("model", "", True),
    ("model_state_dict", "_orig_mod.module.", False),
    ("net", "module.", False),
    ("state_dict_ema", "", False),
])
def test_checkpoint_forms(
    tmp_path: Path, r20_state: dict[str, torch.Tensor], wrap: str | None, prefix: str,
    legacy: bool,
) -> None:
    sd = {prefix + k: v for k, v in _strip_counters(r20_state).items()}
    obj: Any = sd if wrap is None else {wrap: sd, "epoch": 7, "best_prec1": 91.5}
    path = tmp_path / "ckpt.th"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_model(str(path))
    assert (loaded.arch, loaded.num_classes) == ("cifar_resnet20", 10)
    assert loaded.meta["format"] == ("state_dict" if wrap is None else f"checkpoint:{wrap}")
    assert loaded.meta["recognized"] is True
    assert loaded.meta["loaded_tensors"] == loaded.meta["model_tensors"]
    if wrap:
        assert loaded.meta["extra_keys"] == {"epoch": 7, "best_prec1": 91.5}
    assert len(loaded.sha256 or "") == 64
    _same_weights(loaded, r20_state)


def test_plain_weights_win_over_ema(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in r20_state.items()}
    path = tmp_path / "both.pth"
    torch.save({"state_dict_ema": ema, "state_dict": r20_state}, path)
    loaded = load_model(str(path), arch="cifar_resnet20")
    assert loaded.meta["format"] == "checkpoint:state_dict"
    _same_weights(loaded, r20_state)


def test_nested_checkpoint(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "nested.pt"
    torch.save({"model": {"state_dict": r20_state, "cfg": "x"}, "args": {"lr": 0.1}}, path)
    sd, info = load_state_dict_file(path)
    assert isinstance(sd, dict) and info["format"] == "checkpoint:model/state_dict"


def test_arch_given_and_alias(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.bin"
    torch.save(r20_state, path)
    loaded = load_model(str(path), arch="resnet20", num_classes=10)
    assert (loaded.arch, loaded.meta["recognized"]) == ("cifar_resnet20", False)


def test_cuda_saved_weights_map_to_cpu(tmp_path: Path, r20_state: dict[str, torch.Tensor],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    path = tmp_path / "w.pth"
    torch.save(r20_state, path)
    monkeypatch.setattr(torch, "load", spy)
    load_model(str(path))
    assert seen["map_location"] == "cpu" and seen["weights_only"] is True


def test_safetensors(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in r20_state.items()}, str(path))
    for arch in (None, "cifar_resnet20"):
        loaded = load_model(str(path), arch=arch)
        assert (loaded.arch, loaded.num_classes, loaded.meta["format"]) == (
            "cifar_resnet20", 10, "safetensors")
        _same_weights(loaded, r20_state)


def test_safetensors_other_classes_sorted_keys(tmp_path: Path) -> None:
    # safetensors sorts keys: the classifier is not last in the file.
    sd = build_model("resnet18", num_classes=7).state_dict()
    path = tmp_path / "tv.safetensors"
    save_file(sd, str(path))
    loaded = load_model(str(path), arch="resnet18")
    assert loaded.num_classes == 7


def test_num_classes_disagrees(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.pth"
    torch.save(r20_state, path)
    for arch in (None, "cifar_resnet20"):
        msg = _one_line_error(LoadError, partial(load_model, str(path), arch=arch,
                                                 num_classes=100))
        assert "checkpoint has 10 classes, --num-classes says 100" in msg


# --- pickled modules -------------------------------------------------------

def test_pickled_module_needs_consent(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(build_model("cifar_resnet20"), path)
    msg = _one_line_error(LoadError, lambda: load_model(str(path)))
    assert "--trust-pickle" in msg and "trust_pickle=True" in msg and "CifarResNet" in msg
    loaded = load_model(str(path), trust_pickle=True)
    assert loaded.meta["format"] == "pickled-module"
    assert (loaded.arch, loaded.num_classes) == ("cifar_resnet20", 10)


def test_pickled_custom_module(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save({"model": TinyNet(num_classes=4), "epoch": 1}, path)
    loaded = load_model(str(path), trust_pickle=True)
    assert isinstance(loaded.model, TinyNet)
    assert (loaded.arch, loaded.num_classes) == (None, 4)
    assert loaded.meta["format"] == "pickled-module"
    assert loaded.meta["extra_keys"] == {"epoch": 1}
    _one_line_error(LoadError, lambda: load_model(str(path), trust_pickle=True, num_classes=9))


def test_half_precision_checkpoint_loads_as_float32(
    tmp_path: Path, r20_state: dict[str, torch.Tensor],
) -> None:
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in r20_state.items()}, path)
    loaded = load_model(str(path))
    assert loaded.model.state_dict()["conv1.weight"].dtype == torch.float32


# --- bad inputs ------------------------------------------------------------

def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_bad_files(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    good_zip, good_legacy = tmp_path / "zip.pth", tmp_path / "legacy.th"
    torch.save(r20_state, good_zip)
    torch.save(r20_state, good_legacy, _use_new_zipfile_serialization=False)
    cases = {
        "no such file": str(tmp_path / "absent.pth"),
        "is a directory": str(tmp_path),
        "is empty": _write(tmp_path / "empty.pth", b""),
        "not a PyTorch checkpoint": _write(tmp_path / "text.pth", b"hello, weights\n" * 10),
        "truncated": _write(tmp_path / "half.pth", good_zip.read_bytes()[:20000]),
    }
    noise = random.Random(0)
    rnd = _write(tmp_path / "random.pt", noise.randbytes(4096))
    legacy_bytes = good_legacy.read_bytes()
    cut_legacy = _write(tmp_path / "cut.th", legacy_bytes[: len(legacy_bytes) // 2])
    cut_st = tmp_path / "cut.safetensors"
    save_file(r20_state, str(cut_st))
    cases["truncated or corrupt"] = _write(cut_st, cut_st.read_bytes()[:5000])
    for expected, source in cases.items():
        msg = _one_line_error(LoadError, partial(load_model, source))
        assert expected in msg, (expected, msg)
    # Starts like a pickle: weights_only fails, but that is damage, not a need for trust.
    pickle_like = _write(tmp_path / "junk.pt", b"\x80\x02" + noise.randbytes(4096))
    for source in (rnd, cut_legacy, pickle_like):
        msg = _one_line_error(LoadError, partial(load_model, source))
        assert "--trust-pickle" not in msg, msg


def test_missing_path_like_name_is_a_file_error() -> None:
    msg = _one_line_error(LoadError, lambda: load_model("weights/none.pth"))
    assert "no such file" in msg


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "cfg.pth"
    torch.save({"lr": 0.1, "epochs": [1, 2]}, path)
    assert "no state_dict found" in _one_line_error(LoadError, lambda: load_model(str(path)))
    torch.save([torch.zeros(1)], path)
    _one_line_error(LoadError, lambda: load_model(str(path)))


def test_unknown_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(TinyNet().state_dict(), path)
    msg = _one_line_error(UnknownArchitectureError, lambda: load_model(str(path)))
    assert "closest" in msg and "--arch" in msg


def test_arch_does_not_fit(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "r20.pth"
    torch.save(r20_state, path)
    msg = _one_line_error(LoadError, lambda: load_model(str(path), arch="cifar_resnet32"))
    assert "does not fit cifar_resnet32" in msg and "missing layer1.3.conv1.weight" in msg
    msg = _one_line_error(LoadError, lambda: load_model(str(path), arch="cifar_resnet18"))
    assert "shape" in msg and "conv1.weight: checkpoint 16x3x3x3 vs model 64x3x3x3" in msg
    msg = _one_line_error(UnknownArchitectureError,
                          lambda: load_model(str(path), arch="cifar_resnet21"))
    assert "did you mean" in msg


def test_pretrained_with_file(tmp_path: Path, r20_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "r20.pth"
    torch.save(r20_state, path)
    _one_line_error(LoadError, lambda: load_model(str(path), pretrained=True))


# --- CLI -------------------------------------------------------------------

def test_cli_inspect_missing_file(tmp_path: Path) -> None:
    from irconvert.cli import app

    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope.pth")])
    assert result.exit_code == 1
    out = result.output.strip()
    assert out.startswith("error:") and "Traceback" not in out
    assert len(out.splitlines()) == 1 and "no such file" in out


@pytest.mark.data
def test_cli_inspect_shared_resnet20(resnet20_weights: Path) -> None:
    from irconvert.cli import app

    result = CliRunner().invoke(app, ["inspect", str(resnet20_weights), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["arch"] == "cifar_resnet20"
    assert report["binarized_layers"] == 18


def test_loaded_model_is_usable(r20_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(r20_state, path)
    model = load_model(str(path)).model
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_pretrained_unreachable_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    # huggingface_hub alone retries for ~50 s; the DNS probe makes it immediate.
    import time

    from huggingface_hub import constants

    monkeypatch.setattr("irconvert.models.offline.host_resolves", lambda *a, **k: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    start = time.perf_counter()
    msg = _one_line_error(LoadError, lambda: load_model("timm:resnet10t", pretrained=True))
    assert "offline" in msg and time.perf_counter() - start < 20
    assert constants.HF_HUB_OFFLINE is False  # restored after the call
