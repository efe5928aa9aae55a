"""A multilayer perceptron: Linear layers with ReLU or GELU between them (fused into the
Linear's GEMM epilogue on the fusedops backend), optional batch norm and dropout."""
from typing import Sequence

import torch
from torch import nn

from ._layers import check_activation, check_labels, check_positive, layers

INITS = ("default", "kaiming", "xavier")


def init_linear(fc: nn.Module, init: str, activation: str) -> None:
    """"kaiming": He normal for ReLU-family layers (fan_in); "xavier": Glorot uniform;
    "default": torch's own; biases start at zero except with "default"."""
    if init == "default":
        return
    with torch.no_grad():
        if init == "kaiming":
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(fc.weight)
        if fc.bias is not None:
            fc.bias.zero_()


class MLP(nn.Module):
    """in_features -> hidden_sizes[0] -> ... -> out_features. Each hidden layer is
    Linear [-> BatchNorm1d] -> activation -> Dropout(dropout). `forward` gives logits,
    `loss(x, y)` the cross entropy against class labels. Parameters: `layers.i` (Linear),
    `norms.i` (BatchNorm1d, with batch_norm=True)."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int,
                 activation: str = "relu", dropout: float = 0.0, batch_norm: bool = False,
                 init: str = "kaiming", backend: str = "fusedops"):
        super().__init__()
        sizes = list(hidden_sizes)
        check_positive("MLP", in_features=in_features, out_features=out_features,
                       **{f"hidden_sizes[{i}]": h for i, h in enumerate(sizes)})
        check_activation(activation, "MLP")
        if init not in INITS:
            raise ValueError(f"fusedops.models.MLP: init must be one of {INITS}, got {init!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"fusedops.models.MLP: dropout must be in [0, 1), got {dropout}")
        self.kn = layers(backend, "MLP")
        self.backend, self.activation = backend, activation
        dims = [in_features, *sizes, out_features]
        self.layers = nn.ModuleList(self.kn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for i, fc in enumerate(self.layers):
            init_linear(fc, init, activation if i < len(sizes) else "linear")
        self.norms = nn.ModuleList(self.kn.BatchNorm1d(h) for h in sizes) if batch_norm else None
        self.drop = self.kn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (the classifier's input)."""
        n = self.layers[0].in_features
        if x.dim() != 2 or x.shape[1] != n:
            raise ValueError(f"fusedops.models.MLP: input must be [N, {n}], got shape "
                             f"{list(x.shape)}")
        for i, fc in enumerate(self.layers[:-1]):
            if self.norms is None:
                x = self.kn.linear(x, fc, self.activation)
            else:
                x = self.kn.activation(self.norms[i](self.kn.linear(x, fc)), self.activation)
            x = self.drop(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kn.linear(self.features(x), self.layers[-1])

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross entropy against class labels (the classifier fused with the loss)."""
        check_labels(y, self.layers[-1].out_features, "MLP")
        h = self.features(x)
        if y.shape != h.shape[:1]:
            raise ValueError(f"fusedops.models.MLP: labels must have shape [{h.shape[0]}], got "
                             f"{list(y.shape)}")
        return self.kn.head_loss(h, self.layers[-1], y)
