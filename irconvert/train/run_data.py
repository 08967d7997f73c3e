"""A run's data: its loaders, the files they skipped, and the size of an input.

Mixed into :class:`~irconvert.train.trainer.Trainer`; what it shares with the
other parts is declared in :class:`~irconvert.train.run_parts.RunParts`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from irconvert.data.loaders import (
    AugmentedDataset,
    GPUCachedLoader,
    build_transform,
    image_size,
    images_as_uint8,
    make_loader,
)
from irconvert.train.run_parts import RunParts

__all__ = ["RunData"]


class RunData(RunParts):
    """The data methods of the trainer (see the module docstring)."""

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
        self.train_set = AugmentedDataset(d.train, train_tf, seed=r.seed,
                                          alternate_flip=r.data.flip == "alternate")
        self.train_loader = make_loader(self.train_set, batch_size=r.batch_size, train=True,
                                        seed=r.seed, workers=r.workers, pin_memory=pin, **common)
        self.val_loader = make_loader(AugmentedDataset(d.val, val_tf), batch_size=r.batch_size,
                                      train=False, seed=r.seed, workers=r.workers,
                                      pin_memory=pin, **common)

    def _eval_input_size(self) -> list[int] | None:
        """``[C, H, W]`` of one evaluation input: what exports of this run should take."""
        images = getattr(self.val_loader, "images", None)
        if isinstance(images, Tensor):
            return [int(d) for d in images.shape[1:]]
        dataset = self.val_loader.dataset
        for i in range(min(len(dataset), 16)):
            item = dataset[i]
            if item is not None:  # None: an unreadable file being skipped
                return [int(d) for d in item[0].shape]
        return None

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

    # -- the loop -----------------------------------------------------------------
