"""plan_route: which of its jobs ``binarize`` does, and which options do not fit it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from irconvert.errors import LoadError
from irconvert.train.route import RouteError, plan_route


def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "run.yaml"):
        (run / name).write_text("{}\n")
    torch.save({"x": 1}, run / "last.pt")
    return run


def route(model: str | Path = "resnet18", **kw: object) -> str:
    options = {"data": None, "epochs": None, "out": None, "resume": False, "force": False,
               "dry_run": False, **kw}
    return plan_route(model, **options).kind  # type: ignore[arg-type]


def test_the_four_jobs(tmp_path: Path) -> None:
    assert route() == "post-training"  # no --data: convert only
    assert route(data="digits", epochs=0) == "post-training"
    assert route(data="digits", out=tmp_path / "r") == "fine-tune"
    assert route(run_dir(tmp_path), resume=True) == "continue"


@pytest.mark.parametrize(("options", "option", "words"), [
    ({"data": "digits"}, "--out", "required under torchrun"),
    ({"data": "digits", "out": "r", "force": True}, "--force", "never replaced"),
])
def test_options_that_do_not_fit_name_the_option(options: dict, option: str, words: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # only there is --out needed for a fine-tune
    with pytest.raises(RouteError) as err:
        route(**options)
    assert err.value.option == option and words in str(err.value)


def test_a_single_process_fine_tune_needs_no_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert route(data="digits") == "fine-tune"  # the CLI picks runs/NAME-1w1a/


def test_an_existing_file_as_out_is_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("x")
    with pytest.raises(RouteError, match="is a file") as err:
        route(data="digits", out=taken)
    assert err.value.option == "--out"


def test_a_dry_run_needs_no_run_directory() -> None:
    assert route(data="digits", dry_run=True) == "fine-tune"


def test_a_run_directory_needs_resume_and_no_epochs_0(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    with pytest.raises(RouteError, match="add --resume") as err:
        route(run)
    assert err.value.option == "MODEL"
    with pytest.raises(RouteError, match="cannot continue a run") as err:
        route(run, resume=True, epochs=0)
    assert err.value.option == "--epochs"


def test_what_is_resumed_is_checked_before_the_other_options(tmp_path: Path) -> None:
    # --out missing would also be an error; the missing run is the one that matters
    with pytest.raises(LoadError, match="no such run directory"):
        route(tmp_path / "nothing", resume=True)
    with pytest.raises(LoadError, match=r"last\.pt"):
        route("resnet18", data="digits", out=tmp_path, resume=True)
