"""A small VGG-style convolutional network, for demos and quick experiments.

Stages of 3x3 conv + BatchNorm + ReLU, global average pooling and a linear
head. Unlike RegNet or ResNet it does not downsample 4x in its stem, so it
learns quickly on tiny images (the 32x32 demo shapes): the DeiT demo uses it
as the convolutional teacher, as DeiT uses a RegNetY on ImageNet.
"""

import paddle.nn as nn

from ..contract import ModelInfo
from ..registry import BACKBONES, MODELS
from .layers import torch_default_init_


class ConvNet(nn.Layer):
    """Args:
        widths: output channels of each conv layer.
        strides: stride of each conv layer (same length as ``widths``).
        in_chans: input channels.
        num_classes: classifier outputs; 0 returns the pooled features.
    """

    def __init__(self, widths=(24, 48, 48, 96, 128), strides=(1, 2, 1, 2, 2), in_chans=3, num_classes=1000):
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError(f"widths and strides must have the same length, got {len(widths)} and {len(strides)}")
        layers, channels = [], in_chans
        for width, stride in zip(widths, strides):
            layers += [nn.Conv2D(channels, width, 3, stride, 1, bias_attr=False), nn.BatchNorm2D(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self.info = ModelInfo("classification", num_classes)  # any input size
        for layer in self.sublayers():
            if isinstance(layer, (nn.Conv2D, nn.Linear)):
                torch_default_init_(layer)

    def forward(self, x):
        return self.head(self.features(x).mean(axis=[2, 3]))


MODELS.register(ConvNet)
BACKBONES.register(ConvNet)
