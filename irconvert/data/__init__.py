"""Data sets, transforms and loaders for fine-tuning and evaluation."""

from irconvert.data.datasets import KINDS, DataBundle, DataSpec, open_data, parse_data_spec
from irconvert.data.loaders import (
    AugmentedDataset,
    GPUCachedLoader,
    ResumableSampler,
    build_transform,
    make_loader,
    resolve_normalization,
)

__all__ = [
    "KINDS",
    "AugmentedDataset",
    "DataBundle",
    "DataSpec",
    "GPUCachedLoader",
    "ResumableSampler",
    "build_transform",
    "make_loader",
    "open_data",
    "parse_data_spec",
    "resolve_normalization",
]
