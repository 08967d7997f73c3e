"""The fine-tuning loop: one run of a binarized model under the EDE schedule.

:class:`Trainer` sets a run up and is the loop (epochs, steps, evaluation,
saving). What the loop relies on lives in its own modules, mixed into the
class: stages, EDE and calibration (:mod:`irconvert.train.stages`), the time
budget (:mod:`irconvert.train.budget_keeping`) and the run's state on disk
and ``--resume`` (:mod:`irconvert.train.run_state`). :func:`irconvert.train.run.fit`
is the entry point most callers want. The run directory's layout is
described in :mod:`irconvert.checkpoint`.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.config import StageConfig, TrainConfig
from irconvert.convert import ConversionReport, binarize_
from irconvert.data.datasets import DataBundle
from irconvert.data.loaders import (
    resolve_normalization,
)
from irconvert.errors import DataError
from irconvert.models.heads import model_channels, model_outputs, replace_classifier_
from irconvert.train.budget_keeping import BudgetKeeping
from irconvert.train.distributed import all_reduce_sum, init_distributed
from irconvert.train.ema import WeightAverage
from irconvert.train.evaluate import EvalResult, evaluate
from irconvert.train.init_weights import init_from_run
from irconvert.train.latent import constrain_latent_
from irconvert.train.memory import release_freed_memory, retain_freed_memory
from irconvert.train.metrics import correct_topk, plot_curves, write_jsonl
from irconvert.train.outcome import FitResult, TrainingDiverged, TrainingInterrupted
from irconvert.train.phases import phase
from irconvert.train.precision import autocast, resolve_amp, resolve_device
from irconvert.train.progress import Progress, make_progress
from irconvert.train.rng import seed_everything
from irconvert.train.run_data import RunData
from irconvert.train.run_state import RunState
from irconvert.train.signals import stop_signals
from irconvert.train.stages import Stages
from irconvert.train.teachers import load_teacher

__all__ = ["Trainer"]


class Trainer(RunData, BudgetKeeping, Stages, RunState):
    """One fine-tuning run. Most callers want :func:`fit`.

    Args:
        model: the full-precision model (binarized in place here, unless it
            already holds IR-Net layers).
        data: the data set.
        recipe: the training recipe.
        out_dir: the run directory.
        arch, source, num_classes: recorded in checkpoints so the model can
            be rebuilt (``arch``) and traced back to its file (``source``).
        run_info: written to ``run.yaml`` (how to reload model and data).
        replace_classifier: replace a classifier whose size does not match
            the data instead of failing.
        progress: where progress goes (rich bars by default).
        on_step: called after every optimizer step (tests use it to stop).
        evaluate_fp: measure the original model's accuracy first.

    A resumed run ends with the same weights, bit for bit, as an uninterrupted
    one on the same hardware and thread count (float sums depend on both).
    """

    def __init__(self, model: nn.Module, data: DataBundle, recipe: TrainConfig,
                 out_dir: str | os.PathLike[str], *, arch: str | None = None,
                 source: dict[str, Any] | None = None, run_info: dict[str, Any] | None = None,
                 replace_classifier: bool = False, progress: Progress | None = None,
                 quiet: bool = False, on_step: Callable[[Trainer], None] | None = None,
                 evaluate_fp: bool = True, evaluate_start: bool = False) -> None:
        self.clock0 = time.perf_counter()  # a time budget counts from here
        self.recipe, self.data, self.out_dir = recipe, data, Path(out_dir)
        self.arch, self.source, self.run_info = arch, source or {}, run_info or {}
        self.on_step = on_step
        self.evaluate_start = evaluate_start
        self.start_top1: dict[str, float] = {}
        self.device = resolve_device(recipe.device)
        self.env = init_distributed(self.device)
        if self.device.type == "cuda" and self.env.distributed and recipe.device == "auto":
            self.device = torch.device("cuda", self.env.local_rank)
        self.progress = progress or make_progress(quiet=quiet, is_main=self.env.is_main)
        self.stop_requested = False
        # torch.compile traces the model during a process's first step, which
        # takes up to a minute: a stop request then waits for it (and says so)
        self.compiling = recipe.compile
        self.stop_signal = int(signal.SIGINT)  # which signal asked (for the exit code)
        self.use_amp = resolve_amp(self.device, recipe.amp)
        if self.use_amp != recipe.amp:
            self.progress.log(f"note: amp {recipe.amp} is not available on this "
                              f"{self.device.type}; training in fp32")
        self.channels_last = recipe.channels_last
        # Before the first large allocation: a binary model's step otherwise
        # page-faults tens of MB back in every step (see train/memory.py).
        self.retains_memory = (self.device.type == "cpu" and recipe.cpu_memory == "retain"
                               and retain_freed_memory())
        self.stages: tuple[StageConfig, ...] = recipe.stage_list()
        if data.train is None:
            raise DataError(f"{data.name}: no train/ split to fine-tune on")
        data.set_bad_files(recipe.data.bad_files)
        self.skipped: list[str] = []
        self.init_info: dict[str, Any] | None = None  # what ``init`` copied, at a new start
        # before the data is read: a teacher that does not load fails at once
        teacher, self.teacher_ids = self._load_teacher()
        self._setup_data(model, replace_classifier)
        self._setup_model(model, teacher, evaluate_fp)
        self._setup_length()

    def _setup_data(self, model: nn.Module, replace_classifier: bool) -> None:
        """Classes, normalisation, loaders and the evaluation input size."""
        recipe, data = self.recipe, self.data
        self.num_classes = data.num_classes
        outputs = model_outputs(model)
        if outputs is not None and outputs != data.num_classes:
            if not replace_classifier:
                raise DataError(f"the model has {outputs} outputs but {data.name} has "
                                f"{data.num_classes} classes; pass --replace-classifier to "
                                "train a new classifier")
            replace_classifier_(model, data.num_classes)
        self.channels = model_channels(model)
        self.mean, self.std = resolve_normalization(recipe.data, model, self.channels)
        seed_everything(recipe.seed)
        self._build_loaders()
        self._note_skipped()  # the in-memory path has read every file already
        self.input_size = self._eval_input_size()

    def _setup_model(self, model: nn.Module, teacher: nn.Module | None,
                     evaluate_fp: bool) -> None:
        """Measure the float model, binarize it, keep a teacher, wrap for DDP and compile.

        ``teacher``: ``distill.teacher``'s; None distills from a copy of ``model``.
        """
        recipe = self.recipe
        self.fp_result: EvalResult | None = None
        model = model.to(self.device)
        if evaluate_fp:  # every rank takes part (the sums are all-reduced)
            self.fp_result = evaluate(model, self.val_loader, self.device, env=self.env)
        if teacher is None and any(st.distill is not None for st in self.stages):
            teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.report: ConversionReport = binarize_(model, recipe.binarize, warn=False)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
            if teacher is not None:
                teacher = teacher.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        self.model = model
        self.teacher = teacher
        self.teacher_fn: Any = teacher
        # Block-output matching reads forward hooks, which compiled graphs skip.
        self.compile = recipe.compile and not any(
            st.distill is not None and st.distill.features > 0 for st in self.stages)
        if recipe.compile and not self.compile:
            self.progress.log("note: distill.features needs the eager model; not compiling")
        if teacher is not None and self.compile:
            self.teacher_fn = torch.compile(teacher)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.distill: nn.Module | None = None
        self.forward_model: nn.Module = model
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DDP(model, device_ids=ids)
        if self.compile:
            self.forward_model = torch.compile(self.forward_model)  # type: ignore[assignment]

    def _load_teacher(self) -> tuple[nn.Module | None, list[dict[str, Any]]]:
        """``distill.teacher`` on the device; ``(None, [])`` for the original model.

        Every stage distills from the same teacher (the recipe checks it).
        """
        specs = [st.distill.teacher for st in self.stages if st.distill is not None]
        if not specs or not specs[0]:
            return None, []
        loaded = load_teacher(specs[0], self.data.num_classes)
        for source in loaded.sources:
            self.progress.log(f"teacher: {source['source']} ({source['arch']})")
        return loaded.module.to(self.device), loaded.sources

    def _setup_length(self) -> None:
        """The run's length, its stages, the first stage entered, and position 0."""
        recipe = self.recipe
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise DataError(f"{self.data.name}: the training split is empty")
        if recipe.steps is not None:
            self.total_steps = recipe.steps
            self.epochs = math.ceil(recipe.steps / self.steps_per_epoch)
        else:
            self.total_steps = recipe.epochs * self.steps_per_epoch
            self.epochs = recipe.epochs
        # Stage i covers epochs [starts[i], starts[i + 1]).
        self.stage_starts = [0]
        for st in self.stages[:-1]:
            self.stage_starts.append(self.stage_starts[-1] + st.epochs)
        self.stage_index = -1  # no stage entered yet
        self._enter_stage(0, fresh=True, transition=False)
        # budget_minutes: fitted before the first step, checked after every
        # epoch (see train/budget.py)
        self.epochs_ceiling = self.epochs
        # (a run of one epoch per stage has nothing to shorten)
        self.budget_pending = (recipe.budget_minutes is not None and recipe.steps is None
                               and self.epochs > len(self.stages))
        self.budget_decision: dict[str, Any] | None = None
        self.elapsed_before = 0.0  # wall time of earlier processes of a resumed run
        self._epoch_secs: list[tuple[float, int]] = []  # (training loop wall, steps)
        self._eval_secs: list[float] = []
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp == "fp16")
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_top1 = -1.0
        self.history: list[dict[str, Any]] = []
        self._partial: list[float] = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, top1, top5, n, secs
        # Thresholds are set from data once, when activations first binarize;
        # a resumed run has them in its weights already.
        self._thresholds_set = False
        self.ema: WeightAverage | None = None  # recipe ``ema``: started with the first step

    def _loss(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        if self.distill is not None:
            loss: Tensor = self.distill(inputs, logits.float(), targets)
            return loss
        result: Tensor = self.criterion(logits.float(), targets)
        return result

    def _quick_eval(self, model: nn.Module | None = None) -> EvalResult:
        """Evaluate ``model``; by default what is saved (the average when ``ema`` is on)."""
        if model is None:
            model = self.ema.module if self.ema is not None else self.model
        return evaluate(model, self.val_loader, self.device, env=self.env,
                        amp=self.use_amp, channels_last=self.channels_last)

    def _start_average(self) -> None:
        """Begin the weight average (recipe ``ema``) from the weights as they are now."""
        if self.recipe.ema is not None and self.ema is None:
            self.ema = WeightAverage(self.model, self.recipe.ema)

    def _diverged(self, value: float) -> None:
        """Stop with one line; ``last.pt`` (end of the last good epoch) is left as it was."""
        raise TrainingDiverged(
            f"the loss became {value} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; "
            f"{self.out_dir / 'last.pt'} holds the last good epoch. Lower optimizer.lr, "
            "set grad_clip (e.g. 1.0) or amp: none, then start again or resume")

    def _interrupted(self, message: str) -> TrainingInterrupted:
        error = TrainingInterrupted(message)
        error.exit_code = 128 + self.stop_signal
        return error

    def _stop_everywhere(self) -> bool:
        if not self.env.distributed:
            return self.stop_requested
        flag = all_reduce_sum([float(self.stop_requested)], self.device, self.env)[0]
        return flag > 0

    def _step(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One optimizer step; returns the loss, the logits and the targets on the device."""
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.use_amp):
            with phase("forward"):
                logits = self.forward_model(inputs)
            with phase("loss"):
                loss = self._loss(inputs, logits, targets)
        if not torch.isfinite(loss.detach()):
            self._diverged(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        with phase("backward"):
            self.scaler.scale(loss).backward()
        with phase("optimizer"):
            if self.recipe.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            constrain_latent_(self.model, self.recipe.latent)
        return loss, logits, targets

    def _train_epoch(self) -> dict[str, Any]:
        r = self.recipe
        self.forward_model.train()
        done = self.step_in_epoch
        self._set_epoch(self.epoch, done)
        remaining = min(self.steps_per_epoch - done, self.total_steps - self.global_step)
        self.progress.epoch_start(self.epoch, done + remaining, done)
        loss_sum, c1_sum, c5_sum, n_sum, secs = self._partial
        t, k = self._update_ede()
        lr = self.optimizer.param_groups[0]["lr"]
        for i, (inputs, targets) in enumerate(self.train_loader):
            if i >= remaining:
                break
            t0 = time.perf_counter()
            if r.ede.per == "step":
                t, k = self._update_ede()
            lr = self.optimizer.param_groups[0]["lr"]
            first = self.compiling
            loss, logits, targets = self._step(inputs, targets)
            self.compiling = False
            if self.ema is not None:
                self.ema.update(self.model)
            self.global_step += 1
            self.step_in_epoch += 1
            c1, c5 = correct_topk(logits.detach().float(), targets)
            bs = len(targets)
            loss_sum += float(loss.detach()) * bs
            c1_sum, c5_sum, n_sum = c1_sum + c1, c5_sum + c5, n_sum + bs
            dt = time.perf_counter() - t0
            if not first:  # a process's compiling step is not the epoch's speed (resume)
                secs += dt
            self._partial = [loss_sum, c1_sum, c5_sum, n_sum, secs]
            self.progress.step(float(loss.detach()), 100.0 * c1 / bs,
                               bs * self.env.world_size / max(dt, 1e-9))
            if self.on_step is not None:
                self.on_step(self)
            if self._stop_everywhere():
                self._sync_buffers()
                self._save("last.pt")
                raise self._interrupted(
                    f"stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
                    f"last.pt saved in {self.out_dir}; continue with: irconvert binarize "
                    f"{self.out_dir} --resume")
        self._sync_buffers()
        loss_sum, c1_sum, c5_sum, n_sum = all_reduce_sum(
            [loss_sum, c1_sum, c5_sum, n_sum], self.device, self.env)
        n = max(n_sum, 1.0)
        stage = self.stages[self.stage_index]
        return {"epoch": self.epoch, "stage": stage.name or str(self.stage_index + 1),
                "binarize": stage.binarize, "train_loss": loss_sum / n,
                "train_top1": 100.0 * c1_sum / n, "train_top5": 100.0 * c5_sum / n,
                "lr": lr, "t": t, "k": k, "images_per_s": n / max(secs, 1e-9), "time": secs}

    def run(self, *, resume: dict[str, Any] | None = None) -> FitResult:
        """Train to the end of the recipe (from ``resume``'s state when given).

        A run that fails before its first ``last.pt`` leaves nothing behind:
        the ``config.yaml``/``run.yaml`` it wrote are removed (and the run
        directory, when this run created it and it is empty), so a folder
        with only config files never looks like a run. A run that fails later
        keeps everything, and a data or input error says which ``last.pt``
        to ``--resume`` from once the cause is fixed.
        """
        created = resume is None and not self.out_dir.exists()
        try:
            return self._run(resume=resume)
        except TrainingInterrupted:
            raise  # last.pt was saved; the message says how to continue
        except BaseException as exc:
            if self.env.is_main:
                self._after_failure(exc, created=created, resumed=resume is not None)
            raise

    def _prepare(self) -> None:
        """A new run's start: warnings, calibration, the time budget, the weight average."""
        for line in self.report.warnings:
            self.progress.log(f"warning: {line}")
        if self.recipe.init is not None:
            self.init_info = init_from_run(self.model, self.recipe.init, self.arch)
            info = self.init_info
            self.progress.log(f"init: {info['copied']} of {info['tensors'] - info['schedule']} "
                              f"tensors from {self.recipe.init} (the {info['schedule']} EDE "
                              "schedule tensors are this run's own)")
        if self.evaluate_start:
            self.start_top1["converted"] = self._quick_eval().top1
        self._calibrate()
        if self.evaluate_start:
            self.start_top1["calibrated"] = self._quick_eval().top1
            self.progress.log("top-1 before training: {converted:.2f}% as converted, "
                              "{calibrated:.2f}% after calibration".format(**self.start_top1))
        # before the budget's probe times a step: the constraint is part of it
        if constrain_latent_(self.model, self.recipe.latent):
            self.progress.log(f"latent weights: {self.recipe.latent.to_dict()} "
                              "(binary weights unchanged)")
        if self.budget_pending:
            self._fit_budget()
        self._start_average()  # after calibration and the budget's probe

    def _end_epoch(self, row: dict[str, Any]) -> None:
        """After an epoch's steps: the budget check, evaluation, the row, the saved files."""
        self._keep_to_budget()  # first: it may make this epoch the last
        last = (self.epoch + 1 >= self.epochs
                or self.global_step >= self.total_steps)
        if (self.epoch + 1) % self.recipe.eval_every == 0 or last:
            eval_start = time.perf_counter()
            ev = self._quick_eval()
            self._eval_secs.append(time.perf_counter() - eval_start)
            row.update(val_loss=ev.loss, val_top1=ev.top1, val_top5=ev.top5)
            if self.ema is not None:
                # the trained weights too: the average's gain, read off one trajectory
                row.update(raw_val_top1=self._quick_eval(self.model).top1)
        else:
            row.update(val_loss=None, val_top1=None, val_top5=None)
        self._note_skipped()
        row["skipped_images"] = len(self.skipped)
        # the names, as the recipe docs promise: those first met this epoch
        seen = {name for r in self.history for name in r.get("skipped_files", [])}
        row["skipped_files"] = [n for n in self.skipped if n not in seen]
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self._partial = [0.0, 0.0, 0.0, 0.0, 0.0]
        improved = row["val_top1"] is not None and row["val_top1"] > self.best_top1
        if improved:
            self.best_top1 = row["val_top1"]
        ckpt = self.checkpoint()
        self._save("last.pt", ckpt)
        if improved:
            self._save("best.pt", ckpt)
        if self.env.is_main:
            write_jsonl(self.out_dir / "metrics.jsonl", self.history)
            plot_curves(self.out_dir / "curves.png", self.history)
        self.progress.epoch_end(row)

    def _run(self, *, resume: dict[str, Any] | None = None) -> FitResult:
        start = time.perf_counter()
        if resume is not None:
            self.load_state(resume)
            if self.epoch >= self.epochs or self.global_step >= self.total_steps:
                self.progress.log(f"note: the run in {self.out_dir} has finished all its "
                                  f"{self.epochs} epochs; nothing to train (pass a larger "
                                  "--epochs to continue it)")
        elif self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._write_run_files()
        if resume is None:
            self._prepare()
        self.progress.start(self.epochs, self.epoch)
        # a resumed process compiles in its first epoch: not an epoch's cost
        time_next_epoch = resume is None or not self.compile
        try:
            with stop_signals(self):
                while self.epoch < self.epochs and self.global_step < self.total_steps:
                    stage = self.stage_of(self.epoch)
                    if stage != self.stage_index:
                        self._enter_stage(stage, fresh=True, transition=True)
                    loop_start, step_before = time.perf_counter(), self.global_step
                    row = self._train_epoch()
                    if time_next_epoch:
                        self._epoch_secs.append((time.perf_counter() - loop_start,
                                                 self.global_step - step_before))
                    time_next_epoch = True
                    self._end_epoch(row)
                    if self.stop_requested:  # arrived between the last step and here
                        raise self._interrupted(
                            f"stopped after epoch {self.epoch}; last.pt saved in "
                            f"{self.out_dir}; continue with: irconvert binarize "
                            f"{self.out_dir} --resume")
        finally:
            self.progress.stop()
            if self.retains_memory:  # hand the run's working memory back to the kernel
                release_freed_memory()
        evaluated = [r for r in self.history if r.get("val_top1") is not None]
        final: dict[str, Any] = evaluated[-1] if evaluated else {}
        return FitResult(
            run_dir=self.out_dir,
            fp_top1=self.fp_result.top1 if self.fp_result else None,
            fp_top5=self.fp_result.top5 if self.fp_result else None,
            best_top1=self.best_top1, final=final, report=self.report.to_dict(),
            wall_time=time.perf_counter() - start, epochs=self.epochs, history=self.history,
            start=dict(self.start_top1), skipped=list(self.skipped),
            epochs_ceiling=(self.epochs_ceiling if self.epochs < self.epochs_ceiling else None),
            amp=self.use_amp,
        )
