"""Built-in architectures and the name -> model registry."""

from irconvert.models.cifar import CifarResNet, VGGSmall, cifar_resnet, cifar_resnet18, vgg_small
from irconvert.models.registry import BUILTIN, build_model, builtin_names, torchvision_names

__all__ = [
    "BUILTIN",
    "CifarResNet",
    "VGGSmall",
    "build_model",
    "builtin_names",
    "cifar_resnet",
    "cifar_resnet18",
    "torchvision_names",
    "vgg_small",
]
