"""gelu, relu, sigmoid, tanh, softmax, log_softmax, swiglu: the functions, their autograd formulas and
fake (meta) shapes.

Backward passes run in our kernels (`<op>_backward`): GELU's recomputes the derivative from
the saved input in one pass; the others read the saved output. Higher-order gradients
(`create_graph=True`) go through composite torch formulas of the saved tensors, which are
differentiable (the saved output's own gradient runs through our op again).
"""
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from ._autograd import composite_grads
from ._registry import register_autocast_cpu_keep, register_fake


_ops = torch.ops.fusedops
APPROXIMATIONS = ("none", "tanh")


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``torch.nn.functional.gelu``: ``x * Phi(x)`` (approximate="none", erf) or its tanh
    approximation (approximate="tanh")."""
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"fusedops.gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _ops.gelu(input, approximate)


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.relu``. ``inplace=True`` is accepted for compatibility but the
    result is always a new tensor (the input is left unchanged)."""
    return _ops.relu(input)


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid``."""
    return _ops.sigmoid(input)


def tanh(input: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``."""
    return _ops.tanh(input)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SwiGLU, ``F.silu(a) * b``, in one pass: the gated MLP of Llama-family models
    (``act(gate_proj(x)) * up_proj(x)``). ``a`` and ``b`` have one shape; they may be two
    tensors or two views of one (``x.chunk(2, -1)``), read in place when each row (the last
    dimension) is contiguous. The backward gives the gradients of both in one pass."""
    return _ops.swiglu(a, b)


def _softmax_dim(ndim: int, name: str) -> int:
    # torch's rule for the deprecated implicit dim
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: torch.Tensor, dim: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``torch.nn.functional.softmax`` along ``dim`` (NaN in a slice, or a slice whose
    maximum is infinite, gives NaN there, as torch). ``dtype`` casts the input first."""
    if dim is None:
        dim = _softmax_dim(input.dim(), "softmax")
    if dtype is not None:
        input = input.to(dtype)
    return _ops.softmax(input, dim)


def log_softmax(input: torch.Tensor, dim: Optional[int] = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``torch.nn.functional.log_softmax`` along ``dim``; ``dtype`` casts the input first."""
    if dim is None:
        dim = _softmax_dim(input.dim(), "log_softmax")
    if dtype is not None:
        input = input.to(dtype)
    return _ops.log_softmax(input, dim)


# ---- fake (meta) implementations -------------------------------------------------------------


def _check_dim(input, dim, op):
    nd = max(input.dim(), 1)
    torch._check(-nd <= dim < nd, lambda: f"fusedops.{op}: dim must be in [{-nd}, {nd - 1}], got {dim}")


def _same_shape(grad, saved, op):
    torch._check(grad.shape == saved.shape, lambda: f"fusedops.{op}: grad_output must have the shape of its input")
    return saved.new_empty(saved.shape)


for _name in ("relu", "sigmoid", "tanh"):
    register_fake(f"fusedops::{_name}")(lambda input: input.new_empty(input.shape))
    register_fake(f"fusedops::{_name}_backward")(
        lambda grad_output, output, _n=_name: _same_shape(grad_output, output, f"{_n}_backward"))


@register_fake("fusedops::gelu")
def _gelu_fake(input, approximate="none"):
    return input.new_empty(input.shape)


@register_fake("fusedops::gelu_backward")
def _gelu_backward_fake(grad_output, input, approximate="none"):
    return _same_shape(grad_output, input, "gelu_backward")


for _name in ("softmax", "log_softmax"):
    def _fwd(input, dim, _n=_name):
        _check_dim(input, dim, _n)
        return input.new_empty(input.shape)

    def _bwd(grad_output, output, dim, _n=_name):
        _check_dim(output, dim, f"{_n}_backward")
        return _same_shape(grad_output, output, f"{_n}_backward")

    register_fake(f"fusedops::{_name}")(_fwd)
    register_fake(f"fusedops::{_name}_backward")(_bwd)


def _swiglu_check(a, b, op, b_name="b"):
    torch._check(a.dim() >= 1, lambda: f"fusedops.{op}: a must have at least 1 dimension, got a 0-d tensor")
    torch._check(b.shape == a.shape,
                 lambda: f"fusedops.{op}: {b_name} must have the shape of a {list(a.shape)}, got {list(b.shape)}")
    torch._check(b.dtype == a.dtype, lambda: f"fusedops.{op}: {b_name} must have the dtype of a ({a.dtype}), got {b.dtype}")


@register_fake("fusedops::swiglu")
def _swiglu_fake(a, b):
    _swiglu_check(a, b, "swiglu")
    return a.new_empty(a.shape)


@register_fake("fusedops::swiglu_backward")
def _swiglu_backward_fake(grad_output, a, b, output_mask):
    _swiglu_check(a, b, "swiglu_backward")
    _swiglu_check(a, grad_output, "swiglu_backward", "grad_output")
    return (a.new_empty(a.shape) if output_mask[0] else None, a.new_empty(a.shape) if output_mask[1] else None)


# ---- autograd -------------------------------------------------------------------------------
# Each backward: our kernel, or under create_graph a differentiable formula of the saved tensor.

def _gelu_setup(ctx, inputs, output):
    input, approximate = (list(inputs) + ["none"])[:2]
    ctx.approximate = approximate
    ctx.save_for_backward(input)


def _gelu_backward(ctx, grad):
    (input,) = ctx.saved_tensors
    if torch.is_grad_enabled():
        fn = lambda x: F.gelu(x, approximate=ctx.approximate)  # noqa: E731
        return composite_grads(fn, (input,), [True], grad)[0], None
    return _ops.gelu_backward(grad, input, ctx.approximate), None


torch.library.register_autograd("fusedops::gelu", _gelu_backward, setup_context=_gelu_setup)


def _save_output(ctx, inputs, output):
    ctx.dim = inputs[1] if len(inputs) > 1 else None
    ctx.save_for_backward(output)


_COMPOSITE = {  # grad, output (, dim) -> grad_input, differentiable in both
    "relu": lambda g, y, d: g * (y > 0).to(g.dtype),
    "sigmoid": lambda g, y, d: g * y * (1 - y),
    "tanh": lambda g, y, d: g * (1 - y * y),
    "softmax": lambda g, y, d: y * (g - (g * y).sum(d, keepdim=True)),
    "log_softmax": lambda g, y, d: g - torch.exp(y) * g.sum(d, keepdim=True),
}


def _make_backward(name, with_dim):
    backward_op = getattr(_ops, f"{name}_backward")

    def backward(ctx, grad):
        (output,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            gx = _COMPOSITE[name](grad, output, ctx.dim if output.dim() else None)
        else:
            gx = backward_op(grad, output, ctx.dim) if with_dim else backward_op(grad, output)
        return (gx, None) if with_dim else gx

    return backward


for _name, _with_dim in (("relu", False), ("sigmoid", False), ("tanh", False),
                         ("softmax", True), ("log_softmax", True)):
    torch.library.register_autograd(f"fusedops::{_name}", _make_backward(_name, _with_dim),
                                    setup_context=_save_output)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _swiglu_backward(ctx, grad):
    a, b = ctx.saved_tensors
    nig = [bool(n) for n in ctx.needs_input_grad[:2]]
    if torch.is_grad_enabled():
        return tuple(composite_grads(lambda a, b: F.silu(a) * b, (a, b), nig, grad))
    return _ops.swiglu_backward(grad, a, b, nig)


torch.library.register_autograd("fusedops::swiglu", _swiglu_backward, setup_context=_swiglu_setup)


# ---- autocast -------------------------------------------------------------------------------
# Under CPU autocast the input may be bfloat16 (a linear's output): the bf16 kernels compute in
# fp32 and return bfloat16, as torch's own activations and softmax do.

for _name in ("gelu", "relu", "sigmoid", "tanh", "softmax", "log_softmax"):
    register_autocast_cpu_keep(_name)
# swiglu: a and b of different dtypes are promoted to a common one first, as F.silu(a) * b would
register_autocast_cpu_keep("swiglu", activations=(0, 1))
