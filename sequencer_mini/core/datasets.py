"""Facts about the data sets that both the models and the loaders need.

The models report them in timm's ``pretrained_cfg`` (the size and normalisation a preset expects) and the loaders
normalise with them, so they live below both layers, here, once.
"""
from __future__ import annotations

__all__ = ["MEAN_STD", "INPUT_SIDE"]

#: Per-channel statistics of the training sets, used to normalise inputs to ~zero mean, unit std.
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # Imagenette, Tiny-ImageNet
}

#: The image side each data set's presets are built for (timm's ``input_size``).
INPUT_SIDE: dict[str, int] = {"imagenet": 224, "fashion_mnist": 28, "cifar10": 32}
