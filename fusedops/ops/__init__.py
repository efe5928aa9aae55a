"""Functional API: each function mirrors the torch function it replaces and calls the
operator of the same name in torch.ops.fusedops (autograd and fake registrations live beside
each family)."""
from .attention import scaled_dot_product_attention
from .linear import linear, matmul

__all__ = ["linear", "matmul", "scaled_dot_product_attention"]
