"""Which of its four jobs ``irconvert binarize`` does, decided from what it was given.

``binarize`` converts only (no ``--data``), converts and re-estimates
BatchNorm (``--epochs 0``: post-training), fine-tunes, or continues a run
(``--resume``). :func:`plan_route` makes that choice and checks that the
options fit it, before anything is loaded; the command line only parses,
calls and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from irconvert.checkpoint import check_resumable, is_run_dir
from irconvert.errors import ConfigError
from irconvert.outputs import LAST
from irconvert.train.distributed import world_size

__all__ = ["Route", "RouteError", "plan_route"]


class RouteError(ConfigError):
    """Options that do not fit the chosen route; ``option`` names the one to change."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Route:
    """What ``binarize`` will do.

    ``kind``: ``continue`` (MODEL is a run directory, ``--resume``),
    ``post-training`` (no ``--data``, or ``--epochs 0``) or ``fine-tune``
    (which ``--resume`` with ``--out`` continues); ``dry_run``: print the plan
    and the recipe instead.
    """

    kind: Literal["continue", "post-training", "fine-tune"]
    dry_run: bool = False

    @property
    def post_training(self) -> bool:
        return self.kind == "post-training"


def plan_route(model: str | os.PathLike[str], *, data: str | None, epochs: int | None,
               out: str | os.PathLike[str] | None, resume: bool, force: bool,
               dry_run: bool) -> Route:
    """The route for these options, or RouteError (or LoadError for a run to resume).

    The run to continue is checked first, before ``--data`` and ``--out``:
    a missing ``last.pt`` is the error that matters then.
    """
    run_dir = is_run_dir(model)
    if run_dir and not resume:
        raise RouteError("MODEL", f"{model} is a run directory; add --resume to continue it")
    post_training = not run_dir and (data is None or epochs == 0)
    if resume:
        if out is None or run_dir:
            check_resumable(model)
        else:
            check_resumable(out, needs=(LAST,))
    if resume and epochs == 0:
        raise RouteError("--epochs", "0 (post-training) cannot continue a run; drop --resume")
    # Without --out a fine-tune picks a new folder under runs/ (the CLI's
    # default_run_dir); every torchrun process would pick its own, so there
    # the folder must be named.
    if (not post_training and not run_dir and out is None and not dry_run
            and world_size() > 1):
        raise RouteError("--out", "is required under torchrun (every process must write "
                         "the same run directory)")
    if (not post_training and not run_dir and out is not None and not resume
            and os.path.isfile(out)):
        raise RouteError("--out", f"{out} is a file; the run directory to write must be a "
                         "new folder (or an empty one)")
    if force and not post_training:
        raise RouteError("--force", "applies without --data or with --epochs 0 (it replaces "
                         "model.pt); a run directory is never replaced")
    kind: Literal["continue", "post-training", "fine-tune"] = (
        "continue" if run_dir else "post-training" if post_training else "fine-tune")
    return Route(kind, dry_run=dry_run)
