"""Logistic regression: one Linear layer trained on the log loss of a sigmoid (binary) or a
softmax (multinomial)."""
import torch
from torch import nn

from ._layers import check_labels, check_positive, layers
from .linear_regression import _check_features


class LogisticRegression(nn.Module):
    """Logistic regression. ``num_classes=2`` (binary): one logit, P(y=1) = sigmoid(logit),
    binary log loss; ``num_classes > 2`` (multinomial): one logit per class, softmax, cross
    entropy. `forward` gives logits ([N] binary, [N, C] multinomial), `predict_proba`
    probabilities (binary: of class 1), `predict` labels, `loss` the log loss."""

    def __init__(self, in_features: int, num_classes: int = 2, backend: str = "fusedops"):
        super().__init__()
        check_positive("LogisticRegression", in_features=in_features)
        if type(num_classes) is not int or num_classes < 2:
            raise ValueError(f"fusedops.models.LogisticRegression: num_classes must be an "
                             f"integer >= 2, got {num_classes!r}")
        self.kn = layers(backend, "LogisticRegression")
        self.backend = backend
        self.num_classes = num_classes
        self.linear = self.kn.Linear(in_features, 1 if num_classes == 2 else num_classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.linear.in_features, "LogisticRegression")
        z = self.kn.linear(x, self.linear)
        return z.squeeze(1) if self.binary else z

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        z = self(x)
        return self.kn.sigmoid(z) if self.binary else self.kn.softmax(z, -1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        z = self(x)
        return (z > 0).long() if self.binary else z.argmax(-1)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean log loss; y holds class labels in [0, num_classes)."""
        check_labels(y, self.num_classes, "LogisticRegression")
        z = self(x)
        if y.shape != z.shape[:1]:
            raise ValueError(f"fusedops.models.LogisticRegression: labels must have shape "
                             f"[{z.shape[0]}], got {list(y.shape)}")
        if self.binary:
            return self.kn.binary_cross_entropy_with_logits(z, y.to(z.dtype))
        return self.kn.cross_entropy(z, y)
