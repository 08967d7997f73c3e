"""--pretrained without internet: one whole line that says to pass a weights file instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from irconvert.errors import LoadError
from irconvert.models.registry import _download_error, build_model


def test_torchvision_offline_fails_before_printing_a_download(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("irconvert.models.offline.host_resolves", lambda *a, **k: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    with pytest.raises(LoadError) as err:
        build_model("resnet18", pretrained=True)
    message = str(err.value)
    assert "download.pytorch.org cannot be reached" in message
    assert "--arch resnet18" in message and "\n" not in message
    assert "Downloading" not in capfd.readouterr().err


def test_a_long_engine_message_is_cut_at_a_sentence() -> None:
    long = ("An error happened while trying to locate the file on the Hub and we cannot find "
            "the requested files in the local cache. Please check your connection and try "
            "again or make sure your Internet connection is on.")
    message = str(_download_error("timm:resnet18", RuntimeError(long)))
    assert "in the local cache; download them where there is internet" in message
    assert "Please check" not in message and "--arch timm:resnet18" in message
