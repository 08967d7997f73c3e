"""What a user sees of the CLI as a whole: help everywhere, docs in sync, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irconvert.cli import app
from tests.conftest import REPO

COMMANDS = ["inspect", "binarize", "eval", "demo", "export", "bench", "recipes"]
runner = CliRunner()


def test_every_command_is_registered() -> None:
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert sorted(names) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_documented(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert f"## `irconvert {command}`" in (REPO / "docs" / "cli.md").read_text()


def test_cli_reference_is_fresh() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "cli_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "irconvert", "--version"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    assert proc.stdout.startswith("irconvert ")


@pytest.mark.parametrize("args", [
    ["inspect", "no/such/file.pth"],
    ["inspect", "not_an_architecture_name"],
    ["inspect", "cifar_resnet20", "--act-bits", "3"],
    ["export", "no/such/run", "--format", "packed", "--out", "x.irc"],
    ["eval", "no/such/run/best.pt", "--data", "imagefolder:no/such/dir"],
])
def test_user_errors_are_one_line(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["--debug", "inspect", "no/such/file.pth"])
    assert result.exit_code != 0
    assert result.exception is not None


@pytest.mark.parametrize("args", [
    ["binarize", "model.pth", "--data", "digits", "--force"],  # options that do not fit
    ["inspect"],                                     # a required argument missing
    ["inspect", "cifar_resnet20", "--act-bits", "x"],  # a value of the wrong type
    ["no-such-command"],
])
def test_usage_errors_are_one_line_from_the_console_script(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "irconvert", *args],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""


def test_inspect_says_which_layers_get_a_threshold_for_one_signed_inputs() -> None:
    # without block rewriting every binarized conv of a ReLU ResNet reads a ReLU output
    result = runner.invoke(app, ["inspect", "cifar_resnet20", "--block-transform", "off"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    fixed = [line for line in result.output.splitlines() if line.startswith("fixed:")]
    assert len(fixed) == 18 and "activation threshold added" in fixed[0]
    assert "warning:" not in result.output


def test_exit_codes_say_whose_error_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1: what was given; 2: usage (click's); 3: a bug in irconvert
    assert runner.invoke(app, ["inspect", "no/such/file.pth"]).exit_code == 1
    assert runner.invoke(app, ["inspect"]).exit_code == 2

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug [with brackets]")

    monkeypatch.setattr("irconvert.io.load_model", broken)
    result = runner.invoke(app, ["inspect", "cifar_resnet20"])
    assert result.exit_code == 3
    assert "internal error: RuntimeError: a bug [with brackets]" in result.output
