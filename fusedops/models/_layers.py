"""The layers and functions the model set is built from, per backend.

`layers("fusedops")` gives fusedops.nn modules and fusedops.ops functions (Linear with the
activation fused into the GEMM epilogue, conv2d, max_pool2d, the recurrent layers, the
Transformer layers, the fused losses); `layers("torch")` gives torch's, so every model runs on
either with the same parameters, names and initialisation (side-by-side runs, twin tests).
"""
import torch
import torch.nn.functional as F

from .. import nn as fnn
from .. import ops

Dropout, Embedding, BatchNorm1d, BatchNorm2d = fnn.Dropout, fnn.Embedding, fnn.BatchNorm1d, fnn.BatchNorm2d

BACKENDS = ("fusedops", "torch")
ACTIVATIONS = ("relu", "gelu")


class _Fused:
    name = "fusedops"
    Linear, Conv2d, MaxPool2d, LayerNorm = fnn.Linear, fnn.Conv2d, fnn.MaxPool2d, fnn.LayerNorm
    RNN, LSTM, GRU = fnn.RNN, fnn.LSTM, fnn.GRU
    Transformer = fnn.Transformer
    Dropout, Embedding, BatchNorm1d, BatchNorm2d = Dropout, Embedding, BatchNorm1d, BatchNorm2d

    @staticmethod
    def linear(x, fc, activation=None):
        """fc(x), then the activation, fused into the GEMM epilogue."""
        return ops.linear(x, fc.weight, fc.bias, activation=activation)

    @staticmethod
    def activation(x, name):
        return ops.relu(x) if name == "relu" else ops.gelu(x)

    @staticmethod
    def head_loss(x, fc, target):
        """cross_entropy(fc(x), target), -100 ignored, the [N, classes] logits never whole."""
        return ops.linear_cross_entropy(x, fc.weight, target, fc.bias)

    conv2d, max_pool2d = staticmethod(ops.conv2d), staticmethod(ops.max_pool2d)
    cross_entropy = staticmethod(ops.cross_entropy)
    mse_loss = staticmethod(ops.mse_loss)
    binary_cross_entropy_with_logits = staticmethod(ops.binary_cross_entropy_with_logits)
    sigmoid, softmax = staticmethod(ops.sigmoid), staticmethod(ops.softmax)


class _Torch:
    name = "torch"
    Linear, Conv2d, MaxPool2d, LayerNorm = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.MaxPool2d,
                                            torch.nn.LayerNorm)
    RNN, LSTM, GRU = torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU
    Transformer = torch.nn.Transformer
    Dropout, Embedding = torch.nn.Dropout, torch.nn.Embedding
    BatchNorm1d, BatchNorm2d = torch.nn.BatchNorm1d, torch.nn.BatchNorm2d

    @staticmethod
    def linear(x, fc, activation=None):
        y = fc(x)
        return y if activation is None else _Torch.activation(y, activation)

    @staticmethod
    def activation(x, name):
        return F.relu(x) if name == "relu" else F.gelu(x)

    @staticmethod
    def head_loss(x, fc, target):
        return F.cross_entropy(fc(x), target)

    conv2d, max_pool2d = staticmethod(F.conv2d), staticmethod(F.max_pool2d)
    cross_entropy = staticmethod(F.cross_entropy)
    mse_loss = staticmethod(F.mse_loss)
    binary_cross_entropy_with_logits = staticmethod(F.binary_cross_entropy_with_logits)
    sigmoid, softmax = staticmethod(torch.sigmoid), staticmethod(torch.softmax)


def layers(backend: str, model: str):
    """The layer set of `backend` ("fusedops" or "torch"); `model` names the caller in errors."""
    if backend == "fusedops":
        return _Fused
    if backend == "torch":
        return _Torch
    raise ValueError(f"fusedops.models.{model}: backend must be 'fusedops' or 'torch', got "
                     f"{backend!r}")


def check_activation(activation: str, model: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"fusedops.models.{model}: activation must be one of {ACTIVATIONS}, got "
                         f"{activation!r}")
    return activation


def check_positive(model: str, **values) -> None:
    for name, v in values.items():
        if type(v) is not int or v < 1:
            raise ValueError(f"fusedops.models.{model}: {name} must be a positive integer, got "
                             f"{v!r}")


def check_labels(target: torch.Tensor, classes: int, model: str) -> None:
    """Class labels must be integers in [0, classes)."""
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"fusedops.models.{model}: labels must be an integer tensor, got "
                         f"{target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(f"fusedops.models.{model}: labels must be in [0, {classes}), got values "
                         f"in [{int(target.min())}, {int(target.max())}]")
