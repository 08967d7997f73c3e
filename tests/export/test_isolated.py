"""Engine crashes are caught in a child process and named."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from irconvert.export import isolated
from irconvert.export.isolated import crash_reason, run_once_isolated


def test_crash_reason_names_the_signal() -> None:
    assert crash_reason(-int(signal.SIGSEGV)) == "SIGSEGV (signal 11)"
    assert crash_reason(-int(signal.SIGABRT)) == "SIGABRT (signal 6)"
    assert crash_reason(0) is None and crash_reason(1) is None


def test_a_child_killed_by_a_signal_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    # stand-in for an engine bug: the child segfaults inside native code
    monkeypatch.setattr(isolated, "_CHILD", "import ctypes; ctypes.string_at(0)")
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) == "SIGSEGV (signal 11)"


def test_a_child_that_runs_is_not_a_crash(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(isolated, "_CHILD", "import sys; sys.exit(0)")
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) is None
    monkeypatch.setattr(isolated, "_CHILD", "raise ValueError('an ordinary error')")
    assert run_once_isolated(tmp_path / "model.xml", (3, 8, 8)) is None
