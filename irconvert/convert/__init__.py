"""Conversion of float models to IR-Net models: table, selection, surgery."""

from irconvert.convert import blocks  # noqa: F401  (registers the block transforms)
from irconvert.convert.report import ConversionReport, LayerRow
from irconvert.convert.select import Decision, decide
from irconvert.convert.surgery import (
    BLOCK_TRANSFORMS,
    binarize,
    binarize_,
    plan,
    unbinarize_,
)
from irconvert.convert.table import DEFAULT_LAYER_MAP
from irconvert.models.heads import find_classifier, find_stem

__all__ = [
    "BLOCK_TRANSFORMS",
    "DEFAULT_LAYER_MAP",
    "ConversionReport",
    "Decision",
    "LayerRow",
    "binarize",
    "binarize_",
    "decide",
    "find_classifier",
    "find_stem",
    "plan",
    "unbinarize_",
]
