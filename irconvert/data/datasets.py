"""Data sets named on the command line: ``imagefolder:PATH``, ``cifar10:PATH``...

Every data set here yields ``(PIL image, label)``; :mod:`irconvert.data.loaders`
adds the transforms, the sampler and the batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from irconvert.errors import DataError

__all__ = [
    "BAD_FILES",
    "KINDS",
    "BadImageError",
    "DataBundle",
    "DataSpec",
    "ImageFiles",
    "first_image",
    "open_data",
    "parse_data_spec",
]

KINDS = ("imagefolder", "cifar10", "cifar100", "digits")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSpec:
    """Where the data is: ``kind`` is one of :data:`KINDS`."""

    kind: str
    root: Path

    def __str__(self) -> str:
        return self.kind if self.kind == "digits" else f"{self.kind}:{self.root}"


@dataclass
class DataBundle:
    """A training split, an evaluation split and the class names.

    ``train``/``val`` yield ``(PIL image, int label)``. ``arrays`` optionally
    holds the training images as one uint8 ``N,C,H,W`` array-like (for the
    GPU cache) when the format has it at hand.
    """

    train: Dataset[Any] | None
    val: Dataset[Any]
    classes: list[str]
    name: str = ""
    val_split: str = "val"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_bad_files(self, bad_files: str) -> None:
        """``stop`` or ``skip`` on unreadable image files (see :class:`ImageFiles`)."""
        if bad_files not in BAD_FILES:
            raise DataError(f"bad_files must be one of {', '.join(BAD_FILES)}, "
                            f"got {bad_files!r}")
        for split in (self.train, self.val):
            if isinstance(split, ImageFiles):
                split.bad_files = bad_files

    def bad_paths(self) -> list[str]:
        """Every file of either split found unreadable so far."""
        return [path for split in (self.train, self.val) if isinstance(split, ImageFiles)
                for path in split.bad_paths()]


def first_image(dataset: Dataset[Any]) -> Any | None:
    """The first readable image of ``dataset`` (None: it has none).

    In skip mode an unreadable file's sample is None, so ``dataset[0]`` may
    not be an image.
    """
    for i in range(len(dataset)):  # type: ignore[arg-type]
        sample = dataset[i]
        if sample is not None:
            return sample[0]
    return None


def parse_data_spec(spec: str) -> DataSpec:
    """``imagefolder:PATH``, ``cifar10:PATH``, ``cifar100:PATH``, ``digits`` or a folder.

    ``digits`` is scikit-learn's bundled 8x8 digits (offline; the demo's data).

    Raises:
        DataError: an unknown prefix.
    """
    if spec in ("digits", "digits:"):
        return DataSpec("digits", Path())
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        return DataSpec(kind, Path(rest).expanduser())
    if sep and len(kind) > 1 and not Path(spec).exists():  # 'C:\\...' stays a path
        raise DataError(f"--data {spec!r}: unknown data kind {kind!r}; "
                        f"allowed: {', '.join(KINDS)} (as KIND:PATH) or a folder")
    return DataSpec("imagefolder", Path(spec).expanduser())


class _ModeConvert(Dataset[Any]):
    """Convert PIL images to ``L`` or ``RGB`` so the channel count fits the model."""

    def __init__(self, base: Dataset[Any], mode: str) -> None:
        self.base, self.mode = base, mode

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img, label = self.base[i]
        if getattr(img, "mode", self.mode) != self.mode:
            img = img.convert(self.mode)
        return img, int(label)

    def __getattr__(self, name: str) -> Any:  # targets, data, classes...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


BAD_FILES = ("stop", "skip")
_SKIP_HINT = "--skip-bad-images (recipe: data.bad_files: skip)"


class BadImageError(DataError):
    """An image file of the data set cannot be decoded (and bad files are not skipped)."""


class ImageFiles(Dataset[Any]):
    """An ``ImageFolder`` whose unreadable files are named, or skipped and counted.

    ``bad_files="stop"``: reading a truncated or non-image file raises
    :class:`BadImageError` naming it. ``"skip"``: that sample is ``None``
    (the loaders leave it out of its batch) and is remembered in ``bad``, a
    shared-memory flag per sample, so files found by DataLoader worker
    processes are counted in the main process too.
    """

    def __init__(self, folder: Any, mode: str, bad_files: str = "stop") -> None:
        import torch

        self.folder, self.mode = folder, mode
        self.bad_files = bad_files
        self.bad = torch.zeros(len(folder.samples), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        from PIL import Image

        path, label = self.folder.samples[i]
        try:
            img = self.folder.loader(path)  # decodes the whole file (convert("RGB"))
            if img.mode != self.mode:
                img = img.convert(self.mode)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            # what PIL raises for damaged, non-image or absurdly large files
            self.bad[i] = 1
            if self.bad_files == "skip":
                return None
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise BadImageError(f"{path}: unreadable image ({reason}); fix or delete it, or "
                                f"leave unreadable images out with {_SKIP_HINT}") from None
        return img, int(label)

    def bad_paths(self) -> list[str]:
        """The files found unreadable so far (in skip mode: the ones left out)."""
        return [self.folder.samples[i][0] for i in self.bad.nonzero().flatten().tolist()]

    @property
    def targets(self) -> list[int]:
        return list(self.folder.targets)

    @property
    def classes(self) -> list[str]:
        return list(self.folder.classes)


def _imagefolder(root: Path, split: str, mode: str) -> tuple[Dataset[Any] | None, Dataset[Any],
                                                              list[str], str]:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    val_names = ("val", "test") if split == "auto" else (split,)
    val_dir = next((root / n for n in val_names if (root / n).is_dir()), None)
    if val_dir is None:
        raise DataError(f"{root}: no {' or '.join(n + '/' for n in val_names)} folder inside "
                        "(expected train/ and val/ or test/, one sub-folder per class)")
    try:
        val = ImageFolder(str(val_dir))
        train = ImageFolder(str(root / "train")) if (root / "train").is_dir() else None
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: {str(exc).splitlines()[0]}") from None
    if train is not None and train.classes != val.classes:
        raise DataError(f"{root}: train/ and {val_dir.name}/ hold different class folders "
                        f"({len(train.classes)} vs {len(val.classes)})")
    return (ImageFiles(train, mode) if train is not None else None,
            ImageFiles(val, mode), list(val.classes), val_dir.name)


def _looks_like_imagefolder(root: Path) -> bool:
    """``root/train/<class>/`` folders: what ``imagefolder:`` reads."""
    train = root / "train"
    return train.is_dir() and any(child.is_dir() for child in train.iterdir())


def _cifar(kind: str, root: Path, mode: str, download: bool) -> tuple[Dataset[Any], Dataset[Any],
                                                                        list[str]]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        if _looks_like_imagefolder(root):
            raise DataError(f"{kind}:{root}: no {kind} batch files there, but it looks like "
                            f"an image folder (train/ with a folder per class); use "
                            f"--data imagefolder:{root}") from None
        hint = "" if download else " (pass --download to fetch it)"
        raise DataError(f"{kind}:{root}: {str(exc).splitlines()[0]}{hint}") from None
    except OSError as exc:
        raise DataError(f"{kind}:{root}: could not download ({type(exc).__name__})") from None
    return _ModeConvert(train, mode), _ModeConvert(test, mode), list(train.classes)


def open_data(spec: str | DataSpec, *, split: str = "auto", channels: int = 3,
              download: bool = False, bad_files: str = "stop") -> DataBundle:
    """Open the training and evaluation splits of a data set.

    Args:
        spec: see :func:`parse_data_spec`.
        split: the evaluation split (``val``, ``test``); ``auto`` takes ``val/``
            and falls back to ``test/``.
        channels: 1 reads images as grayscale, 3 as RGB.
        download: let torchvision download CIFAR (only when asked).
        bad_files: ``stop`` at an unreadable image file with an error naming
            it, or ``skip`` it and count it (image folders only: the other
            formats are arrays).

    Raises:
        DataError: the data is missing or malformed.
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    mode = "L" if channels == 1 else "RGB"
    if spec.kind == "digits":
        from irconvert.data.digits import digits_splits

        d_train, d_test, d_classes = digits_splits()
        return DataBundle(d_train, d_test, d_classes, name="digits", val_split="test")
    if spec.kind == "imagefolder":
        train, val, classes, val_name = _imagefolder(spec.root, split, mode)
        bundle = DataBundle(train, val, classes, name=str(spec), val_split=val_name)
        bundle.set_bad_files(bad_files)
        return bundle
    train, val, classes = _cifar(spec.kind, spec.root, mode, download)
    return DataBundle(train, val, classes, name=str(spec), val_split="test")
