"""layer_norm and add_layer_norm, rms_norm and add_rms_norm: the functions, their autograd
formulas and fake (meta) shapes.

Training runs the `*_stats` variants, which also return the per-row mean and rstd (marked
non-differentiable) for the backward ops `layer_norm_backward` / `add_layer_norm_backward`;
called directly, `torch.ops.fusedops.layer_norm` recomputes them in its backward. RMSNorm
follows the same scheme with the rstd alone (`rms_norm_stats`, `rms_norm_backward`, ...).
Higher-order gradients (`create_graph=True`) differentiate torch's own composite formulas, so
they are correct to any order but do not run in our kernels.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ._autograd import composite_grads, needs_grad
from ._registry import register_autocast_cpu_keep, register_fake


_ops = torch.ops.fusedops
_Shape = Union[int, Sequence[int], torch.Size]


def _shape(normalized_shape: _Shape) -> List[int]:
    if isinstance(normalized_shape, int):
        return [normalized_shape]
    return list(normalized_shape)


def _wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def layer_norm(
    input: torch.Tensor,
    normalized_shape: _Shape,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``torch.nn.functional.layer_norm``: normalizes over the trailing dimensions
    ``normalized_shape`` (biased variance), then scales by ``weight`` and shifts by ``bias``
    (each optional, of shape ``normalized_shape``)."""
    shape = _shape(normalized_shape)
    if _wants_grad(input, weight, bias):
        return _ops.layer_norm_stats(input, shape, weight, bias, eps)[0]
    return _ops.layer_norm(input, shape, weight, bias, eps)


def add_layer_norm(
    input: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: _Shape,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
):
    """``(layer_norm(input + residual, ...), input + residual)`` in one pass: the residual
    add of a transformer block fused into the LayerNorm that follows it."""
    shape = _shape(normalized_shape)
    if _wants_grad(input, residual, weight, bias):
        out, s, _, _ = _ops.add_layer_norm_stats(input, residual, shape, weight, bias, eps)
        return out, s
    return _ops.add_layer_norm(input, residual, shape, weight, bias, eps)


def rms_norm(
    input: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    eps: Optional[float] = None,
    normalized_shape: Optional[_Shape] = None,
) -> torch.Tensor:
    """``torch.nn.functional.rms_norm``: ``input * rsqrt(mean(input^2) + eps) * weight`` over the
    trailing dimensions ``normalized_shape`` (default: ``weight``'s shape, else the last
    dimension). ``eps=None`` uses the machine epsilon of the arithmetic type (float32's for a
    bfloat16 input), as torch. Statistics are computed in float32 (float64 for float64)."""
    shape = None if normalized_shape is None else _shape(normalized_shape)
    if _wants_grad(input, weight):
        return _ops.rms_norm_stats(input, weight, eps, shape)[0]
    return _ops.rms_norm(input, weight, eps, shape)


def add_rms_norm(
    input: torch.Tensor,
    residual: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    eps: Optional[float] = None,
    normalized_shape: Optional[_Shape] = None,
):
    """``(rms_norm(input + residual, ...), input + residual)`` in one pass: the residual stream
    of a pre-norm transformer block fused into the RMSNorm that reads it."""
    shape = None if normalized_shape is None else _shape(normalized_shape)
    if _wants_grad(input, residual, weight):
        out, s, _ = _ops.add_rms_norm_stats(input, residual, weight, eps, shape)
        return out, s
    return _ops.add_rms_norm(input, residual, weight, eps, shape)


# ---- fake (meta) implementations -------------------------------------------------------------


def _check(input, normalized_shape, weight, bias, op):
    k = len(normalized_shape)
    torch._check(k >= 1, lambda: f"fusedops.{op}: normalized_shape must have at least 1 dimension")
    torch._check(
        input.dim() >= k and list(input.shape[input.dim() - k:]) == list(normalized_shape),
        lambda: f"fusedops.{op}: input's trailing dimensions must equal normalized_shape "
        f"{list(normalized_shape)}, got input shape {list(input.shape)}",
    )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            torch._check(
                list(t.shape) == list(normalized_shape),
                lambda: f"fusedops.{op}: {name} must have shape normalized_shape",
            )
    return input.shape[: input.dim() - k]


def _stat_dtype(input):
    return torch.float64 if input.dtype == torch.float64 else torch.float32


@register_fake("fusedops::layer_norm")
def _layer_norm_fake(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    _check(input, normalized_shape, weight, bias, "layer_norm")
    return input.new_empty(input.shape)


@register_fake("fusedops::layer_norm_stats")
def _layer_norm_stats_fake(input, normalized_shape, weight, bias, eps):
    lead = _check(input, normalized_shape, weight, bias, "layer_norm_stats")
    d = _stat_dtype(input)
    return input.new_empty(input.shape), input.new_empty(lead, dtype=d), input.new_empty(lead, dtype=d)


def _backward_fake(input, normalized_shape, output_mask, weight=None):
    # the weight and bias gradients in the weight's dtype (the input's without one)
    pd = weight.dtype if weight is not None else input.dtype
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        input.new_empty(normalized_shape, dtype=pd) if output_mask[1] else None,
        input.new_empty(normalized_shape, dtype=pd) if output_mask[2] else None,
    )


@register_fake("fusedops::layer_norm_backward")
def _layer_norm_backward_fake(grad_output, input, normalized_shape, mean, rstd, weight, output_mask):
    _check(input, normalized_shape, weight, None, "layer_norm_backward")
    return _backward_fake(input, normalized_shape, output_mask, weight)


@register_fake("fusedops::add_layer_norm")
def _add_layer_norm_fake(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    _check(input, normalized_shape, weight, bias, "add_layer_norm")
    torch._check(residual.shape == input.shape, lambda: "fusedops.add_layer_norm: residual must have the input's shape")
    return input.new_empty(input.shape), input.new_empty(input.shape)


@register_fake("fusedops::add_layer_norm_stats")
def _add_layer_norm_stats_fake(input, residual, normalized_shape, weight, bias, eps):
    lead = _check(input, normalized_shape, weight, bias, "add_layer_norm_stats")
    torch._check(residual.shape == input.shape,
                 lambda: "fusedops.add_layer_norm_stats: residual must have the input's shape")
    d = _stat_dtype(input)
    return (input.new_empty(input.shape), input.new_empty(input.shape),
            input.new_empty(lead, dtype=d), input.new_empty(lead, dtype=d))


@register_fake("fusedops::add_layer_norm_backward")
def _add_layer_norm_backward_fake(grad_output, grad_sum, sum, normalized_shape, mean, rstd, weight,
                                  output_mask):
    _check(sum, normalized_shape, weight, None, "add_layer_norm_backward")
    return _backward_fake(sum, normalized_shape, output_mask, weight)


def _rms_shape(input, weight, normalized_shape, op):
    if normalized_shape is not None:
        shape = list(normalized_shape)
    elif weight is not None:
        shape = list(weight.shape)
    else:
        torch._check(input.dim() >= 1, lambda: f"fusedops.{op}: input must have at least 1 dimension")
        shape = [input.shape[-1]]
    return shape, _check(input, shape, weight, None, op)


@register_fake("fusedops::rms_norm")
def _rms_norm_fake(input, weight=None, eps=None, normalized_shape=None):
    _rms_shape(input, weight, normalized_shape, "rms_norm")
    return input.new_empty(input.shape)


@register_fake("fusedops::rms_norm_stats")
def _rms_norm_stats_fake(input, weight, eps, normalized_shape):
    _, lead = _rms_shape(input, weight, normalized_shape, "rms_norm_stats")
    return input.new_empty(input.shape), input.new_empty(lead, dtype=_stat_dtype(input))


@register_fake("fusedops::rms_norm_backward")
def _rms_norm_backward_fake(grad_output, input, rstd, weight, normalized_shape, output_mask):
    shape, _ = _rms_shape(input, weight, normalized_shape, "rms_norm_backward")
    return _backward_fake(input, shape, list(output_mask) + [False], weight)[:2]


@register_fake("fusedops::add_rms_norm")
def _add_rms_norm_fake(input, residual, weight=None, eps=None, normalized_shape=None):
    _rms_shape(input, weight, normalized_shape, "add_rms_norm")
    torch._check(residual.shape == input.shape, lambda: "fusedops.add_rms_norm: residual must have the input's shape")
    return input.new_empty(input.shape), input.new_empty(input.shape)


@register_fake("fusedops::add_rms_norm_stats")
def _add_rms_norm_stats_fake(input, residual, weight, eps, normalized_shape):
    _, lead = _rms_shape(input, weight, normalized_shape, "add_rms_norm_stats")
    torch._check(residual.shape == input.shape,
                 lambda: "fusedops.add_rms_norm_stats: residual must have the input's shape")
    return input.new_empty(input.shape), input.new_empty(input.shape), input.new_empty(lead, dtype=_stat_dtype(input))


@register_fake("fusedops::add_rms_norm_backward")
def _add_rms_norm_backward_fake(grad_output, grad_sum, sum, rstd, weight, normalized_shape, output_mask):
    shape, _ = _rms_shape(sum, weight, normalized_shape, "add_rms_norm_backward")
    return _backward_fake(sum, shape, list(output_mask) + [False], weight)[:2]


# ---- autograd -------------------------------------------------------------------------------


def _torch_layer_norm(shape, eps):
    return lambda x, w, b: F.layer_norm(x, shape, w, b, eps)


def _layer_norm_setup(ctx, inputs, output):
    input, shape, weight, bias, eps = inputs
    ctx.shape, ctx.eps = list(shape), eps
    ctx.save_for_backward(input, weight, bias)


def _layer_norm_backward(ctx, grad):
    input, weight, bias = ctx.saved_tensors
    nig = needs_grad(ctx, 5)
    mask = [nig[0], nig[2], nig[3]]
    if torch.is_grad_enabled():
        gx, gw, gb = composite_grads(_torch_layer_norm(ctx.shape, ctx.eps), (input, weight, bias), mask, grad)
    else:  # recompute the statistics the plain op did not keep
        _, mean, rstd = _ops.layer_norm_stats(input, ctx.shape, weight, bias, ctx.eps)
        gx, gw, gb = _ops.layer_norm_backward(grad, input, ctx.shape, mean, rstd, weight, mask)
    return gx, None, gw, gb, None


torch.library.register_autograd("fusedops::layer_norm", _layer_norm_backward, setup_context=_layer_norm_setup)


def _layer_norm_stats_setup(ctx, inputs, output):
    input, shape, weight, bias, eps = inputs
    ctx.shape, ctx.eps = list(shape), eps
    # mean and rstd are returned to be saved for backward, not to be differentiated.
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(input, weight, bias, output[1], output[2])


def _layer_norm_stats_backward(ctx, grad, _grad_mean, _grad_rstd):
    input, weight, bias, mean, rstd = ctx.saved_tensors
    nig = needs_grad(ctx, 5)
    mask = [nig[0], nig[2], nig[3]]
    if torch.is_grad_enabled():
        gx, gw, gb = composite_grads(_torch_layer_norm(ctx.shape, ctx.eps), (input, weight, bias), mask, grad)
    else:
        gx, gw, gb = _ops.layer_norm_backward(grad, input, ctx.shape, mean, rstd, weight, mask)
    return gx, None, gw, gb, None


torch.library.register_autograd(
    "fusedops::layer_norm_stats", _layer_norm_stats_backward, setup_context=_layer_norm_stats_setup
)


def _add_composite(ctx, x, r, w, b, grad, grad_sum, nig):
    def fn(x, r, w, b):
        s = x + r
        return F.layer_norm(s, ctx.shape, w, b, ctx.eps), s

    with torch.enable_grad():
        out, s = fn(x, r, w, b)
        wrt = [t for t, n in zip((x, r, w, b), nig) if n]
        got = iter(torch.autograd.grad((out, s), wrt, (grad, grad_sum), create_graph=True, allow_unused=True))
    return [next(got) if n else None for n in nig]


def _add_layer_norm_setup(ctx, inputs, output):
    input, residual, shape, weight, bias, eps = inputs
    ctx.shape, ctx.eps = list(shape), eps
    ctx.save_for_backward(input, residual, weight, bias)


def _add_layer_norm_backward(ctx, grad, grad_sum):
    input, residual, weight, bias = ctx.saved_tensors
    nig = [needs_grad(ctx, 6)[i] for i in (0, 1, 3, 4)]
    if torch.is_grad_enabled():
        gx, gr, gw, gb = _add_composite(ctx, input, residual, weight, bias, grad, grad_sum, nig)
        return gx, gr, None, gw, gb, None
    _, s, mean, rstd = _ops.add_layer_norm_stats(input, residual, ctx.shape, weight, bias, ctx.eps)
    mask = [nig[0] or nig[1], nig[2], nig[3]]
    gs, gw, gb = _ops.add_layer_norm_backward(grad, grad_sum, s, ctx.shape, mean, rstd, weight, mask)
    return gs if nig[0] else None, gs if nig[1] else None, None, gw, gb, None


torch.library.register_autograd(
    "fusedops::add_layer_norm", _add_layer_norm_backward, setup_context=_add_layer_norm_setup
)


def _add_layer_norm_stats_setup(ctx, inputs, output):
    input, residual, shape, weight, bias, eps = inputs
    ctx.shape, ctx.eps = list(shape), eps
    ctx.mark_non_differentiable(output[2], output[3])
    # the sum is saved (it is an output): input and residual need not stay alive
    ctx.save_for_backward(output[1], weight, bias, output[2], output[3])


def _add_layer_norm_stats_backward(ctx, grad, grad_sum, _grad_mean, _grad_rstd):
    s, weight, bias, mean, rstd = ctx.saved_tensors
    nig = [needs_grad(ctx, 6)[i] for i in (0, 1, 3, 4)]
    if torch.is_grad_enabled():
        # d/d(input) = d/d(residual) = d/d(sum): differentiate through the saved sum
        gs, gw, gb = composite_grads(_torch_layer_norm(ctx.shape, ctx.eps), (s, weight, bias),
                                      [nig[0] or nig[1], nig[2], nig[3]], grad)
        if gs is not None:
            gs = gs + grad_sum
    else:
        mask = [nig[0] or nig[1], nig[2], nig[3]]
        gs, gw, gb = _ops.add_layer_norm_backward(grad, grad_sum, s, ctx.shape, mean, rstd, weight, mask)
    return gs if nig[0] else None, gs if nig[1] else None, None, gw, gb, None


torch.library.register_autograd(
    "fusedops::add_layer_norm_stats", _add_layer_norm_stats_backward, setup_context=_add_layer_norm_stats_setup
)


# RMSNorm: as LayerNorm, with no bias and the rstd alone saved.


def _torch_rms_norm(shape, eps):
    return lambda x, w: F.rms_norm(x, shape, w, eps)


def _rms_setup(ctx, input, weight, eps, normalized_shape):
    ctx.shape = list(normalized_shape) if normalized_shape is not None else (
        list(weight.shape) if weight is not None else [input.shape[-1]])
    ctx.eps, ctx.given_shape = eps, normalized_shape


def _rms_norm_setup(ctx, inputs, output):
    input, weight, eps, normalized_shape = inputs
    _rms_setup(ctx, input, weight, eps, normalized_shape)
    ctx.save_for_backward(input, weight)


def _rms_norm_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    nig = needs_grad(ctx, 4)
    if torch.is_grad_enabled():
        gx, gw = composite_grads(_torch_rms_norm(ctx.shape, ctx.eps), (input, weight), nig[:2], grad)
    else:  # recompute the rstd the plain op did not keep
        _, rstd = _ops.rms_norm_stats(input, weight, ctx.eps, ctx.given_shape)
        gx, gw = _ops.rms_norm_backward(grad, input, rstd, weight, ctx.given_shape, nig[:2])
    return gx, gw, None, None


torch.library.register_autograd("fusedops::rms_norm", _rms_norm_backward, setup_context=_rms_norm_setup)


def _rms_norm_stats_setup(ctx, inputs, output):
    input, weight, eps, normalized_shape = inputs
    _rms_setup(ctx, input, weight, eps, normalized_shape)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, weight, output[1])


def _rms_norm_stats_backward(ctx, grad, _grad_rstd):
    input, weight, rstd = ctx.saved_tensors
    nig = needs_grad(ctx, 4)
    if torch.is_grad_enabled():
        gx, gw = composite_grads(_torch_rms_norm(ctx.shape, ctx.eps), (input, weight), nig[:2], grad)
    else:
        gx, gw = _ops.rms_norm_backward(grad, input, rstd, weight, ctx.given_shape, nig[:2])
    return gx, gw, None, None


torch.library.register_autograd(
    "fusedops::rms_norm_stats", _rms_norm_stats_backward, setup_context=_rms_norm_stats_setup
)


def _add_rms_norm_setup(ctx, inputs, output):
    input, residual, weight, eps, normalized_shape = inputs
    _rms_setup(ctx, input, weight, eps, normalized_shape)
    ctx.save_for_backward(input, residual, weight)


def _add_rms_norm_backward(ctx, grad, grad_sum):
    input, residual, weight = ctx.saved_tensors
    nig = needs_grad(ctx, 3)
    if torch.is_grad_enabled():
        def fn(x, r, w):
            s = x + r
            return F.rms_norm(s, ctx.shape, w, ctx.eps), s

        with torch.enable_grad():
            ins = [t if not n or t.requires_grad else t.detach().requires_grad_()
                   for t, n in zip((input, residual, weight), nig)]
            out, s = fn(*ins)
            wrt = [t for t, n in zip(ins, nig) if n]
            got = iter(torch.autograd.grad((out, s), wrt, (grad, grad_sum), create_graph=True, allow_unused=True))
        gx, gr, gw = [next(got) if n else None for n in nig]
        return gx, gr, gw, None, None
    _, s, rstd = _ops.add_rms_norm_stats(input, residual, weight, ctx.eps, ctx.given_shape)
    gs, gw = _ops.add_rms_norm_backward(grad, grad_sum, s, rstd, weight, ctx.given_shape, [nig[0] or nig[1], nig[2]])
    return gs if nig[0] else None, gs if nig[1] else None, gw, None, None


torch.library.register_autograd("fusedops::add_rms_norm", _add_rms_norm_backward, setup_context=_add_rms_norm_setup)


def _add_rms_norm_stats_setup(ctx, inputs, output):
    input, residual, weight, eps, normalized_shape = inputs
    _rms_setup(ctx, input, weight, eps, normalized_shape)
    ctx.mark_non_differentiable(output[2])
    # the sum is saved (it is an output): input and residual need not stay alive
    ctx.save_for_backward(output[1], weight, output[2])


def _add_rms_norm_stats_backward(ctx, grad, grad_sum, _grad_rstd):
    s, weight, rstd = ctx.saved_tensors
    nig = needs_grad(ctx, 3)
    mask = [nig[0] or nig[1], nig[2]]
    if torch.is_grad_enabled():
        gs, gw = composite_grads(_torch_rms_norm(ctx.shape, ctx.eps), (s, weight), mask, grad)
        if gs is not None and grad_sum is not None:
            gs = gs + grad_sum
    else:
        gs, gw = _ops.add_rms_norm_backward(grad, grad_sum, s, rstd, weight, ctx.given_shape, mask)
    return gs if nig[0] else None, gs if nig[1] else None, gw, None, None


torch.library.register_autograd(
    "fusedops::add_rms_norm_stats", _add_rms_norm_stats_backward, setup_context=_add_rms_norm_stats_setup
)


# ---- autocast -------------------------------------------------------------------------------
# Under CPU autocast the input may be bfloat16 (a linear's output): the bf16 kernels normalize
# it in fp32 and return bfloat16, as torch's layer_norm does (mean and rstd stay float32); an
# fp32 LayerNorm weight is read in place. An input and a residual of different dtypes are
# promoted to a common one first, as `x + r` would be.

register_autocast_cpu_keep("layer_norm", params=(2, 3))
register_autocast_cpu_keep("layer_norm_stats", params=(2, 3))
register_autocast_cpu_keep("add_layer_norm", activations=(0, 1), params=(3, 4))
register_autocast_cpu_keep("add_layer_norm_stats", activations=(0, 1), params=(3, 4))
register_autocast_cpu_keep("rms_norm", params=(1,))
register_autocast_cpu_keep("rms_norm_stats", params=(1,))
register_autocast_cpu_keep("add_rms_norm", activations=(0, 1), params=(2,))
register_autocast_cpu_keep("add_rms_norm_stats", activations=(0, 1), params=(2,))
