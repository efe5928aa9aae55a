"""What the fusedops optimizers share: grouping a param group's tensors by device and dtype
(one fused op call per group), the step counter as torch creates it, argument checks."""
import torch


def scalar_dtype(fused=None):
    """The dtype of the `step` counter as torch.optim creates it."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def as_float(value, what, owner):
    """A float hyperparameter from a float or a 1-element tensor (read once per step)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"fusedops.optim.{owner}: Tensor {what} must be 1-element")
        return float(value.item())
    return float(value)


def real_view(t):
    """Complex tensors are updated as pairs of reals (the update is elementwise)."""
    return torch.view_as_real(t) if torch.is_complex(t) else t


def check_dense_grad(p, owner):
    if p.grad.is_sparse:
        raise RuntimeError(
            f"fusedops.optim.{owner} does not support sparse gradients (got a sparse grad of "
            f"shape {tuple(p.grad.shape)})"
        )


def unsupported_differentiable(owner):
    return ValueError(
        f"fusedops.optim.{owner}: differentiable=True is not supported (the fused step runs "
        "outside autograd); use torch.optim for differentiable optimization"
    )
