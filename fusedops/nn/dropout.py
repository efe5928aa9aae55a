"""Dropout: a subclass of torch.nn.Dropout (same constructor, repr, isinstance), with the
forward pass in fusedops kernels."""
import torch

from .. import ops


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout(p=0.5, inplace=False)``. In eval mode, or with ``p == 0``, the input
    itself is returned (no copy). ``inplace=True`` is accepted but computes out of place (the
    input is left unchanged). The mask comes from a counter-based hash and is regenerated in
    the backward instead of being stored."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.dropout(input, self.p, self.training, self.inplace)
