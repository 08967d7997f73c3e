"""The fine-tuning loop: binarize a float model, train it with the EDE schedule.

Run directory (written by rank 0 only, every file atomically):

    config.yaml     the resolved recipe (a valid ``--recipe`` file)
    run.yaml        where the model and data came from (for ``--resume``)
    last.pt         run checkpoint + trainer state, after every epoch and on stop
    best.pt         the checkpoint with the best validation top-1
    metrics.jsonl   one JSON object per epoch
    curves.png      loss, accuracy, lr and EDE t per epoch
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.checkpoint import CONFIG as RUN_CONFIG
from irconvert.checkpoint import (
    atomic_save,
    check_new_run,
    load_resume_state,
    new_checkpoint,
    read_run_dir,
)
from irconvert.config import StageConfig, TrainConfig
from irconvert.convert import ConversionReport, binarize_
from irconvert.data.datasets import DataBundle, open_data
from irconvert.data.loaders import (
    AugmentedDataset,
    GPUCachedLoader,
    build_transform,
    image_size,
    images_as_uint8,
    make_loader,
    resolve_normalization,
)
from irconvert.errors import ConfigError, DataError, IRConvertError, LoadError
from irconvert.functional import ede_schedule
from irconvert.models.heads import model_channels, model_outputs, replace_classifier_
from irconvert.nn import set_binarization, set_ede
from irconvert.train.budget import (
    PROBE_EVAL_BATCHES,
    PROBE_STEPS,
    epoch_seconds,
    fit_epochs,
    projected_seconds,
    scale_stages,
    timed_batches,
)
from irconvert.train.distributed import all_reduce_sum, cleanup, init_distributed
from irconvert.train.evaluate import EvalResult, _autocast, evaluate
from irconvert.train.memory import release_freed_memory, retain_freed_memory
from irconvert.train.metrics import correct_topk, plot_curves, write_jsonl
from irconvert.train.optim import build_optimizer, lr_factor_fn
from irconvert.train.precision import resolve_amp
from irconvert.train.progress import Progress, make_progress
from irconvert.train.recipe import load_recipe, recipe_from_dict, save_recipe
from irconvert.train.rng import get_rng_state, plain_rng_state, seed_everything, set_rng_state

__all__ = [
    "FitResult",
    "Trainer",
    "TrainingInterrupted",
    "fit",
    "model_outputs",
    "replace_classifier_",
    "resolve_device",
]


class TrainingInterrupted(IRConvertError):
    """Training stopped on request (Ctrl-C, SIGTERM); ``last.pt`` was saved.

    ``exit_code`` is the shell's convention for the signal: 130 for Ctrl-C
    (SIGINT), 143 for SIGTERM.
    """

    exit_code = 128 + signal.SIGINT


class TrainingDiverged(IRConvertError):
    """The loss became NaN or infinite; ``last.pt`` holds the last good epoch."""


@dataclass
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    fp_top1: float | None
    fp_top5: float | None
    best_top1: float
    final: dict[str, Any]
    report: dict[str, Any]
    wall_time: float
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    # top-1 before any training: right after conversion, then after the
    # threshold / BatchNorm calibration (only when asked: two evaluations)
    start: dict[str, float] = field(default_factory=dict)
    # image files found unreadable and left out (data.bad_files: skip)
    skipped: list[str] = field(default_factory=list)
    # the recipe's epochs when a time budget lowered them (else None)
    epochs_ceiling: int | None = None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else the CPU."""
    try:
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            return torch.device("cpu")
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"field 'device' must be auto, cpu, cuda or cuda:N, "
                          f"got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"field 'device' is {name!r} but CUDA is not available here")
    return device


@contextlib.contextmanager
def _stop_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM set a flag the loop checks; a second Ctrl-C aborts at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        trainer.stop_signal = signum
        trainer.progress.log(f"{signal.Signals(signum).name} received: saving last.pt and "
                             "stopping after this step (Ctrl-C again to abort)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Trainer:
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

        self.fp_result: EvalResult | None = None
        model = model.to(self.device)
        if evaluate_fp:  # every rank takes part (the sums are all-reduced)
            self.fp_result = evaluate(model, self.val_loader, self.device, env=self.env)
        uses_teacher = any(st.distill is not None for st in self.stages)
        teacher = copy.deepcopy(model).eval().requires_grad_(False) if uses_teacher else None
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

        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise DataError(f"{data.name}: the training split is empty")
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

    # -- data ---------------------------------------------------------------
    def _build_loaders(self) -> None:
        r, d, env = self.recipe, self.data, self.env
        assert d.train is not None
        common = {"rank": env.rank, "world_size": env.world_size}
        if r.data.gpu_cache:
            images, labels = images_as_uint8(d.train)
            self.train_loader: Any = GPUCachedLoader(
                images, labels, r.data, self.mean, self.std, batch_size=r.batch_size,
                train=True, seed=r.seed, device=self.device, **common)
            v_images, v_labels = images_as_uint8(d.val)
            self.val_loader: Any = GPUCachedLoader(
                v_images, v_labels, r.data, self.mean, self.std, batch_size=r.batch_size,
                train=False, seed=r.seed, device=self.device, **common)
            return
        size = None
        if not r.data.random_resized_crop and not r.data.crop:
            size = image_size(d.train)
        train_tf = build_transform(r.data, self.mean, self.std, train=True, image_size=size)
        val_tf = build_transform(r.data, self.mean, self.std, train=False)
        pin = r.data.pin_memory and self.device.type == "cuda"
        self.train_set = AugmentedDataset(d.train, train_tf, seed=r.seed)
        self.train_loader = make_loader(self.train_set, batch_size=r.batch_size, train=True,
                                        seed=r.seed, workers=r.workers, pin_memory=pin, **common)
        self.val_loader = make_loader(AugmentedDataset(d.val, val_tf), batch_size=r.batch_size,
                                      train=False, seed=r.seed, workers=r.workers,
                                      pin_memory=pin, **common)

    def _note_skipped(self) -> None:
        """Log the unreadable files skipped since the last call (data.bad_files: skip)."""
        new = [path for path in self.data.bad_paths() if path not in self.skipped]
        if not new:
            return
        self.skipped += new
        shown = ", ".join(new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else "")
        self.progress.log(f"skipped {len(new)} unreadable image file(s) "
                          f"(data.bad_files: skip): {shown}")

    def _set_epoch(self, epoch: int, skip_batches: int) -> None:
        sampler = (self.train_loader.sampler)
        sampler.set_epoch(epoch, skip=skip_batches * self.recipe.batch_size)
        if isinstance(getattr(self, "train_set", None), AugmentedDataset):
            self.train_set.set_epoch(epoch)

    # -- stages -------------------------------------------------------------------
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

    # -- time budget --------------------------------------------------------------
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
        loop_s, step_s = timed_batches(self.train_loader, PROBE_STEPS,
                                       lambda x, y: self._step(x, y))
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(weights)
        self.scaler.load_state_dict(scaler)
        set_rng_state(rng)
        eval_s = self._eval_seconds()
        set_rng_state(rng)
        fit = fit_epochs(budget_s=self.recipe.budget_minutes * 60.0,
                         elapsed_s=self.elapsed_s(), done=0, ceiling=self.epochs,
                         epoch_s=epoch_seconds(loop_s, step_s, self.steps_per_epoch),
                         eval_s=eval_s, eval_every=self.recipe.eval_every,
                         minimum=len(self.stages))
        epochs = fit.epochs
        if self.env.distributed:  # rank 0's clock decides for all
            epochs = int(all_reduce_sum([float(epochs if self.env.is_main else 0)],
                                        self.device, self.env)[0])
        lengths = [st.epochs for st in self.stages]
        if len(self.stages) > 1:
            lengths = scale_stages(lengths, epochs, done=0)
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
        if not early and projected_seconds(
                elapsed_s=elapsed, done=done, epochs=self.epochs, epoch_s=epoch_s, eval_s=eval_s,
                eval_every=every) <= minutes * 60.0:
            return
        fit = fit_epochs(budget_s=minutes * 60.0, elapsed_s=elapsed, done=done,
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
            lengths = scale_stages(lengths, epochs, done=done)
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
        with torch.no_grad(), _autocast(self.device, self.use_amp):
            def forward(inputs: Tensor, targets: Tensor) -> None:
                inputs = inputs.to(self.device, non_blocking=True)
                if self.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                self.model(inputs)

            loop_s, step_s = timed_batches(self.val_loader, PROBE_EVAL_BATCHES, forward)
        return epoch_seconds(loop_s, step_s, len(self.val_loader))

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

    # -- EDE and state ----------------------------------------------------------
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

    def checkpoint(self) -> dict[str, Any]:
        """The dict saved as ``last.pt``: run checkpoint plus full trainer state."""
        fp = self.fp_result.to_dict() if self.fp_result else None
        return new_checkpoint(
            self.model, arch=self.arch, num_classes=self.num_classes,
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
            self.model.load_state_dict(ckpt["model"])
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
        set_rng_state(ckpt["rng"])

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

    # -- the loop -----------------------------------------------------------------
    def _loss(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        if self.distill is not None:
            loss: Tensor = self.distill(inputs, logits.float(), targets)
            return loss
        result: Tensor = self.criterion(logits.float(), targets)
        return result

    def _quick_eval(self) -> EvalResult:
        return evaluate(self.model, self.val_loader, self.device, env=self.env,
                        amp=self.use_amp, channels_last=self.channels_last)

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

    def _sync_buffers(self) -> None:
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each
        # forward; do the same after the last one so every rank ends identical.
        if self.env.distributed:
            import torch.distributed as dist

            for buf in self.model.buffers():
                dist.broadcast(buf, 0)

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
            with _autocast(self.device, self.use_amp):
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
        with _autocast(self.device, self.use_amp):
            used = recalibrate_bn(self.model, self.train_loader, steps, self.device)
        self._sync_buffers()
        if used:
            self.progress.log(f"BatchNorm statistics re-estimated on {used} training batches")

    def _sync_buffers_and_params(self) -> None:
        if self.env.distributed:
            import torch.distributed as dist

            for p in self.model.parameters():
                dist.broadcast(p.data, 0)

    def _step(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One optimizer step; returns the loss, the logits and the targets on the device."""
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.use_amp):
            logits = self.forward_model(inputs)
            loss = self._loss(inputs, logits, targets)
        if not torch.isfinite(loss.detach()):
            self._diverged(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
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
            loss, logits, targets = self._step(inputs, targets)
            self.global_step += 1
            self.step_in_epoch += 1
            c1, c5 = correct_topk(logits.detach().float(), targets)
            bs = len(targets)
            loss_sum += float(loss.detach()) * bs
            c1_sum, c5_sum, n_sum = c1_sum + c1, c5_sum + c5, n_sum + bs
            dt = time.perf_counter() - t0
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
            for line in self.report.warnings:
                self.progress.log(f"warning: {line}")
            if self.evaluate_start:
                self.start_top1["converted"] = self._quick_eval().top1
            self._calibrate()
            if self.evaluate_start:
                self.start_top1["calibrated"] = self._quick_eval().top1
                self.progress.log("top-1 before training: {converted:.2f}% as converted, "
                                  "{calibrated:.2f}% after calibration".format(**self.start_top1))
            if self.budget_pending:
                self._fit_budget()
        self.progress.start(self.epochs, self.epoch)
        # a resumed process compiles in its first epoch: not an epoch's cost
        time_next_epoch = resume is None or not self.compile
        try:
            with _stop_signals(self):
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
                    self._keep_to_budget()  # first: it may make this epoch the last
                    last = (self.epoch + 1 >= self.epochs
                            or self.global_step >= self.total_steps)
                    if (self.epoch + 1) % self.recipe.eval_every == 0 or last:
                        eval_start = time.perf_counter()
                        ev = self._quick_eval()
                        self._eval_secs.append(time.perf_counter() - eval_start)
                        row.update(val_loss=ev.loss, val_top1=ev.top1, val_top5=ev.top5)
                    else:
                        row.update(val_loss=None, val_top1=None, val_top5=None)
                    self._note_skipped()
                    row["skipped_images"] = len(self.skipped)
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
        )


def fit(model: nn.Module, data: DataBundle | str, recipe: TrainConfig,
        out_dir: str | os.PathLike[str], *, resume: bool = False, arch: str | None = None,
        source: dict[str, Any] | None = None, run_info: dict[str, Any] | None = None,
        replace_classifier: bool = False, quiet: bool = False, progress: Progress | None = None,
        on_step: Callable[[Trainer], None] | None = None, download: bool = False,
        evaluate_fp: bool = True, evaluate_start: bool = False) -> FitResult:
    """Binarize ``model`` and fine-tune it on ``data`` as ``recipe`` says.

    Args:
        model: the full-precision model.
        data: a :class:`DataBundle` or a data spec (``imagefolder:PATH``, ...).
        recipe: the training recipe.
        out_dir: the run directory.
        resume: continue from ``out_dir/last.pt`` (``model`` must be the same
            full-precision model the run started from).

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingInterrupted: stopped by a signal; ``last.pt`` holds the state.
        DataError, ConfigError, LoadError: bad input.
    """
    out = Path(out_dir)
    ckpt = None
    if resume:
        ckpt = load_resume_state(out)
    else:
        check_new_run(out)
    if isinstance(data, str):
        data = open_data(data, channels=model_channels(model), download=download,
                         bad_files=recipe.data.bad_files)
    trainer = Trainer(model, data, recipe, out, arch=arch, source=source, run_info=run_info,
                      replace_classifier=replace_classifier, quiet=quiet, progress=progress,
                      on_step=on_step, evaluate_fp=evaluate_fp and ckpt is None,
                      evaluate_start=evaluate_start)
    try:
        return trainer.run(resume=ckpt)
    finally:
        cleanup(trainer.env)


def binarize_and_train(source: str, data: str, recipe: TrainConfig,
                       out_dir: str | os.PathLike[str], *, arch: str | None = None,
                       num_classes: int | None = None, pretrained: bool = False,
                       trust_pickle: bool = False, replace_classifier: bool = False,
                       download: bool = False, **kwargs: Any) -> FitResult:
    """Load ``source`` with :func:`irconvert.io.load_model`, then :func:`fit`."""
    from irconvert.data.datasets import parse_data_spec
    from irconvert.io import load_model

    # Check the cheap thing first: a typo in --data must not wait for a
    # model download or an architecture search.
    spec = parse_data_spec(data)
    if spec.kind != "digits" and not download and not spec.root.exists():
        raise DataError(f"{spec.root}: data folder not found")
    loaded = load_model(source, arch=arch, num_classes=num_classes, pretrained=pretrained,
                        trust_pickle=trust_pickle)
    model_arch = loaded.arch
    run_info = {"model": source, "arch": arch or loaded.arch, "num_classes": num_classes,
                "pretrained": pretrained, "trust_pickle": trust_pickle, "data": data,
                "replace_classifier": replace_classifier, "download": download}
    src = {"path": loaded.source, "sha256": loaded.sha256}
    return fit(loaded.model, data, recipe, out_dir, arch=model_arch, source=src,
               run_info=run_info, replace_classifier=replace_classifier, download=download,
               **kwargs)


def resume_run(run_dir: str | os.PathLike[str], *, overrides: TrainConfig | None = None,
               **kwargs: Any) -> FitResult:
    """Continue the run in ``run_dir`` from its ``config.yaml``, ``run.yaml`` and ``last.pt``."""
    run = Path(run_dir)
    info = read_run_dir(run)
    recipe = overrides or load_recipe(run / RUN_CONFIG)
    return binarize_and_train(
        info["model"], info["data"], recipe, run, arch=info.get("arch"),
        num_classes=info.get("num_classes"), pretrained=bool(info.get("pretrained")),
        trust_pickle=bool(info.get("trust_pickle")),
        replace_classifier=bool(info.get("replace_classifier")),
        download=bool(info.get("download")), resume=True, **kwargs)

