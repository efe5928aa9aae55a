"""Activation modules: subclasses of their torch.nn counterparts (same constructor, repr and
isinstance), with the forward pass in fusedops kernels."""
import torch

from .. import ops


class GELU(torch.nn.GELU):
    """``torch.nn.GELU(approximate='none')``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.gelu(input, approximate=self.approximate)


class ReLU(torch.nn.ReLU):
    """``torch.nn.ReLU(inplace=False)``; ``inplace=True`` is accepted but computes out of
    place (the input is left unchanged)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.relu(input)


class Sigmoid(torch.nn.Sigmoid):
    """``torch.nn.Sigmoid()``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.sigmoid(input)


class Tanh(torch.nn.Tanh):
    """``torch.nn.Tanh()``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.tanh(input)


class Softmax(torch.nn.Softmax):
    """``torch.nn.Softmax(dim=None)``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.softmax(input, self.dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """``torch.nn.LogSoftmax(dim=None)``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.log_softmax(input, self.dim)
