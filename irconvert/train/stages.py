"""Stages, the EDE schedule and calibration: what a run binarizes and when.

A recipe is one stage or several (``stages:``); each sets what is binarized,
its optimizer and schedule, its distillation and possibly its own EDE
schedule. Entering a stage re-estimates BatchNorm (after setting activation
thresholds from data, once); the EDE ``t``/``k`` follow one schedule over all
the stages that binarize something unless a stage has its own.

Mixed into :class:`~irconvert.train.trainer.Trainer`; what it shares with the
other parts is declared in :class:`~irconvert.train.run_parts.RunParts`.
"""

from __future__ import annotations

from typing import Any

import torch

from irconvert.functional import ede_schedule
from irconvert.nn import set_binarization, set_ede
from irconvert.train.optim import build_optimizer, lr_factor_fn
from irconvert.train.precision import autocast
from irconvert.train.run_parts import RunParts

__all__ = ["Stages"]


class Stages(RunParts):
    """The stage, EDE and calibration methods of the trainer (see the module docstring)."""

    def stage_of(self, epoch: int) -> int:
        """The index of the stage that epoch ``epoch`` belongs to."""
        return max(i for i, start in enumerate(self.stage_starts) if start <= min(
            epoch, self.epochs - 1))

    def _stage_steps(self, i: int) -> int:
        if len(self.stages) == 1:
            return self.total_steps
        return self.stages[i].epochs * self.steps_per_epoch

    def _enter_stage(self, i: int, *, fresh: bool, transition: bool) -> None:
        """Make stage ``i`` current: what is binarized, the loss, a new optimizer.

        ``fresh``: the stage starts now (its optimizer starts from scratch);
        otherwise the caller loads the saved optimizer state next.
        ``transition``: re-estimate BatchNorm (and set thresholds first).
        """
        stage = self.stages[i]
        self.stage_index = i
        mode = stage.binarize
        set_binarization(self.model, weights=mode in ("both", "weights"),
                         activations=mode in ("both", "activations"))
        if fresh and transition and len(self.stages) > 1:
            name = stage.name or f"stage {i + 1}"
            self.progress.log(f"stage {i + 1}/{len(self.stages)} '{name}': binarize {mode}, "
                              f"{stage.epochs} epochs")
        if transition:
            self._calibrate()
        old = getattr(self.distill, "features", None) if self.distill is not None else None
        if old is not None:
            old.remove()
        self.distill = None
        if self.teacher is not None and stage.distill is not None:
            from irconvert.train.distill import DistillationLoss, FeatureMatcher

            d = stage.distill
            features = None
            if d.features > 0:
                features = FeatureMatcher(self.model, self.teacher, self.report.blocks,
                                          d.features)
            self.distill = DistillationLoss(self.teacher, alpha=d.alpha,
                                            temperature=d.temperature, kind=d.kind,
                                            teacher_fn=self.teacher_fn, features=features)
        assert stage.optimizer is not None and stage.schedule is not None
        self.optimizer = build_optimizer(self.model, stage.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor_fn(stage.schedule, stage.optimizer.lr,
                                         self._stage_steps(i), self.steps_per_epoch))

    def _ede_progress(self) -> tuple[float, float, Any]:
        """(position, length, EDE config) of the current EDE schedule.

        One schedule runs over all the stages that binarize something (in
        steps or epochs, as ``ede.per`` says), unless the stage has its own.
        """
        stage = self.stages[self.stage_index]
        per_step = (stage.ede or self.recipe.ede).per == "step"
        unit = 1 if per_step else self.steps_per_epoch
        pos = (self.global_step if per_step else self.epoch * self.steps_per_epoch)
        if stage.ede is not None:
            start = self.stage_starts[self.stage_index] * self.steps_per_epoch
            return (pos - start) / unit, self._stage_steps(self.stage_index) / unit, stage.ede
        if len(self.stages) == 1:
            length = self.total_steps if per_step else self.epochs * self.steps_per_epoch
            return pos / unit, length / unit, self.recipe.ede
        done, length = 0, 0
        for j, st in enumerate(self.stages):
            if st.binarize == "none" or st.ede is not None:
                continue
            steps = self._stage_steps(j)
            start = self.stage_starts[j] * self.steps_per_epoch
            if j < self.stage_index:
                done += steps
            elif j == self.stage_index:
                done += pos - start
            length += steps
        return done / unit, max(length, 1) / unit, self.recipe.ede

    def _update_ede(self) -> tuple[float, float]:
        pos, length, ede = self._ede_progress()
        t, k = ede_schedule(pos, length, ede.t_min, ede.t_max)
        set_ede(self.model, t, k)
        return t, k

    def _calibrate(self) -> None:
        """Data-initialise activation thresholds (once), then re-estimate BatchNorm.

        Both run on the training split's first batches of epoch 0 (the same
        ones whenever they run, so a resumed run repeats them exactly).
        """
        steps = self.recipe.bn_recalibration
        from irconvert.nn.thresholds import init_act_thresholds
        from irconvert.train.bn import recalibrate_bn

        acts_on = any(getattr(m, "acts_on", False) and getattr(m, "binary_act", False)
                      for m in self.model.modules())
        if acts_on and not self._thresholds_set:
            self._set_epoch(0, 0)
            with autocast(self.device, self.use_amp):
                n = init_act_thresholds(self.model, self.train_loader, max(steps, 10),
                                        self.device)
            self._thresholds_set = True
            if n:
                self._sync_buffers_and_params()
                self.progress.log(f"activation thresholds set from data in {n} layers "
                                  "(balanced bits per channel)")
        if steps <= 0:
            return
        self._set_epoch(0, 0)
        with autocast(self.device, self.use_amp):
            used = recalibrate_bn(self.model, self.train_loader, steps, self.device)
        self._sync_buffers()
        if used:
            self.progress.log(f"BatchNorm statistics re-estimated on {used} training batches")

    def _sync_buffers(self) -> None:
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each
        # forward; do the same after the last one so every rank ends identical.
        if self.env.distributed:
            import torch.distributed as dist

            for buf in self.model.buffers():
                dist.broadcast(buf, 0)
            if self.ema is not None:  # its statistics averaged each rank's own
                for buf in self.ema.module.buffers():
                    dist.broadcast(buf, 0)

    def _sync_buffers_and_params(self) -> None:
        if self.env.distributed:
            import torch.distributed as dist

            for p in self.model.parameters():
                dist.broadcast(p.data, 0)
