"""Keeping a run to its time budget: the trainer's side of :mod:`irconvert.train.budget`.

:mod:`irconvert.train.budget` holds the arithmetic (how many epochs fit);
this mixin gathers the timings it needs and applies its decisions to the run:
the probe before the first step (undone afterwards), the check after every
epoch, and the re-planned schedules.

Mixed into :class:`~irconvert.train.trainer.Trainer`; what it shares with the
other parts is declared in :class:`~irconvert.train.run_parts.RunParts`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from irconvert.train import budget as fitting
from irconvert.train.distributed import all_reduce_sum
from irconvert.train.optim import lr_factor_fn
from irconvert.train.precision import autocast
from irconvert.train.rng import get_rng_state, set_rng_state
from irconvert.train.run_parts import RunParts

__all__ = ["BudgetKeeping"]


class BudgetKeeping(RunParts):
    """The time-budget methods of the trainer (see the module docstring)."""

    def elapsed_s(self) -> float:
        """Wall time of the run so far, earlier processes of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self.clock0

    def _fit_budget(self) -> None:
        """Before the first step: time a few steps and evaluation batches, then
        keep the epochs that fit ``budget_minutes``.

        The probe's steps are undone (weights, BatchNorm statistics, random
        state; the optimizer and schedule start afresh), so the run is the
        one ``--epochs N`` would give; only its compilation is kept.
        """
        assert self.recipe.budget_minutes is not None
        weights = copy.deepcopy(self.model.state_dict())
        rng, scaler = get_rng_state(), copy.deepcopy(self.scaler.state_dict())
        self._update_ede()
        self._set_epoch(0, 0)
        self.forward_model.train()
        loop_s, step_s = fitting.timed_batches(self.train_loader, fitting.PROBE_STEPS,
                                       lambda x, y: self._step(x, y))
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(weights)
        self.scaler.load_state_dict(scaler)
        set_rng_state(rng)
        eval_s = self._eval_seconds()
        set_rng_state(rng)
        fit = fitting.fit_epochs(budget_s=self.recipe.budget_minutes * 60.0,
                         elapsed_s=self.elapsed_s(), done=0, ceiling=self.epochs,
                         epoch_s=fitting.epoch_seconds(loop_s, step_s, self.steps_per_epoch),
                         eval_s=eval_s, eval_every=self.recipe.eval_every,
                         minimum=len(self.stages))
        epochs = fit.epochs
        if self.env.distributed:  # rank 0's clock decides for all
            epochs = int(all_reduce_sum([float(epochs if self.env.is_main else 0)],
                                        self.device, self.env)[0])
        lengths = [st.epochs for st in self.stages]
        if len(self.stages) > 1:
            lengths = fitting.scale_stages(lengths, epochs, done=0)
        self._apply_budget({"epochs": epochs, "ceiling": self.epochs, "stages": lengths,
                            "epoch_s": fit.epoch_s, "eval_s": fit.eval_s, "changes": []})
        self.progress.log(dataclasses.replace(fit, epochs=epochs).describe(
            self.recipe.budget_minutes))

    def _keep_to_budget(self) -> None:
        """After an epoch: fit the run to ``budget_minutes`` again, from the
        epochs so far (a shared host's speed drifts, and the probe is short).

        In the first fifth of the run a one-stage run is fitted both ways,
        while the schedules have barely moved; later it is only shortened,
        and only when it would end past the budget.
        """
        decision, minutes = self.budget_decision, self.recipe.budget_minutes
        if decision is None or minutes is None or not self._epoch_secs:
            return
        steps = sum(n for _, n in self._epoch_secs)
        epoch_s = sum(t for t, _ in self._epoch_secs) / max(steps, 1) * self.steps_per_epoch
        eval_s = (sum(self._eval_secs) / len(self._eval_secs) if self._eval_secs
                  else float(decision["eval_s"]))
        every = self.recipe.eval_every
        done = self.epoch + 1
        # this epoch's own evaluation is still to come
        elapsed = self.elapsed_s() + (eval_s if done % every == 0 else 0.0)
        early = len(self.stages) == 1 and done <= max(1, round(0.2 * self.epochs))
        if not early and fitting.projected_seconds(
                elapsed_s=elapsed, done=done, epochs=self.epochs, epoch_s=epoch_s, eval_s=eval_s,
                eval_every=every) <= minutes * 60.0:
            return
        fit = fitting.fit_epochs(budget_s=minutes * 60.0, elapsed_s=elapsed, done=done,
                         ceiling=int(decision["ceiling"]) if early else self.epochs,
                         epoch_s=epoch_s, eval_s=eval_s, eval_every=every,
                         minimum=len(self.stages))
        epochs = fit.epochs
        if self.env.distributed:  # rank 0's clock decides for all
            epochs = int(all_reduce_sum([float(epochs if self.env.is_main else 0)],
                                        self.device, self.env)[0])
        if epochs == self.epochs:
            return
        lengths = [st.epochs for st in self.stages]
        if len(self.stages) > 1:
            lengths = fitting.scale_stages(lengths, epochs, done=done)
        old = self.epochs
        changes = [*decision["changes"], {"after_epoch": done, "epochs": epochs}]
        self._apply_budget({**decision, "epochs": epochs, "stages": lengths,
                            "changes": changes}, mid_run=True)
        how = "lengthened" if epochs > old else "shortened"
        self.progress.log(f"time budget {minutes:g} min: epochs take {epoch_s:.0f} s here, not "
                          f"the {float(decision['epoch_s']):.0f} s timed at the start; "
                          f"{old} -> {epochs} epochs, the schedules {how} from epoch "
                          f"{done + 1}")

    def _eval_seconds(self) -> float:
        """An evaluation's wall time, from its first batches."""
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.use_amp):
            def forward(inputs: Tensor, targets: Tensor) -> None:
                inputs = inputs.to(self.device, non_blocking=True)
                if self.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                self.model(inputs)

            loop_s, step_s = fitting.timed_batches(self.val_loader,
                                                   fitting.PROBE_EVAL_BATCHES, forward)
        return fitting.epoch_seconds(loop_s, step_s, len(self.val_loader))

    def _apply_budget(self, decided: dict[str, Any], *, mid_run: bool = False) -> None:
        """Make the run ``decided["epochs"]`` long; ``mid_run``: keep the
        optimizer and put the current step on the shortened schedule."""
        self.budget_pending = False
        self.budget_decision = dict(decided)
        self.epochs = int(decided["epochs"])
        self.total_steps = self.epochs * self.steps_per_epoch
        if len(self.stages) > 1:
            self.stages = tuple(dataclasses.replace(st, epochs=int(n))
                                for st, n in zip(self.stages, decided["stages"], strict=True))
            self.stage_starts = [0]
            for st in self.stages[:-1]:
                self.stage_starts.append(self.stage_starts[-1] + st.epochs)
        self.progress.set_total(self.epochs)
        if not mid_run:  # before the first step: a fresh optimizer and schedule
            self._enter_stage(self.stage_of(self.epoch), fresh=True, transition=False)
            return
        stage = self.stages[self.stage_index]
        assert stage.schedule is not None and stage.optimizer is not None
        factor = lr_factor_fn(stage.schedule, stage.optimizer.lr,
                              self._stage_steps(self.stage_index), self.steps_per_epoch)
        groups = self.optimizer.param_groups
        self.scheduler.lr_lambdas = [factor] * len(groups)
        for group, base in zip(groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)
