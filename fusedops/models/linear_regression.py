"""Linear regression: one Linear layer trained by gradient descent on the mean squared
error."""
import torch
from torch import nn

from ._layers import check_positive, layers


def _check_features(x: torch.Tensor, n: int, model: str) -> None:
    if x.dim() != 2 or x.shape[1] != n:
        raise ValueError(f"fusedops.models.{model}: input must be [N, {n}], got shape "
                         f"{list(x.shape)}")


class LinearRegression(nn.Module):
    """``y = x @ weight.T + bias``, trained on the mean squared error (`loss`). Input [N,
    in_features]; output [N, out_features] ([N] when out_features is 1)."""

    def __init__(self, in_features: int, out_features: int = 1, backend: str = "fusedops"):
        super().__init__()
        check_positive("LinearRegression", in_features=in_features, out_features=out_features)
        self.kn = layers(backend, "LinearRegression")
        self.backend = backend
        self.linear = self.kn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.linear.in_features, "LinearRegression")
        y = self.kn.linear(x, self.linear)
        return y.squeeze(1) if self.linear.out_features == 1 else y

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the prediction for x against y (same shape as forward's)."""
        pred = self(x)
        if y.shape != pred.shape:
            raise ValueError(f"fusedops.models.LinearRegression: target must have shape "
                             f"{list(pred.shape)}, got {list(y.shape)}")
        return self.kn.mse_loss(pred, y.to(pred.dtype))
