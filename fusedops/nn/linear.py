import torch

from .. import ops


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` computed by fusedops kernels.

    A subclass of ``torch.nn.Linear``: same constructor, parameters (``weight``, ``bias``),
    initialisation and state_dict, so ``load_state_dict`` from a torch Linear (and back) just
    works and ``isinstance(m, torch.nn.Linear)`` holds.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.linear(input, self.weight, self.bias)
