"""IR-Net layers: thin modules over :mod:`irconvert.functional`."""

from irconvert.nn.act import RPReLU
from irconvert.nn.layers import IRConv2d, IRLayer, IRLinear, set_binarization, set_ede

__all__ = ["IRConv2d", "IRLayer", "IRLinear", "RPReLU", "set_binarization", "set_ede"]
