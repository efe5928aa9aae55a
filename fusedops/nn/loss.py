"""Loss modules: subclasses of their torch.nn counterparts (same constructor, including the
deprecated size_average/reduce arguments, the `weight`/`pos_weight` buffers and state_dict),
with the forward pass in fusedops kernels."""
import torch

from .. import ops


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by ``fusedops.ops.cross_entropy``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ops.cross_entropy(input, target, weight=self.weight,
                                 ignore_index=self.ignore_index, reduction=self.reduction,
                                 label_smoothing=self.label_smoothing)


class MSELoss(torch.nn.MSELoss):
    """``torch.nn.MSELoss`` computed by ``fusedops.ops.mse_loss``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ops.mse_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by
    ``fusedops.ops.binary_cross_entropy_with_logits``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ops.binary_cross_entropy_with_logits(input, target, self.weight,
                                                    reduction=self.reduction,
                                                    pos_weight=self.pos_weight)
