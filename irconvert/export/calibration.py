"""Calibration images for int8 exports, preprocessed as the checkpoint recorded.

The images are read the way ``irconvert eval`` reads data (``--data
imagefolder:DIR``, ``cifar10:DIR``, ``digits``... see
:func:`irconvert.data.datasets.open_data`) and transformed with the
checkpoint's evaluation preprocessing (the normalisation, eval resize/crop
of :mod:`irconvert.export.meta`), so the calibrated ranges are those the
deployed model sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from irconvert.errors import DataError

__all__ = ["Calibration", "calibration_images"]


@dataclass
class Calibration:
    """Preprocessed float32 NCHW images and where they came from (for the report)."""

    images: np.ndarray
    source: str  # e.g. "imagefolder:/data/cifar10 (train, 256 of 50000 images)"


def calibration_images(data: str, count: int, preprocessing: Mapping[str, Any] | None, *,
                       channels: int = 3) -> Calibration:
    """``count`` evenly spaced images of ``data``'s training split (else its eval split).

    The training split is preferred so that a later test-set evaluation of
    the int8 model is not calibrated on its own test images. Evenly spaced
    indices cover every class of a class-sorted folder.

    Raises:
        DataError: the data is missing, or its images do not match the model's input size.
    """
    from irconvert.config import DataConfig
    from irconvert.data.datasets import IMAGENET_MEAN, IMAGENET_STD, open_data
    from irconvert.data.loaders import build_transform

    if count < 1:
        raise DataError(f"--calib-images must be at least 1, not {count}")
    pre = dict(preprocessing or {})
    bundle = open_data(data, channels=channels)
    split, dataset = ("train", bundle.train) if bundle.train is not None else (
        bundle.val_split, bundle.val)
    total = len(dataset)  # type: ignore[arg-type]
    if total == 0:
        raise DataError(f"{bundle.name}: the {split} split has no images")
    norm = pre.get("normalization") or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if len(norm["mean"]) != channels:
        mean = [sum(norm["mean"]) / len(norm["mean"])] * channels
        std = [sum(norm["std"]) / len(norm["std"])] * channels
    else:
        mean, std = norm["mean"], norm["std"]
    bands = len(dataset[0][0].getbands())
    if bands != channels:
        raise DataError(f"{bundle.name}: images have {bands} channel(s) but the model takes "
                        f"{channels}")
    cfg = DataConfig(eval_resize=pre.get("eval_resize"), eval_crop=pre.get("eval_crop"))
    tf = build_transform(cfg, mean, std, train=False)
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).astype(int))
    images = np.stack([np.asarray(tf(dataset[int(i)][0]), np.float32) for i in picks])
    want = pre.get("input_size")
    if want is not None and list(images.shape[1:]) != list(want):
        got = "x".join(map(str, images.shape[1:]))
        raise DataError(f"{bundle.name}: calibration images are {got} after preprocessing but "
                        f"the model takes {'x'.join(map(str, want))}")
    return Calibration(images, f"{bundle.name} ({split}, {len(picks)} of {total} images)")
