"""Training techniques for the model set: L1 and L2 penalties, the optimizers of
fusedops.optim (or torch.optim's for side-by-side runs) with weight decay, and early stopping
on the validation loss that restores the best weights. Learning-rate decay is torch's own
schedulers (torch.optim.lr_scheduler), which drive fusedops.optim optimizers unchanged."""
import copy
import math
from typing import Iterable, Optional

import torch
from torch import nn

from .. import optim as fused_optim

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def _weights(module: nn.Module):
    """The matrices and kernels of a module (dim >= 2): penalties leave biases and norms alone."""
    return [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]


def l1_penalty(module: nn.Module, strength: float) -> torch.Tensor:
    """strength * sum |w| over the module's weight matrices and kernels (not biases)."""
    ws = _weights(module)
    if not ws:
        raise ValueError("fusedops.models.l1_penalty: the module has no weight matrices")
    return strength * sum(w.abs().sum() for w in ws)


def l2_penalty(module: nn.Module, strength: float) -> torch.Tensor:
    """strength * sum w^2 over the module's weight matrices and kernels (not biases)."""
    ws = _weights(module)
    if not ws:
        raise ValueError("fusedops.models.l2_penalty: the module has no weight matrices")
    return strength * sum(w.pow(2).sum() for w in ws)


def make_optimizer(name: str, params: Iterable, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, backend: str = "fusedops") -> torch.optim.Optimizer:
    """"sgd" (plain gradient descent), "momentum" (SGD with momentum), "adam" (L2 weight decay
    added to the gradient), "adamw" (decoupled weight decay); fusedops.optim's fused
    optimizers, or torch.optim's with backend="torch"."""
    if name not in OPTIMIZERS:
        raise ValueError(f"fusedops.models.make_optimizer: name must be one of {OPTIMIZERS}, got "
                         f"{name!r}")
    if backend not in ("fusedops", "torch"):
        raise ValueError(f"fusedops.models.make_optimizer: backend must be 'fusedops' or 'torch', "
                         f"got {backend!r}")
    lib = fused_optim if backend == "fusedops" else torch.optim
    if name == "sgd":
        return lib.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return lib.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return lib.Adam(params, lr=lr, weight_decay=weight_decay)
    return lib.AdamW(params, lr=lr, weight_decay=weight_decay)


class EarlyStopping:
    """Stops training when the validation loss has not improved by more than `min_delta` for
    `patience` checks in a row, keeping a copy of the best weights:

        stopper = EarlyStopping(patience=5)
        for epoch in ...:
            ...
            if stopper.step(val_loss, model):
                break
        stopper.restore(model)      # the weights of the best validation loss
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0):
        if type(patience) is not int or patience < 1:
            raise ValueError(f"fusedops.models.EarlyStopping: patience must be a positive "
                             f"integer, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"fusedops.models.EarlyStopping: min_delta must be >= 0, got "
                             f"{min_delta}")
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_step: Optional[int] = None
        self.best_state: Optional[dict] = None
        self.checks = 0
        self.bad = 0

    def step(self, val_loss: float, model: nn.Module) -> bool:
        """Records a validation loss; True when training should stop."""
        val_loss = float(val_loss)
        if math.isnan(val_loss):
            raise ValueError("fusedops.models.EarlyStopping: the validation loss is NaN")
        if val_loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad = val_loss, self.checks, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
        self.checks += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Loads the best weights seen into `model`."""
        if self.best_state is None:
            raise RuntimeError("fusedops.models.EarlyStopping: no validation loss recorded yet")
        model.load_state_dict(self.best_state)
