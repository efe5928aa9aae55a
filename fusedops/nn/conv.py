import torch

from .. import ops


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fusedops kernels.

    A subclass of ``torch.nn.Conv2d``: same constructor, parameters (``weight``, ``bias``),
    initialisation, state_dict and repr. ``padding_mode`` must be ``"zeros"``; the other
    modes raise ValueError.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(
                "fusedops.nn.Conv2d: only padding_mode='zeros' is supported, got "
                f"{padding_mode!r} (use torch.nn.Conv2d for 'reflect', 'replicate' or 'circular')"
            )
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(
                f"fusedops.nn.Conv2d: only padding_mode='zeros' is supported, got {self.padding_mode!r}"
            )
        return ops.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                          self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by fusedops kernels (same constructor and repr)."""

    def forward(self, input: torch.Tensor):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode, self.return_indices)
