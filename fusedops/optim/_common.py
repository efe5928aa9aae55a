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


def state_like(p):
    """A new optimizer state tensor for p: zeros of p's shape and layout, in float32 for a
    bfloat16 parameter (the update is computed in fp32 and the parameter rounded once; a bf16
    state would lose most of a small update), else in p's dtype."""
    dtype = torch.float32 if p.dtype == torch.bfloat16 else p.dtype
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def fit_state(state, key, p):
    """The state tensor `key` of p in the dtype state_like gives (a bfloat16 state loaded from
    torch's optimizer, which keeps a bf16 parameter's state in bf16, is widened once)."""
    t = state[key]
    if p.dtype == torch.bfloat16 and t.dtype != torch.float32:
        t = state[key] = t.float()
    return t
