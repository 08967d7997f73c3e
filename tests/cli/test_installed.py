"""The installed package, as a user gets it: a wheel in a fresh venv, run outside the checkout.

A checkout hides what a wheel leaves out (the shipped recipes, package data)
and what only works from the repository's folder. The venv sees the system's
site-packages for the heavy dependencies (torch...), and the wheel is
installed without them, so the test needs no network beyond building.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``irconvert`` script of a fresh venv holding only the built wheel."""
    work = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(work / "dist"), str(REPO)], check=True)
    wheel = next((work / "dist").glob("irconvert-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True)
    return venv / "bin" / "irconvert"


def run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_the_wheel_works_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed, "--version", cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.startswith("irconvert "), where.stderr
    # the package imported is the wheel's, not the checkout's
    probe = subprocess.run([str(installed.parent / "python"), "-c",
                            "import irconvert; print(irconvert.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert str(REPO) not in probe.stdout and "site-packages" in probe.stdout, probe.stdout

    listed = run(installed, "recipes", cwd=tmp_path)
    assert listed.returncode == 0 and "cifar10-resnet20-finetune-1w1a" in listed.stdout

    dry = run(installed, "binarize", "cifar_resnet20", "--recipe",
              "cifar10-resnet20-finetune-1w1a", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "budget_minutes: 145" in dry.stdout

    demo = run(installed, "demo", "--out", str(tmp_path / "demo"), "--epochs", "1",
               "--fp-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet",
               cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    exported = run(installed, "export", str(tmp_path / "demo"), "--format", "onnx",
                   "--out", str(tmp_path / "demo.onnx"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "demo.onnx").stat().st_size > 0
