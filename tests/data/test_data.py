"""Data specs, normalisation, the resumable sampler and the GPU (any-device) cache."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from irconvert.config import DataConfig
from irconvert.data import (
    GPUCachedLoader,
    ResumableSampler,
    open_data,
    parse_data_spec,
    resolve_normalization,
)
from irconvert.data.datasets import BadImageError, first_image
from irconvert.data.loaders import (
    AugmentedDataset,
    build_transform,
    collate_readable,
    images_as_uint8,
    make_loader,
)
from irconvert.errors import ConfigError, DataError
from tests._train_helpers import make_imagefolder


def test_parse_data_spec(tmp_path: Path) -> None:
    assert parse_data_spec("cifar10:/x").kind == "cifar10"
    assert parse_data_spec("imagefolder:/x").root == Path("/x")
    assert parse_data_spec(str(tmp_path)).kind == "imagefolder"
    assert parse_data_spec("digits").kind == "digits"
    with pytest.raises(DataError, match="unknown data kind 'mnist'; allowed: imagefolder"):
        parse_data_spec("mnist:/x")


def test_imagefolder_splits_and_errors(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", train=2, val=1, val_name="test")
    bundle = open_data(f"imagefolder:{root}")
    assert bundle.val_split == "test" and bundle.num_classes == 4
    assert bundle.train is not None and len(bundle.train) == 8  # type: ignore[arg-type]
    img, label = bundle.val[0]
    assert img.mode == "RGB" and label == 0
    assert open_data(str(root), channels=1).val[0][0].mode == "L"
    with pytest.raises(DataError, match="data folder not found"):
        open_data(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no val/ folder inside"):
        open_data(f"imagefolder:{root}", split="val")


def test_cifar_without_download_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pass --download"):
        open_data(f"cifar10:{tmp_path}")


def test_normalization_sources() -> None:
    from irconvert.models import build_model

    cfg = DataConfig()
    mean, std = resolve_normalization(cfg, build_model("cifar_resnet20"))
    assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)

    class WithCfg(torch.nn.Module):
        pretrained_cfg: ClassVar[dict[str, tuple[float, ...]]] = {
            "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

    assert resolve_normalization(cfg, WithCfg()) == ((0.5,) * 3, (0.5,) * 3)
    explicit = DataConfig(mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    assert resolve_normalization(explicit, WithCfg())[0] == (0.1, 0.2, 0.3)
    with pytest.raises(ConfigError, match="model takes 2-channel images"):
        resolve_normalization(explicit, None, channels=2)


def test_resumable_sampler_skips_and_matches_distributed_order() -> None:
    s = ResumableSampler(list(range(10)),  # type: ignore[arg-type]
                          seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full
    r0 = ResumableSampler(list(range(10)),  # type: ignore[arg-type]
                          num_replicas=2, rank=0, seed=5)
    r1 = ResumableSampler(list(range(10)),  # type: ignore[arg-type]
                          num_replicas=2, rank=1, seed=5)
    assert sorted(list(r0) + list(r1)) == list(range(10))


def test_gpu_cache_augments_deterministically(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", train=3, val=1)
    bundle = open_data(str(root))
    assert bundle.train is not None
    images, labels = images_as_uint8(bundle.train)
    assert images.shape == (12, 3, 8, 8) and images.dtype == torch.uint8
    cfg = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop=8, padding=2)

    def batches(epoch: int, skip: int = 0) -> list[torch.Tensor]:
        loader = GPUCachedLoader(images, labels, cfg, cfg.mean, cfg.std,  # type: ignore[arg-type]
                                 batch_size=4, train=True, seed=1, device=torch.device("cpu"))
        loader.sampler.set_epoch(epoch, skip=skip)
        return [x for x, _ in loader]

    a, b = batches(0), batches(0)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(batches(0, skip=4)[0], a[1])  # resuming mid-epoch
    assert not torch.equal(batches(1)[0], a[0])
    plain = GPUCachedLoader(images, labels, cfg, cfg.mean, cfg.std,  # type: ignore[arg-type]
                            batch_size=12, train=False, seed=1, device=torch.device("cpu"))
    x, y = next(iter(plain))
    expected = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected) and torch.equal(y, labels)
    with pytest.raises(ConfigError, match="gpu_cache"):
        GPUCachedLoader(images, labels, DataConfig(color_jitter=(0.1, 0.1, 0.1, 0.1)),
                        (0.5,) * 3, (0.5,) * 3, batch_size=4, train=True, seed=0,
                        device=torch.device("cpu"))


def test_digits_split_is_fixed() -> None:
    a, b = open_data("digits"), open_data("digits")
    assert a.train is not None
    assert len(a.train) == 1437 and len(a.val) == 360  # type: ignore[arg-type]
    assert a.val.targets == b.val.targets  # type: ignore[attr-defined]


def _spoil(root: Path) -> list[Path]:
    """A truncated PNG in train/ and a text file named .jpg in val/."""
    cut = root / "train" / "class1" / "0.png"
    cut.write_bytes(cut.read_bytes()[:40])
    text = root / "val" / "class2" / "notes.jpg"
    text.write_text("not an image")
    return [cut, text]


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", train=2, val=1)
    cut, _ = _spoil(root)
    bundle = open_data(f"imagefolder:{root}")
    assert bundle.train is not None
    index = [p for p, _ in bundle.train.folder.samples].index(str(cut))  # type: ignore[attr-defined]
    with pytest.raises(BadImageError, match="--skip-bad-images") as err:
        bundle.train[index]
    assert str(err.value).startswith(f"{cut}: unreadable image (")
    assert bundle.bad_paths() == [str(cut)]


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_files_stop_through_a_loader_is_one_line(tmp_path: Path, workers: int) -> None:
    # Regression: a worker re-raised it as "Caught OSError in DataLoader worker
    # process 0" plus a traceback, naming no file.
    root = make_imagefolder(tmp_path / "d", train=2, val=1)
    cut, _ = _spoil(root)
    bundle = open_data(f"imagefolder:{root}")
    tf = build_transform(DataConfig(), (0.5,) * 3, (0.25,) * 3, train=False)
    loader = make_loader(AugmentedDataset(bundle.train, tf), batch_size=4, train=False,  # type: ignore[arg-type]
                         seed=0, workers=workers, pin_memory=False)
    with pytest.raises(BadImageError) as err:
        list(loader)
    assert str(err.value).startswith(f"{cut}: unreadable image") and "\n" not in str(err.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_files_skip_leaves_them_out_and_counts_them(tmp_path: Path, workers: int) -> None:
    root = make_imagefolder(tmp_path / "d", train=2, val=1)
    cut, text = _spoil(root)
    bundle = open_data(f"imagefolder:{root}", bad_files="skip")
    tf = build_transform(DataConfig(), (0.5,) * 3, (0.25,) * 3, train=False)
    seen = 0
    for split in (bundle.train, bundle.val):
        loader = make_loader(AugmentedDataset(split, tf), batch_size=3, train=False,  # type: ignore[arg-type]
                             seed=0, workers=workers, pin_memory=False)
        seen += sum(len(y) for _, y in loader)
    assert seen == 8 + 5 - 2  # every readable image (val/ has notes.jpg too), once
    # found by a worker process, counted here (a shared-memory flag per sample)
    assert sorted(bundle.bad_paths()) == sorted([str(cut), str(text)])


def test_in_memory_path_names_or_skips_bad_files_alike(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", train=2, val=1)
    cut, _ = _spoil(root)
    bundle = open_data(f"imagefolder:{root}")
    with pytest.raises(BadImageError, match=f"^{cut}: unreadable image"):
        images_as_uint8(bundle.train)  # type: ignore[arg-type]
    bundle.set_bad_files("skip")
    images, labels = images_as_uint8(bundle.train)  # type: ignore[arg-type]
    assert images.shape[0] == labels.shape[0] == 7
    assert bundle.bad_paths() == [str(cut)]


def test_a_batch_with_no_readable_image_stops() -> None:
    with pytest.raises(DataError, match="all 2 images of a batch are unreadable"):
        collate_readable([None, None])
    _, y = collate_readable([None, (torch.zeros(1), 3)])
    assert y.tolist() == [3]


def test_an_image_too_large_to_decode_is_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    root = make_imagefolder(tmp_path / "d", train=1, val=1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 images are now "bombs"
    bundle = open_data(f"imagefolder:{root}")
    with pytest.raises(BadImageError, match=r"unreadable image .*decompression bomb"):
        bundle.val[0]


def test_first_image_passes_over_skipped_files() -> None:
    # In skip mode an unreadable file's sample is None: the first image is the first real one.
    image = object()
    assert first_image([None, None, (image, 3)]) is image  # type: ignore[arg-type]
    assert first_image([None]) is None  # type: ignore[arg-type]
    assert first_image([]) is None  # type: ignore[arg-type]
