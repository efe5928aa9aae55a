"""Convolutional classifiers: blocks of Conv2d -> ReLU -> MaxPool2d(2), then Linear layers.

`CNN.small()`:  Conv(32, 3x3) - ReLU - MaxPool(2) - Flatten - Dense(128) - ReLU - Dense(10)
`CNN.mnist()`:  Conv(32, 3x3, same) - ReLU - MaxPool(2) - Conv(64, 3x3, same) - ReLU -
                MaxPool(2) - Flatten - Dense(64) - ReLU - Dense(10)
With no arguments both take 1x28x28 images and give 10 classes; in_channels, image_size and
num_classes are arguments (the digits example passes image_size=8).
"""
from typing import Sequence, Tuple, Union

import torch
from torch import nn

from ._layers import check_labels, check_positive, layers

_Size = Union[int, Tuple[int, int]]


class CNN(nn.Module):
    """``channels[i]`` output channels per conv block (kernel_size, padding; each block is
    conv -> ReLU -> 2x2 max pool), then Linear layers of ``hidden`` sizes with ReLU, then the
    classifier. Parameters: `convs.i`, `fcs.i` (the last is the classifier)."""

    def __init__(self, channels: Sequence[int] = (32,), hidden: Sequence[int] = (128,),
                 kernel_size: int = 3, padding: int = 0, in_channels: int = 1,
                 image_size: _Size = 28, num_classes: int = 10, backend: str = "fusedops"):
        super().__init__()
        channels, hidden = list(channels), list(hidden)
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        check_positive("CNN", in_channels=in_channels, num_classes=num_classes,
                       kernel_size=kernel_size, image_height=h, image_width=w,
                       **{f"channels[{i}]": c for i, c in enumerate(channels)},
                       **{f"hidden[{i}]": c for i, c in enumerate(hidden)})
        self.kn = layers(backend, "CNN")
        self.backend = backend
        self.input_shape = (in_channels, h, w)
        convs, c = [], in_channels
        for out in channels:
            convs.append(self.kn.Conv2d(c, out, kernel_size, padding=padding))
            h = (h + 2 * padding - kernel_size + 1) // 2
            w = (w + 2 * padding - kernel_size + 1) // 2
            if h < 1 or w < 1:
                raise ValueError(f"fusedops.models.CNN: image_size {image_size} is too small for "
                                 f"{len(channels)} conv(k={kernel_size}, padding={padding}) + "
                                 f"pool(2) blocks")
            c = out
        self.convs = nn.ModuleList(convs)
        dims = [c * h * w, *hidden, num_classes]
        self.fcs = nn.ModuleList(self.kn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    @classmethod
    def small(cls, in_channels: int = 1, image_size: _Size = 28, num_classes: int = 10,
              backend: str = "fusedops") -> "CNN":
        """Conv(32, 3x3) - ReLU - MaxPool(2) - Flatten - Dense(128) - ReLU - Dense(classes)."""
        return cls((32,), (128,), 3, 0, in_channels, image_size, num_classes, backend)

    @classmethod
    def mnist(cls, in_channels: int = 1, image_size: _Size = 28, num_classes: int = 10,
              backend: str = "fusedops") -> "CNN":
        """Conv(32) - Pool - Conv(64) - Pool - Flatten - Dense(64) - Dense(classes), 3x3
        convolutions with 'same' padding, ReLU after each conv and the hidden Dense."""
        return cls((32, 64), (64,), 3, 1, in_channels, image_size, num_classes, backend)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden Dense layer's output (the classifier's input)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"fusedops.models.CNN: input must be [N, {', '.join(map(str, self.input_shape))}], "
                             f"got shape {list(x.shape)}")
        for conv in self.convs:
            x = self.kn.conv2d(x, conv.weight, conv.bias, 1, conv.padding)
            x = self.kn.max_pool2d(self.kn.activation(x, "relu"), 2)
        x = x.flatten(1)
        for fc in self.fcs[:-1]:
            x = self.kn.linear(x, fc, "relu")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kn.linear(self.features(x), self.fcs[-1])

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross entropy against class labels (the classifier fused with the loss)."""
        check_labels(y, self.fcs[-1].out_features, "CNN")
        h = self.features(x)
        if y.shape != h.shape[:1]:
            raise ValueError(f"fusedops.models.CNN: labels must have shape [{h.shape[0]}], got "
                             f"{list(y.shape)}")
        return self.kn.head_loss(h, self.fcs[-1], y)
