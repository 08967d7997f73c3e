"""Typer options shared by several commands (loading a model, choosing layers)."""

from __future__ import annotations

from typing import Annotated

import typer

from irconvert.config import BinarizeConfig

Arch = Annotated[str | None, typer.Option(
    "--arch", help="Architecture of a bare state_dict (built-in, torchvision, or timm:NAME); "
    "recognised from the keys when omitted.")]
NumClasses = Annotated[int | None, typer.Option(
    "--num-classes", min=1, help="Classifier size (read from the checkpoint when omitted).")]
Pretrained = Annotated[bool, typer.Option(
    "--pretrained", help="For a model name: download its pretrained weights (needs internet).")]
TrustPickle = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow checkpoints that need code execution to load "
    "(a whole pickled nn.Module). Only for files you trust.")]
ActBits = Annotated[int, typer.Option(
    "--act-bits", help="1: binary activations (1W/1A); 32: weights only (1W/32A).")]
Include = Annotated[list[str] | None, typer.Option(
    "--include", help="Glob on dotted layer names; only matching layers are binarized, "
    "past the --keep-* defaults. Repeatable.")]
Exclude = Annotated[list[str] | None, typer.Option(
    "--exclude", help="Glob on dotted layer names to keep in full precision. Repeatable.")]
KeepStem = Annotated[bool, typer.Option(
    "--keep-stem/--binarize-stem", help="Keep the first convolution in full precision.")]
KeepClassifier = Annotated[bool, typer.Option(
    "--keep-classifier/--binarize-classifier", help="Keep the classifier in full precision.")]
KeepDownsample = Annotated[bool, typer.Option(
    "--keep-downsample/--binarize-downsample", help="Keep 1x1 shortcut convolutions in fp32.")]
KeepDepthwise = Annotated[bool, typer.Option(
    "--keep-depthwise/--binarize-depthwise", help="Keep depthwise convolutions in fp32.")]
KeepGrouped = Annotated[bool, typer.Option(
    "--keep-grouped/--binarize-grouped", help="Keep grouped convolutions in fp32.")]
KeepSE = Annotated[bool, typer.Option(
    "--keep-se/--binarize-se", help="Keep squeeze-and-excitation gate layers in fp32.")]
BlockTransform = Annotated[str, typer.Option(
    "--block-transform", help="Rewrite residual blocks for 1W/1A (Hardtanh, a shortcut "
    "around every binarized conv): auto (1W/1A only), on, off.")]


def binarize_config(
    act_bits: int, include: list[str] | None, exclude: list[str] | None, keep_stem: bool,
    keep_classifier: bool, keep_downsample: bool, keep_depthwise: bool, keep_grouped: bool,
    block_transform: str, keep_se: bool = True,
) -> BinarizeConfig:
    """A validated config from command-line values (raises ``ConfigError``)."""
    return BinarizeConfig(
        act_bits=act_bits,  # type: ignore[arg-type]
        include=tuple(include or ()), exclude=tuple(exclude or ()),
        keep_stem=keep_stem, keep_classifier=keep_classifier,
        keep_downsample=keep_downsample, keep_depthwise=keep_depthwise,
        keep_grouped=keep_grouped, keep_se=keep_se,
        block_transform=block_transform,  # type: ignore[arg-type]
    )

# Options of the commands that read data and train.
DataOpt = Annotated[str, typer.Option(
    "--data", help="imagefolder:PATH (train/ and val/ or test/ inside), cifar10:PATH, "
    "cifar100:PATH, digits, or a folder.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines, no progress bars.")]
SkipBad = Annotated[bool, typer.Option(
    "--skip-bad-images", help="Leave unreadable image files (truncated, not an image) out "
    "and count them, instead of stopping at the first one (recipe: data.bad_files).")]
