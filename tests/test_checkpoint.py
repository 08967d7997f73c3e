"""Run directories and run checkpoints: what --resume accepts, one line for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from irconvert.checkpoint import check_resumable, load_run_checkpoint, read_run_dir
from irconvert.errors import LoadError


def _run_dir(path: Path, *, last: bool = True) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text("epochs: 1\n")
    (path / "run.yaml").write_text("model: cifar_resnet20\ndata: digits\n")
    if last:
        torch.save({"format": "irconvert-checkpoint", "version": 1}, path / "last.pt")
    return path


def test_a_run_directory_is_resumable(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    assert check_resumable(run) == run
    assert read_run_dir(run)["model"] == "cifar_resnet20"


@pytest.mark.parametrize(("make", "message"), [
    (lambda t: t / "nosuch", "nosuch: no such run directory"),
    (lambda t: (t / "empty").mkdir() or t / "empty",
     "empty: not a run directory (no last.pt, config.yaml, run.yaml)"),
    (lambda t: _run_dir(t / "half", last=False),
     "half: the run there never finished an epoch (no last.pt)"),
    (lambda t: _run_dir(t / "run") / "last.pt",
     "last.pt: --resume takes a run directory (the --out of 'irconvert binarize'), not a "
     "file; pass its folder"),
])
def test_what_resume_refuses_is_one_line(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(LoadError) as err:
        check_resumable(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_empty_run_file_is_named(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    (run / "config.yaml").write_text("")  # it read as all defaults: a different model
    with pytest.raises(LoadError, match=r"config\.yaml: empty \(a truncated copy\?\)"):
        read_run_dir(run)


def test_a_truncated_last_pt_is_named_before_anything_loads(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match=r"last\.pt: truncated or damaged, so the run cannot be "
                                        r"resumed"):
        read_run_dir(run)


@pytest.mark.parametrize(("content", "message"), [
    (b"", r"is empty \(0 bytes\)"),
    (None, "is truncated or corrupt"),
])
def test_damaged_run_checkpoints_are_one_line(tmp_path: Path, content: bytes | None,
                                              message: str) -> None:
    path = tmp_path / "best.pt"
    torch.save({"format": "irconvert-checkpoint", "model": torch.zeros(1000)}, path)
    path.write_bytes(content if content is not None else path.read_bytes()[:500])
    with pytest.raises(LoadError, match=message) as err:
        load_run_checkpoint(path)
    assert str(err.value).startswith(str(path))
