"""A run's state on disk: ``last.pt``/``best.pt`` and the run files, and ``--resume``.

:meth:`RunState.checkpoint` is everything a run needs to continue exactly
(model, optimizer, scheduler, scaler, random state, position, history, the
time-budget decision); :meth:`RunState.load_state` restores it. The file
layout is :mod:`irconvert.checkpoint`'s.

Mixed into :class:`~irconvert.train.trainer.Trainer`; what it shares with the
other parts is declared in :class:`~irconvert.train.run_parts.RunParts`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from irconvert.checkpoint import atomic_save, new_checkpoint
from irconvert.config.recipe_file import recipe_from_dict, save_recipe
from irconvert.errors import IRConvertError, LoadError
from irconvert.outputs import CONFIG as RUN_CONFIG
from irconvert.train.ema import WeightAverage
from irconvert.train.evaluate import EvalResult
from irconvert.train.outcome import TrainingDiverged
from irconvert.train.rng import get_rng_state, plain_rng_state, set_rng_state
from irconvert.train.run_parts import RunParts

__all__ = ["RunState"]


class RunState(RunParts):
    """The checkpoint methods of the trainer (see the module docstring)."""

    def checkpoint(self) -> dict[str, Any]:
        """The dict saved as ``last.pt``: run checkpoint plus full trainer state."""
        fp = self.fp_result.to_dict() if self.fp_result else None
        # "model" is what best.pt, eval and the exports use: the average when
        # there is one; the weights being trained then travel as train_model
        averaged = ({"train_model": self.model.state_dict(), "ema": self.ema.state_dict()}
                    if self.ema is not None else {})
        return new_checkpoint(
            self.ema.module if self.ema is not None else self.model,
            arch=self.arch, num_classes=self.num_classes,
            config=self.recipe.binarize, source=self.source,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), epoch=self.epoch, step_in_epoch=self.step_in_epoch,
            step=self.global_step, rng=plain_rng_state(get_rng_state()),
            recipe=self.recipe.to_dict(), metrics={"best_top1": self.best_top1, "fp": fp},
            history=self.history, partial=list(self._partial),
            report=self.report.to_dict(), normalization={"mean": list(self.mean),
                                                         "std": list(self.std)},
            classes=list(self.data.classes), stage=self.stage_index,
            thresholds_set=self._thresholds_set, skipped_files=list(self.skipped),
            budget=self.budget_decision, elapsed_s=self.elapsed_s(),
            input_size=self.input_size, teacher=self.teacher_ids, init=self.init_info,
            **averaged,
        )

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restore everything :meth:`checkpoint` saved (for ``--resume``)."""
        saved = ckpt.get("recipe")
        if saved is not None:
            # Fields added since the checkpoint was written (data.bad_files...)
            # read as their defaults: not a change the user made.
            with contextlib.suppress(IRConvertError):
                saved = recipe_from_dict(saved).to_dict()
        if saved is not None and saved != self.recipe.to_dict():
            changed = sorted(k for k, v in self.recipe.to_dict().items() if saved.get(k) != v)
            self.progress.log(f"note: resuming with a changed recipe ({', '.join(changed)})")
        try:
            self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        except RuntimeError as exc:
            # the first line only says "Error(s) in loading state_dict for X:"
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = " ".join(lines[:2])
            detail = detail if len(detail) <= 160 else detail[:160] + "..."
            raise LoadError(f"{self.out_dir / 'last.pt'} does not fit the model: {detail}; "
                            "was the run's config.yaml edited?") from None
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        decided = ckpt.get("budget")
        if self.budget_pending:  # decided at the run's start, or never
            self.budget_pending = False
            if decided and int(decided["ceiling"]) == self.epochs:
                self._apply_budget(decided)  # the decision stands: the resume is exact
            elif decided:
                self.progress.log(f"note: epochs changed from {decided['ceiling']} to "
                                  f"{self.epochs}; the time budget's {decided['epochs']} "
                                  "epochs no longer apply")
            else:
                self.progress.log("note: budget_minutes applies from a run's start; this "
                                  f"resumed run keeps its {self.epochs} epochs")
        self._check_teacher(ckpt.get("teacher") or [])
        self.init_info = ckpt.get("init")
        self._thresholds_set = bool(ckpt.get("thresholds_set", True))
        saved_stage = int(ckpt.get("stage", 0))
        current = self.stage_of(self.epoch)
        if current == saved_stage or self.epoch >= self.epochs:
            self._enter_stage(saved_stage, fresh=False, transition=False)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        else:  # saved at the end of a stage: the next one starts now, as it would have
            self._enter_stage(current, fresh=True, transition=True)
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.global_step = int(ckpt["step"])
        self.best_top1 = float(ckpt["metrics"]["best_top1"])
        fp = ckpt["metrics"].get("fp")
        self.fp_result = EvalResult(**fp) if fp else None
        self.history = list(ckpt.get("history", []))
        self._partial = [float(v) for v in ckpt.get("partial", [0, 0, 0, 0, 0])]
        self.skipped = list(dict.fromkeys([*ckpt.get("skipped_files", []), *self.skipped]))
        if self.recipe.ema is not None:  # the average goes on where it was
            self.ema = WeightAverage(self.model, self.recipe.ema)
            if "ema" in ckpt and "train_model" in ckpt:
                self.ema.load_state_dict(ckpt["ema"], ckpt["model"])
            else:
                self.progress.log("note: ema starts now: the run was saved without one")
        set_rng_state(ckpt["rng"])

    def _check_teacher(self, saved: list[dict[str, Any]]) -> None:
        """Say so when the teacher's files changed since the run started."""
        before = {t["source"]: t.get("sha256") for t in saved}
        for t in self.teacher_ids:
            if t["source"] in before and before[t["source"]] != t.get("sha256"):
                self.progress.log(f"note: teacher {t['source']} changed since the run "
                                  "started; the resumed run is not the one it would have been")

    def _save(self, name: str, ckpt: dict[str, Any] | None = None) -> None:
        if self.env.is_main:
            atomic_save(ckpt if ckpt is not None else self.checkpoint(), self.out_dir / name)

    def _write_run_files(self) -> None:
        if not self.env.is_main:
            return
        import yaml

        from irconvert.atomic import write_text

        save_recipe(self.recipe, self.out_dir / "config.yaml")
        write_text(self.out_dir / "run.yaml", yaml.safe_dump(self.run_info, sort_keys=False))

    def _after_failure(self, exc: BaseException, *, created: bool, resumed: bool) -> None:
        out, last = self.out_dir, self.out_dir / "last.pt"
        if not last.exists() and not resumed:
            for name in (RUN_CONFIG, "run.yaml"):
                (out / name).unlink(missing_ok=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        elif last.exists() and isinstance(exc, IRConvertError) and not isinstance(
                exc, TrainingDiverged):
            exc.args = (f"{exc}; {last} is kept: once that is fixed, continue with: "
                        f"irconvert binarize {out} --resume",)
