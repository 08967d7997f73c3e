"""irconvert: turn a trained PyTorch network into an IR-Net binary network."""

from irconvert.config import BinarizeConfig, EDEConfig
from irconvert.convert import ConversionReport, binarize, binarize_, plan, unbinarize_
from irconvert.errors import IRConvertError
from irconvert.export import freeze
from irconvert.export import load_packed as load
from irconvert.functional import ede_schedule
from irconvert.nn import IRConv2d, IRLinear, set_ede
from irconvert.train.posttrain import post_train
from irconvert.version import __version__

__all__ = [
    "BinarizeConfig",
    "ConversionReport",
    "EDEConfig",
    "IRConv2d",
    "IRConvertError",
    "IRLinear",
    "__version__",
    "binarize",
    "binarize_",
    "ede_schedule",
    "freeze",
    "load",
    "plan",
    "post_train",
    "set_ede",
    "unbinarize_",
]
