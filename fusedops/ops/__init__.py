"""Functional API: each function mirrors the torch function it replaces and calls the
operator of the same name in torch.ops.fusedops (autograd and fake registrations live beside
each family)."""
from .linear import linear, matmul
from .conv import conv2d, max_pool2d

__all__ = ["linear", "matmul", "conv2d", "max_pool2d"]
