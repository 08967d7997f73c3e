"""Engine crashes are caught in a child process and named."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import irconvert
from irconvert.errors import ExportError, LoadError
from irconvert.export import isolated
from irconvert.export.isolated import crash_reason, predict_isolated, run_once_isolated
from irconvert.export.openvino_export import export_openvino
from irconvert.export.runtime import load_predictor
from tests.conftest import TinyNet

SEGFAULT = "import ctypes; ctypes.string_at(0)"  # stand-in for an engine bug


def test_crash_reason_names_the_signal() -> None:
    assert crash_reason(-int(signal.SIGSEGV)) == "SIGSEGV (signal 11)"
    assert crash_reason(-int(signal.SIGABRT)) == "SIGABRT (signal 6)"
    assert crash_reason(0) is None and crash_reason(1) is None


def test_a_child_killed_by_a_signal_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    # stand-in for an engine bug: the child segfaults inside native code
    monkeypatch.setattr(isolated, "_CHILD", SEGFAULT)
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) == "SIGSEGV (signal 11)"


def test_a_child_that_runs_is_not_a_crash(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(isolated, "_CHILD", "import sys; sys.exit(0)")
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) is None
    monkeypatch.setattr(isolated, "_CHILD", "raise ValueError('an ordinary error')")
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) is None


def test_predict_isolated_returns_the_outputs_or_why_not(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    # a stand-in engine that doubles its input: the outputs travel back exactly
    monkeypatch.setattr(isolated, "_CHILD",
                        "import sys, numpy as np; np.save(sys.argv[3], 2 * np.load(sys.argv[2]))")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    run = predict_isolated(tmp_path / "model.xml", x)
    assert run.outputs is not None and np.array_equal(run.outputs, 2 * x) and run.why == ""
    monkeypatch.setattr(isolated, "_CHILD", "raise ValueError('bad graph')")
    run = predict_isolated(tmp_path / "model.xml", x)
    assert run.outputs is None and run.why == "exit 1: ValueError: bad graph"
    monkeypatch.setattr(isolated, "_CHILD", SEGFAULT)
    assert predict_isolated(tmp_path / "model.xml", x).why.startswith("SIGSEGV (signal 11)")


@pytest.fixture
def tiny_binary() -> torch.nn.Module:
    """A binarized TinyNet in eval mode (skips without OpenVINO)."""
    pytest.importorskip("openvino", reason="openvino is not installed "
                        "(pip install 'irconvert[openvino]')")
    model = TinyNet()
    irconvert.binarize_(model, irconvert.BinarizeConfig(), warn=False)
    return model.eval()


@pytest.mark.openvino
def test_openvino_crash_is_a_one_line_load_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path,
                                                 tiny_binary: torch.nn.Module) -> None:
    export_openvino(tiny_binary, tmp_path / "ov")
    x = np.zeros((2, 3, 8, 8), np.float32)
    assert load_predictor(tmp_path / "ov", isolate=True)(x).shape[0] == 2  # runs: no crash
    monkeypatch.setattr(isolated, "_CHILD", SEGFAULT)
    predict = load_predictor(tmp_path / "ov", isolate=True)
    with pytest.raises(LoadError, match=r"model.xml: OpenVINO crashed \(SIGSEGV \(signal 11\)\)"
                       r" running it in a test process, at batch 3") as info:
        predict(np.zeros((3, 3, 8, 8), np.float32))
    assert "\n" not in str(info.value)


@pytest.mark.openvino
def test_export_that_crashes_openvino_writes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path,
                                                      tiny_binary: torch.nn.Module) -> None:
    monkeypatch.setattr(isolated, "_CHILD", SEGFAULT)
    for target in (tmp_path / "ov", tmp_path / "m.xml"):
        with pytest.raises(ExportError, match=r"OpenVINO crashed \(SIGSEGV \(signal 11\)\) "
                           r"running the exported model once in a test process, so nothing "
                           r"was written"):
            export_openvino(tiny_binary, target)
    assert list(tmp_path.iterdir()) == []
