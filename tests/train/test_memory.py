"""Keeping freed memory in the process: glibc thresholds, and when the trainer sets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from irconvert.train import memory
from irconvert.train.run import fit
from tests.train.test_trainer import make_model, tiny_data, tiny_recipe  # noqa: F401

# Allocate 64 MiB (above glibc's largest dynamic mmap threshold, 32 MiB) and
# free it, over and over like training steps, and count the minor page faults
# of the last allocation: 16,384 pages when the memory went back to the
# kernel. (Retained, glibc's aligned allocations grow the heap for a few
# rounds before they reuse it.)
FAULTS = """
import resource, sys, torch
from irconvert.train.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del x
print(faults)
"""

needs_glibc = pytest.mark.skipif(memory._glibc() is None, reason="needs Linux with glibc malloc")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    return int(out.stdout.split()[-1])


@needs_glibc
def test_retained_memory_is_reused_without_page_faults() -> None:
    assert _faults("default") > 10_000  # glibc's default: the pages come back from the kernel
    assert _faults("retain") < 1_000


def test_retaining_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.retain_freed_memory.__wrapped__() is False
    memory.release_freed_memory()  # nothing to do, no error


@pytest.mark.parametrize(("device_memory", "retained"), [("retain", True), ("release", False)])
def test_the_trainer_retains_memory_on_the_cpu_when_asked(
        tiny_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        device_memory: str, retained: bool) -> None:
    calls: list[str] = []

    def retain() -> bool:
        calls.append("retain")
        return True

    def release() -> Any:
        calls.append("release")

    monkeypatch.setattr("irconvert.train.trainer.retain_freed_memory", retain)
    monkeypatch.setattr("irconvert.train.trainer.release_freed_memory", release)
    fit(make_model(), tiny_data, tiny_recipe(epochs=1, cpu_memory=device_memory),
        tmp_path / "run", quiet=True, evaluate_fp=False)
    # kept for the whole run, handed back once when it ends
    assert calls == (["retain", "release"] if retained else [])
