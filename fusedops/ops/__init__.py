"""Functional API: each function mirrors the torch function it replaces and calls the
operator of the same name in torch.ops.fusedops (autograd and fake registrations live beside
each family)."""
from .linear import linear, matmul
from .loss import binary_cross_entropy_with_logits, cross_entropy, linear_cross_entropy, mse_loss

__all__ = [
    "linear",
    "matmul",
    "cross_entropy",
    "linear_cross_entropy",
    "mse_loss",
    "binary_cross_entropy_with_logits",
]
