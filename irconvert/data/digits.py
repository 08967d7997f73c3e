"""scikit-learn's handwritten digits (8x8 grayscale, 1,797 images) as a data set.

Offline and tiny: the data ``irconvert demo`` trains on. The train/test split
is fixed (stratified, 80/20, ``random_state=0``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "DigitsDataset", "digits_splits"]

# Of the training split, pixels scaled to [0, 1].
DIGITS_MEAN = (0.3075,)
DIGITS_STD = (0.3762,)


class DigitsDataset(Dataset[tuple[Any, int]]):
    """``(PIL 'L' image, label)``; ``data`` is ``uint8 N,8,8,1`` like torchvision's CIFAR."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.data = images
        self.targets = [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.data[i, :, :, 0], mode="L"), self.targets[i]


def digits_splits() -> tuple[DigitsDataset, DigitsDataset, list[str]]:
    """``(train, test, class names)``; ``open_data("digits")`` makes the bundle."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=0.2,
                                              random_state=0, stratify=digits.target)
    return DigitsDataset(x_tr, y_tr), DigitsDataset(x_te, y_te), [str(i) for i in range(10)]
