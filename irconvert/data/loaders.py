"""Transforms, samplers and loaders that make a run reproducible and resumable.

Two things make an interrupted run resume bit-exactly:

* the order of samples comes from a :class:`ResumableSampler` (a
  ``DistributedSampler`` seeded from ``(seed, epoch)``) that can skip the
  samples an interrupted epoch already used;
* each sample's random augmentation is seeded from ``(seed, epoch, index)``,
  so it does not depend on worker processes, ranks or where a run stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from irconvert.config import DataConfig
from irconvert.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from irconvert.errors import ConfigError, DataError

__all__ = [
    "AugmentedDataset",
    "GPUCachedLoader",
    "ResumableSampler",
    "build_transform",
    "image_size",
    "make_loader",
    "resolve_normalization",
    "sample_seed",
]


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64 steps)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h >> 1


def resolve_normalization(cfg: DataConfig, model: nn.Module | None = None,
                          channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the recipe, or (``model``) from the model.

    The model's own: timm ``pretrained_cfg``, an ``irconvert_mean``/
    ``irconvert_std`` attribute, else the ImageNet statistics (torchvision
    models, and the shared CIFAR-10 ResNet weights, were trained with them).
    """
    if cfg.mean != "model" and cfg.std != "model":
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        pcfg = getattr(model, "pretrained_cfg", None)
        if isinstance(pcfg, dict) and pcfg.get("mean") and pcfg.get("std"):
            mean, std = tuple(pcfg["mean"]), tuple(pcfg["std"])
        elif getattr(model, "irconvert_mean", None) is not None:
            mean, std = tuple(model.irconvert_mean), tuple(model.irconvert_std)  # type: ignore
    if len(mean) != channels:
        if len(mean) == 3 and channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        else:
            raise ConfigError(f"field 'data.mean' has {len(mean)} values but the model takes "
                              f"{channels}-channel images")
    return mean, std


def image_size(dataset: Dataset[Any]) -> tuple[int, int]:
    """``(height, width)`` of a PIL-image dataset's first readable image."""
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        if item is not None:  # None: an unreadable file being skipped
            w, h = item[0].size
            return h, w
    raise DataError("no readable image in the training split")


def build_transform(cfg: DataConfig, mean: Sequence[float], std: Sequence[float], *,
                    train: bool, image_size: tuple[int, int] | None = None) -> Any:
    """The torchvision transform of a split (augmentation only when ``train``)."""
    from torchvision import transforms as T

    steps: list[Any] = []
    if train:
        size = cfg.crop or image_size
        if cfg.random_resized_crop:
            steps.append(T.RandomResizedCrop(size or 224))
        elif cfg.crop or cfg.padding:
            if size is None:
                raise ConfigError("field 'data.crop' must be set when data.padding is used")
            steps.append(T.RandomCrop(size, padding=cfg.padding or None))
        if cfg.flip is True:  # "alternate" is the dataset's (it needs the index)
            steps.append(T.RandomHorizontalFlip())
        if cfg.color_jitter:
            steps.append(T.ColorJitter(*cfg.color_jitter))
    else:
        if cfg.eval_resize:
            steps.append(T.Resize(cfg.eval_resize))
        if cfg.eval_crop:
            steps.append(T.CenterCrop(cfg.eval_crop))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


_FLIP_STREAM = 0xF11B  # keeps the flip bits apart from the augmentation seeds


def alternate_flips(seed: int, epoch: int, indices: Iterable[int]) -> list[bool]:
    """Derandomized flips: image ``i`` is flipped in epoch ``e`` iff ``bit(i) != e % 2``.

    ``bit(i)`` is a fair coin drawn once per image from ``seed``, so each
    epoch flips about half the images and any two consecutive epochs show
    every image both ways (airbench's alternating flip).
    """
    return [bool(sample_seed(seed, _FLIP_STREAM, i) & 1) != bool(epoch & 1) for i in indices]


class AugmentedDataset(Dataset[tuple[Tensor, int] | None]):
    """Apply ``transform`` with a torch RNG seeded from ``(seed, epoch, index)``.

    ``alternate_flip``: flip the transformed tensor as :func:`alternate_flips`
    says (the transform then holds no random flip of its own).
    """

    def __init__(self, base: Dataset[Any], transform: Any, seed: int = 0, *,
                 alternate_flip: bool = False) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.alternate_flip = alternate_flip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int] | None:
        item = self.base[i]
        if item is None:  # an unreadable file being skipped: collate leaves it out
            return None
        img, label = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, i))
            x = self.transform(img)
        if self.alternate_flip and alternate_flips(self.seed, self.epoch, [i])[0]:
            x = x.flip(-1)
        return x, int(label)


class ResumableSampler(DistributedSampler[int]):
    """``DistributedSampler`` that can skip the first ``skip`` samples of an epoch.

    Works without a process group (``num_replicas=1``) as well.
    """

    def __init__(self, dataset: Dataset[Any], *, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


def make_loader(dataset: Dataset[Any], *, batch_size: int, train: bool, seed: int,
                workers: int, pin_memory: bool, rank: int = 0,
                world_size: int = 1) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` with a :class:`ResumableSampler`."""
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank,
                               shuffle=train, seed=seed)
    drop_last = train and sampler.num_samples >= batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=False, collate_fn=collate_readable)


def collate_readable(samples: list[Any]) -> Any:
    """``default_collate`` of the samples that are not None (unreadable files skipped).

    A batch is one smaller per skipped file; a batch with no readable
    sample at all means the data, not a file here and there, is broken.
    """
    from torch.utils.data import default_collate

    readable = [s for s in samples if s is not None]
    if not readable:
        raise DataError(f"all {len(samples)} images of a batch are unreadable; check the "
                        "data folder (is it a complete copy?)")
    return default_collate(readable)


def images_as_uint8(dataset: Dataset[Any]) -> tuple[Tensor, Tensor]:
    """All images of a ``(PIL, label)`` data set as ``uint8 N,C,H,W`` plus labels."""
    base = getattr(dataset, "base", dataset)
    data = getattr(base, "data", None)
    targets = getattr(base, "targets", None)
    if isinstance(data, np.ndarray) and data.ndim == 4 and targets is not None:  # CIFAR
        return (torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(),
                torch.as_tensor(list(targets), dtype=torch.long))
    images, labels = [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        if item is None:  # an unreadable file, skipped (counted by the data set)
            continue
        img, label = item
        arr = np.asarray(img, dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        labels.append(int(label))
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DataError("data.gpu_cache needs images of one size; found "
                        f"{len(shapes)} sizes, e.g. {sorted(shapes)[:2]}")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long)


class GPUCachedLoader:
    """A small data set held as one uint8 tensor on ``device``, augmented there.

    Random crop (with zero padding), horizontal flip and normalisation run
    as batched tensor ops with a generator seeded from ``(seed, epoch, batch)``,
    so it is deterministic and resumable like the DataLoader path. It works
    on any device (tested on CPU).
    """

    def __init__(self, images: Tensor, labels: Tensor, cfg: DataConfig,
                 mean: Sequence[float], std: Sequence[float], *, batch_size: int,
                 train: bool, seed: int, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> None:
        if train and (cfg.color_jitter or cfg.random_resized_crop):
            raise ConfigError("field 'data.gpu_cache' supports crop, padding and flip only; "
                              "set data.color_jitter: [] and data.random_resized_crop: false")
        if not train and (cfg.eval_resize or cfg.eval_crop):
            raise ConfigError("field 'data.gpu_cache' cannot resize; unset data.eval_resize "
                              "and data.eval_crop")
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.cfg, self.train, self.seed, self.device = cfg, train, seed, device
        self.batch_size = batch_size
        c = images.shape[1]
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, c, 1, 1)
        self.sampler = ResumableSampler(range(len(labels)),  # type: ignore[arg-type]
                                        num_replicas=world_size, rank=rank,
                                        shuffle=train, seed=seed)
        self.drop_last = train and self.sampler.num_samples >= batch_size
        self.dataset = self.labels  # len() like a DataLoader's dataset
        if train and cfg.flip == "alternate":  # epoch 0's flips; odd epochs invert them
            self.flip_bits = torch.tensor(alternate_flips(seed, 0, range(len(labels))),
                                          device=device)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _augment(self, x: Tensor, idx: Tensor, gen: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        crop_h, crop_w = (self.cfg.crop, self.cfg.crop) if self.cfg.crop else (h, w)
        pad = self.cfg.padding
        if pad or (crop_h, crop_w) != (h, w):
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            oy = torch.randint(0, h + 2 * pad - crop_h + 1, (n,), generator=gen,
                               device=self.device)
            ox = torch.randint(0, w + 2 * pad - crop_w + 1, (n,), generator=gen,
                               device=self.device)
            rows = (oy[:, None] + torch.arange(crop_h, device=self.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(crop_w, device=self.device))[:, None, None, :]
            b = torch.arange(n, device=self.device)[:, None, None, None]
            ch = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
            x = x[b, ch, rows, cols]
        if self.cfg.flip:
            flip = (self.flip_bits[idx] ^ bool(self.sampler.epoch & 1)
                    if self.cfg.flip == "alternate"
                    else torch.rand(n, generator=gen, device=self.device) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        first = self.sampler.skip // self.batch_size
        for b in range(len(self)):
            idx = indices[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            if self.train:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(sample_seed(self.seed, self.sampler.epoch, first + b))
                x = self._augment(x, idx, gen)
            x = (x.float() / 255.0 - self.mean) / self.std
            yield x, self.labels[idx]
