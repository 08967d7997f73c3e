"""The training recipe: :class:`TrainConfig` and its sections.

A recipe file (YAML, see :mod:`irconvert.config.recipe_file`) is a mapping whose
keys are the fields of :class:`TrainConfig`; the nested sections
(``optimizer``, ``schedule``, ``ede``, ``binarize``, ``data``, ``distill``,
``stages``) are mappings of their own. Run checkpoints keep the recipe as
``TrainConfig.to_dict()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from irconvert.config.base import (
    FieldError,
    Section,
    nonneg,
    one_or_many,
    positive,
    unit,
    unit_open,
)
from irconvert.config.binarize import BinarizeConfig, EDEConfig

__all__ = [
    "DataConfig",
    "DistillConfig",
    "EMAConfig",
    "LatentConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "StageConfig",
    "TrainConfig",
]


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig(Section):
    """Optimizer. Weight decay applies to BatchNorm parameters and biases only with ``decay_norms``.

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: peak learning rate (after warmup).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        weight_decay: L2 / decoupled decay on conv and linear weights (and,
            with ``decay_norms``, on the 1-d parameters too).
        decay_norms: also decay the 1-d parameters (BatchNorm scales and
            shifts, biases, activation thresholds), as the authors' code does
            (it decays every parameter); off, they keep their scale, as most
            modern recipes prefer.
        betas: Adam/AdamW betas.
        norm_lr_scale: learning-rate multiplier for the 1-d parameters
            (BatchNorm scales and shifts, biases, activation thresholds,
            RPReLU slopes), which set a binary network's operating points and
            may want another rate than its latent weights; 1 leaves them at
            ``lr``.
        latent_lr_scale: learning-rate multiplier for the latent weights of
            the IR-Net layers (the binarized convs and linears), leaving the
            full-precision stem, classifier and shortcuts at ``lr``. With
            ``latent: {standardize: true}`` the latent weights have spread 1,
            so ``lr * latent_lr_scale`` is the step in units of a filter's
            spread; 1 leaves them at ``lr``.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = positive(default=0.1)
    momentum: float = unit_open(default=0.9)
    nesterov: bool = False
    weight_decay: float = nonneg(default=1e-4)
    decay_norms: bool = False
    betas: tuple[float, float] = unit_open(default=(0.9, 0.999))
    norm_lr_scale: float = positive(default=1.0)
    latent_lr_scale: float = positive(default=1.0)


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(Section):
    """Learning-rate schedule, optionally after a linear warmup.

    Args:
        name: ``cosine`` (to ``min_lr`` at the end), ``linear`` (straight
            down to ``min_lr``, as ReActNet), ``step`` (x ``gamma`` at each
            milestone) or ``constant``.
        unit: whether ``milestones`` and warmup count ``epoch`` s or ``step`` s.
        milestones: for ``step``: where the lr is multiplied by ``gamma``.
        gamma: the factor at each milestone.
        warmup: length of the linear warmup, in ``unit`` s (0: none).
        warmup_start_lr: lr at the start of warmup (0 when null).
        min_lr: final lr of the cosine schedule.
    """

    name: Literal["cosine", "linear", "step", "constant"] = "cosine"
    unit: Literal["epoch", "step"] = "epoch"
    milestones: tuple[int, ...] = nonneg(default=())
    gamma: float = positive(default=0.1)
    warmup: int = nonneg(default=0)
    warmup_start_lr: float | None = nonneg(default=None)
    min_lr: float = nonneg(default=0.0)


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """Preprocessing and augmentation.

    Args:
        mean, std: per-channel normalisation, or ``model``: the model's own
            (timm ``pretrained_cfg``; ImageNet statistics otherwise, which is
            what the shared CIFAR-10 ResNet weights were trained with).
        crop: training crop size (null: the image size).
        padding: zero padding before the random crop (CIFAR: 4).
        random_resized_crop: ImageNet-style scale/aspect crop instead.
        flip: horizontal flip: ``true`` at random (half the images each
            epoch), ``alternate`` derandomized as in airbench (Jordan, 2024):
            each image is flipped or not at random in the first epoch and the
            other way in the next, so every two epochs see both views of every
            image; ``false`` never.
        color_jitter: brightness, contrast, saturation, hue (empty: off).
        eval_resize: resize the shorter side before the centre crop (null: no).
        eval_crop: centre crop at evaluation (null: no crop).
        gpu_cache: keep the whole (small) training set as one uint8 tensor on
            the training device and augment it there.
        pin_memory: pinned host memory for CUDA transfers.
        bad_files: what an unreadable image file (truncated, not an image)
            does: ``stop`` the run with an error that names it, or ``skip``
            it and count it (the log, metrics.jsonl and the summary say how
            many and which).
    """

    mean: Literal["model"] | tuple[float, ...] = "model"
    std: Literal["model"] | tuple[float, ...] = "model"
    crop: int | None = positive(default=None)
    padding: int = nonneg(default=0)
    random_resized_crop: bool = False
    flip: bool | Literal["alternate"] = True
    color_jitter: tuple[float, ...] = nonneg(default=())
    eval_resize: int | None = positive(default=None)
    eval_crop: int | None = positive(default=None)
    gpu_cache: bool = False
    pin_memory: bool = True
    bad_files: Literal["stop", "skip"] = "stop"

    def check_fields(self) -> None:
        if (self.mean == "model") != (self.std == "model"):
            # name the one that is a list: the other says 'model'
            bad, other = ("mean", "std") if self.std == "model" else ("std", "mean")
            raise FieldError(bad, "'model' as {0} is (or both lists)", getattr(self, bad),
                             (other,))
        if self.mean != "model" and (len(self.mean) not in (1, 3)
                                     or len(self.std) != len(self.mean)):
            raise FieldError("mean", "a list of 1 or 3 numbers, as long as {0}", self.mean,
                             ("std",))
        if self.std != "model" and any(s <= 0 for s in self.std):
            raise FieldError("std", "a list of positive numbers", self.std)
        if len(self.color_jitter) not in (0, 4):
            raise FieldError("color_jitter", "a list of 4 numbers (brightness, contrast, "
                             "saturation, hue) or []", self.color_jitter)


@dataclass(frozen=True, kw_only=True)
class DistillConfig(Section):
    """Distillation from a frozen full-precision teacher: the original model by default.

    Args:
        kind: ``logits``: ``(1 - alpha) * CE(labels) + alpha * T^2 * KL`` at
            temperature ``T``; ``distributional``: ReActNet's loss, the
            teacher's softmax as the only target (``alpha`` and
            ``temperature`` are ignored; the labels are not used).
        alpha: weight of the distillation term (1 - alpha on the labels).
        temperature: softmax temperature of the distillation term.
        features: weight of matching the outputs of rewritten residual blocks
            (spatial attention maps, Zagoruyko & Komodakis 2017, as in
            Real-to-Binary); 0 turns it off. Needs the original model as
            the teacher (the blocks are matched by name).
        teacher: the teacher instead of the model being converted: a
            checkpoint or a model name, as ``irconvert binarize`` takes
            them, or a list of them for an ensemble (the mean of their
            logits). Each must have as many classes as the data and take
            the same inputs (the same normalisation). Paths are read
            relative to the working directory; ``[]``: the original model.
    """

    kind: Literal["logits", "distributional"] = "logits"
    alpha: float = unit(default=0.5)
    temperature: float = positive(default=1.0)
    features: float = nonneg(default=0.0)
    teacher: tuple[str, ...] = one_or_many(default=())

    def check_fields(self) -> None:
        if self.teacher and self.features > 0:
            raise FieldError("features", "0 when {0} is set (blocks are matched by name "
                             "with the original model)", self.features, ("teacher",))
        if any(not t.strip() for t in self.teacher):
            raise FieldError("teacher", "a list of checkpoint paths or model names",
                             self.teacher)


@dataclass(frozen=True, kw_only=True)
class EMAConfig(Section):
    """An exponential moving average of the weights: what is evaluated, saved and exported.

    After every optimizer step, ``average = d * average + (1 - d) * weights``
    for every floating-point tensor of the model (BatchNorm statistics
    included; integer buffers are copied). Training goes on with the raw
    weights; evaluations, ``best.pt`` and the exports use the average
    (``last.pt`` keeps both, so ``--resume`` is exact). Each evaluation also
    scores the raw weights (``raw_val_top1`` in ``metrics.jsonl``), so one
    run shows what the average gains.

    Args:
        decay: ``d``, per optimizer step (0.999 averages about the last 1,000).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at update ``n``, so the
            first updates do not drag the average towards where it started.
    """

    decay: float = unit_open(default=0.999)
    warmup: bool = True


@dataclass(frozen=True, kw_only=True)
class LatentConfig(Section):
    """Constraints on the latent weights of the binarized layers, after every optimizer step.

    Libra-PB standardizes each filter before its sign, so the forward pass
    does not depend on a filter's mean or spread, but an optimizer step does:
    Adam moves every weight by about ``lr`` whatever its scale, so a filter's
    spread sets its effective learning rate: it differs between layers (the
    shared ResNet-20's filters start 3x apart) and falls as the latent
    weights grow (3-10x over the shipped 1W/1A run).

    Args:
        standardize: set every filter's latent weights to their Libra-PB
            standardized values (mean 0, std 1) after each step, and once
            before the first: the binary weights are unchanged, every layer's
            effective learning rate is ``lr`` in units of its own spread, and
            it stays so.
        clip: clamp latent weights to within ``clip`` standard deviations of
            their filter's mean (BinaryConnect's clip, in the units the sign
            sees): a weight far past zero gets no EDE gradient, so it could
            never flip back (null: off). Applied after ``standardize``.

    Layers whose weights are not binary in the current stage (``binarize:
    activations`` or ``none``) compute with their latent weights and are
    left alone.
    """

    standardize: bool = False
    clip: float | None = positive(default=None)

    @property
    def active(self) -> bool:
        return self.standardize or self.clip is not None


@dataclass(frozen=True, kw_only=True)
class StageConfig(Section):
    """One stage of a staged recipe (ReActNet's two-step training and the like).

    Fields left out (null) take the recipe's top-level value. At the start of
    every stage the optimizer and schedule start afresh and BatchNorm
    statistics are re-estimated (``bn_recalibration`` batches).

    Args:
        name: shown in progress, summaries, ``metrics.jsonl`` and plots.
        epochs: the stage's length.
        binarize: what is binary in this stage: ``both`` (the final model),
            ``weights`` (real activations), ``activations`` (real weights) or
            ``none`` (the float network in its converted block form).
        optimizer, schedule: this stage's own (the schedule spans the stage).
        distill: this stage's distillation (``alpha: 0`` turns it off).
        ede: a schedule for this stage alone; by default one EDE schedule
            runs over all the stages that binarize something.
    """

    name: str = ""
    epochs: int = positive(default=1)
    binarize: Literal["both", "weights", "activations", "none"] = "both"
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    distill: DistillConfig | None = None
    ede: EDEConfig | None = None


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """A complete fine-tuning recipe.

    Args:
        epochs: training length in epochs (or give ``steps``).
        steps: training length in optimizer steps (wins over ``epochs``).
        budget_minutes: fit the run in this many minutes of wall time:
            ``epochs`` becomes a ceiling, lowered to what fits by timing a
            few steps before the first one, and again after any epoch that
            says the run would overrun; the schedules span the length kept
            (see ``irconvert.train.budget``). Counted from the start of
            training (data loading, calibration and compilation included).
            ``steps`` wins over it, as over ``epochs``.
        batch_size: images per step per process.
        optimizer: the optimizer.
        schedule: the learning-rate schedule.
        ede: the EDE schedule of the binarization.
        binarize: what to binarize and how.
        data: preprocessing and augmentation.
        distill: distillation from the original model (null: none; ``{}``:
            with the defaults of :class:`DistillConfig`).
        stages: optional list of stages run in order (see
            :class:`StageConfig`); ``epochs`` is then their sum.
        amp: mixed precision: ``none``, ``bf16`` or ``fp16``. ``bf16`` also
            applies on CPUs with native bf16 kernels (AVX512_BF16, AMX) and
            falls back to fp32 on others; ``fp16`` is CUDA only.
        channels_last: NHWC memory format (CUDA and CPU).
        compile: ``torch.compile`` the model (and the distillation teacher).
        cpu_memory: on the CPU with glibc, ``retain`` keeps freed memory in
            the process for the next step instead of ``release``-ing it to
            the kernel and page-faulting it back (glibc's default); it sets
            the process's malloc thresholds (see ``irconvert.train.memory``).
        grad_clip: clip the gradient norm to this (0: off).
        seed: seeds python, numpy, torch and the data order.
        workers: DataLoader worker processes.
        label_smoothing: cross-entropy label smoothing.
        ema: evaluate, save and export an exponential moving average of the
            weights (see :class:`EMAConfig`; null: the weights themselves).
        latent: constraints on the binarized layers' latent weights (see
            :class:`LatentConfig`; off by default).
        eval_every: evaluate every N epochs (and always after the last).
        bn_recalibration: before fine-tuning, re-estimate BatchNorm statistics
            of the converted model over this many training batches (0: off).
        init: start the converted model from another irconvert run of the
            same network instead of the full-precision weights: its
            ``best.pt``/``last.pt`` or its folder (e.g. a 1W/32A run when
            training 1W/1A). Every tensor with the same name is copied (the
            same name with another shape is an error); the teacher stays the
            original model. Read relative to the
            working directory; null: the full-precision weights.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
    """

    epochs: int = positive(default=10)
    steps: int | None = positive(default=None)
    budget_minutes: float | None = positive(default=None)
    batch_size: int = positive(default=128)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ede: EDEConfig = field(default_factory=EDEConfig)
    binarize: BinarizeConfig = field(default_factory=BinarizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig | None = None
    stages: tuple[StageConfig, ...] = ()
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    cpu_memory: Literal["retain", "release"] = "retain"
    grad_clip: float = nonneg(default=0.0)
    seed: int = nonneg(default=0)
    workers: int = nonneg(default=2)
    label_smoothing: float = unit_open(default=0.0)
    ema: EMAConfig | None = None
    latent: LatentConfig = field(default_factory=LatentConfig)
    eval_every: int = positive(default=1)
    bn_recalibration: int = nonneg(default=0)
    init: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages:  # ``epochs`` is derived: the stages say how long the run is
            object.__setattr__(self, "epochs", sum(st.epochs for st in self.stages))

    def check_fields(self) -> None:
        step = "a non-empty list for {0} 'step'"
        if self.schedule.name == "step" and not self.schedule.milestones:
            raise FieldError("schedule.milestones", step, (), ("schedule.name",))
        if list(self.schedule.milestones) != sorted(self.schedule.milestones):
            raise FieldError("schedule.milestones", "an increasing list",
                             self.schedule.milestones)
        if not self.stages:
            return
        teachers = {st.distill.teacher for st in self.stage_list() if st.distill is not None}
        if len(teachers) > 1:
            raise FieldError("stages", "stages that distill from one teacher ({0} differs "
                             "between them)", [list(t) for t in sorted(teachers)],
                             ("distill.teacher",))
        if self.steps is not None:
            raise FieldError("steps", "null when there are {0} (each stage gives its epochs)",
                             self.steps, ("stages",))
        final = "both" if self.binarize.binary_activations else "weights"
        last = len(self.stages) - 1
        if self.stages[last].binarize != final:
            raise FieldError(f"stages[{last}].binarize", f"{final!r}: the last stage trains "
                             "the model that is exported", self.stages[last].binarize)
        for i, st in enumerate(self.stages):
            sched = st.schedule or self.schedule
            if sched.name == "step" and not sched.milestones:
                raise FieldError(f"stages[{i}].schedule.milestones", step, (),
                                 (f"stages[{i}].schedule.name",))
            if st.binarize in ("activations", "both") and not self.binarize.binary_activations:
                raise FieldError(f"stages[{i}].binarize", "weights or none when {0} is 32 (no "
                                 "binary activations)", st.binarize, ("binarize.act_bits",))

    def stage_list(self) -> tuple[StageConfig, ...]:
        """The stages, with top-level values filled in; one stage for a plain recipe."""
        if not self.stages:
            return (StageConfig(name="", epochs=self.epochs, optimizer=self.optimizer,
                                schedule=self.schedule, distill=self.distill),)
        return tuple(dataclasses.replace(
            st, optimizer=st.optimizer or self.optimizer, schedule=st.schedule or self.schedule,
            distill=st.distill if st.distill is not None else self.distill,
        ) for st in self.stages)
