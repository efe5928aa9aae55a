"""Losses: cross_entropy, linear_cross_entropy, mse_loss, binary_cross_entropy_with_logits —
the functions, their autograd formulas and fake (meta) shapes.

cross_entropy computes the gradient w.r.t. the logits in the same pass as the loss when the
input requires grad (``compute_grad``): the backward then only scales that buffer by the
upstream gradient, in place (nothing at all for ``loss.backward()``), and hands it back as
the gradient. linear_cross_entropy likewise computes grad_input/grad_weight/grad_bias during
its forward for reductions "mean" and "sum"; for "none" its backward recomputes the logits
chunk by chunk. A saved gradient buffer is scaled in place once; a second backward through the
same graph (retain_graph=True) recomputes it.
Higher-order gradients (create_graph=True) differentiate torch's composite formulas.
"""
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from ._autograd import composite_grads, needs_grad
from ._registry import _LIB, register_autocast_cpu_fp32, register_fake

_ops = torch.ops.fusedops
REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, op):
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"fusedops.{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
        )


def _fail(op, msg):
    raise RuntimeError(f"fusedops.{op}: {msg}")


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy``: logits [C], [N, C] or [N, C, d1, ...]; class-index
    targets (int64: [], [N] or [N, d1, ...]) or class probabilities (the input's shape);
    class ``weight`` [C]; ``ignore_index``; ``label_smoothing``; reduction "mean" | "sum" |
    "none" with torch's denominators (the weighted count of rows not ignored for class
    indices; rows for probabilities). Loss and gradient in one pass over the logits."""
    op = "cross_entropy"
    _check_reduction(reduction, op)
    if input.dim() == 0:
        _fail(op, "input must have at least 1 dimension (the classes), got a 0-d tensor")
    probs = target.is_floating_point()
    if probs:
        if target.shape != input.shape:
            _fail(op, f"probability target must have the input's shape {list(input.shape)}, "
                      f"got {list(target.shape)}")
    else:
        want = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.dim() >= 2 else ()
        if tuple(target.shape) != want:
            _fail(op, f"target must have shape {list(want)} for input of shape "
                      f"{list(input.shape)}, got {list(target.shape)}")
    if input.dim() == 1:
        x2, t2 = input.unsqueeze(0), target.unsqueeze(0)
    elif input.dim() == 2:
        x2, t2 = input, target
    else:
        c = input.shape[1]
        x2 = input.movedim(1, -1).reshape(-1, c)
        t2 = target.movedim(1, -1).reshape(-1, c) if probs else target.reshape(-1)
    compute_grad = torch.is_grad_enabled() and input.requires_grad
    loss = _ops.cross_entropy(
        x2, t2, weight, ignore_index, reduction, float(label_smoothing), compute_grad
    )[0]
    if reduction == "none":
        loss = loss.reshape(input.shape[:1] + input.shape[2:] if input.dim() >= 2 else ())
    return loss


def linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``F.cross_entropy(F.linear(input, weight, bias), target, ...)`` for input [..., C_in]
    and int64 target [...], computed over chunks of rows so the [N, vocab] logits never exist
    whole. With reduction "mean"/"sum" the gradients are computed during the forward."""
    op = "linear_cross_entropy"
    _check_reduction(reduction, op)
    mask = [False, False, False]
    if torch.is_grad_enabled() and reduction != "none":
        mask = [input.requires_grad, weight.requires_grad,
                bias is not None and bias.requires_grad]
    return _ops.linear_cross_entropy(
        input, weight, target, bias, ignore_index, reduction, float(label_smoothing), mask
    )[0]


def mse_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``torch.nn.functional.mse_loss``: (input - target)^2, broadcasting as torch (with its
    warning when the sizes differ)."""
    _check_reduction(reduction, "mse_loss")
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size "
            f"({input.shape}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.",
            stacklevel=2,
        )
        input, target = torch.broadcast_tensors(input, target)
    return _ops.mse_loss(input, target, reduction)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    pos_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits``: weight and pos_weight
    broadcast to the input's shape (pos_weight along the last dimension, the classes)."""
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    if target.shape != input.shape:
        raise ValueError(
            f"fusedops.binary_cross_entropy_with_logits: target size ({list(target.shape)}) "
            f"must be the same as input size ({list(input.shape)})"
        )
    return _ops.binary_cross_entropy_with_logits(input, target, weight, pos_weight, reduction)


# ---- fake (meta) implementations -------------------------------------------------------------


@register_fake("fusedops::cross_entropy")
def _cross_entropy_fake(input, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, compute_grad=False):
    torch._check(input.dim() == 2, lambda: "fusedops.cross_entropy: input must be 2-D [N, C]")
    n, c = input.shape
    if target.is_floating_point():
        torch._check(target.shape == input.shape,
                     lambda: "fusedops.cross_entropy: probability target must match input")
    else:
        torch._check(target.dim() == 1 and target.shape[0] == n,
                     lambda: "fusedops.cross_entropy: target must have shape [N]")
    if weight is not None:
        torch._check(weight.dim() == 1 and weight.shape[0] == c,
                     lambda: "fusedops.cross_entropy: weight must be 1-D [C]")
    loss = input.new_empty((n,) if reduction == "none" else ())
    grad = input.new_empty((n, c) if compute_grad else (0,))
    return loss, grad


@register_fake("fusedops::cross_entropy_backward")
def _cross_entropy_backward_fake(grad_output, grad):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


@register_fake("fusedops::loss_grad_scale")
def _loss_grad_scale_fake(grad, grad_output):
    return None


def _lce_shapes(input, weight, target, bias):
    torch._check(weight.dim() == 2, lambda: "fusedops.linear_cross_entropy: weight must be 2-D")
    torch._check(input.dim() >= 1 and input.shape[-1] == weight.shape[1],
                 lambda: "fusedops.linear_cross_entropy: input's last dimension must equal "
                         "weight's in_features")
    torch._check(tuple(target.shape) == tuple(input.shape[:-1]),
                 lambda: "fusedops.linear_cross_entropy: target must have input's shape "
                         "without its last dimension")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0],
                     lambda: "fusedops.linear_cross_entropy: bias must be 1-D [vocab]")


@register_fake("fusedops::linear_cross_entropy")
def _lce_fake(input, weight, target, bias=None, ignore_index=-100, reduction="mean",
              label_smoothing=0.0, grad_mask=(False, False, False)):
    _lce_shapes(input, weight, target, bias)
    # the loss in the promoted dtype of input and weight (bf16 hidden states over an fp32
    # master weight give an fp32 loss); each gradient in its tensor's dtype
    loss_dtype = torch.promote_types(input.dtype, weight.dtype)
    loss = input.new_empty(target.shape if reduction == "none" else (), dtype=loss_dtype)
    return (
        loss,
        input.new_empty(input.shape) if grad_mask[0] else None,
        weight.new_empty(weight.shape) if grad_mask[1] else None,
        bias.new_empty(weight.shape[:1]) if grad_mask[2] and bias is not None else None,
    )


@register_fake("fusedops::linear_cross_entropy_backward")
def _lce_backward_fake(grad_output, input, weight, target, bias, ignore_index, reduction,
                       label_smoothing, output_mask):
    _lce_shapes(input, weight, target, bias)
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        bias.new_empty(weight.shape[:1]) if output_mask[2] and bias is not None else None,
    )


def _pair_fake(input, target, op):
    torch._check(target.shape == input.shape,
                 lambda: f"fusedops.{op}: target must have the input's shape")


@register_fake("fusedops::mse_loss")
def _mse_fake(input, target, reduction="mean"):
    _pair_fake(input, target, "mse_loss")
    return input.new_empty(input.shape if reduction == "none" else ())


@register_fake("fusedops::mse_loss_backward")
def _mse_backward_fake(grad_output, input, target, reduction):
    _pair_fake(input, target, "mse_loss_backward")
    return input.new_empty(input.shape)


@register_fake("fusedops::binary_cross_entropy_with_logits")
def _bce_fake(input, target, weight=None, pos_weight=None, reduction="mean"):
    _pair_fake(input, target, "binary_cross_entropy_with_logits")
    return input.new_empty(input.shape if reduction == "none" else ())


@register_fake("fusedops::binary_cross_entropy_with_logits_backward")
def _bce_backward_fake(grad_output, input, target, weight, pos_weight, reduction, output_mask):
    _pair_fake(input, target, "binary_cross_entropy_with_logits_backward")
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        input.new_empty(input.shape) if output_mask[1] else None,
    )


# ---- autograd -------------------------------------------------------------------------------




def _tracing(t):
    """True while torch.compile / export traces (fake or functional tensors): buffers are then
    scaled out of place."""
    return type(t) is not torch.Tensor or torch.compiler.is_compiling()


def _scaled(buf, grad):
    """buf * grad, in place when running eagerly (buf is ours: a gradient computed in the
    forward pass)."""
    if _tracing(buf):
        return _ops.cross_entropy_backward(grad, buf)
    _ops.loss_grad_scale(buf, grad)
    return buf


def _ce_setup(ctx, inputs, output):
    input, target, weight, ignore_index, reduction, ls, compute_grad = inputs
    ctx.args = (ignore_index, reduction, ls)
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no [N, C] of zeros for the buffer's (absent) gradient
    ctx.save_for_backward(input, target, weight, output[1] if compute_grad else None)


def _ce_torch(weight, ignore_index, reduction, ls):
    return lambda x, t: F.cross_entropy(x, t, weight, ignore_index=ignore_index,
                                        reduction=reduction, label_smoothing=ls)


def _ce_backward(ctx, grad, _grad_buf):
    if grad is None:
        return None, None, None, None, None, None, None
    input, target, weight, buf = ctx.saved_tensors
    ignore_index, reduction, ls = ctx.args
    need_x, need_t = needs_grad(ctx, 2)
    need_t = need_t and target.is_floating_point()
    fn = _ce_torch(weight, ignore_index, reduction, ls)
    if torch.is_grad_enabled():
        gx, gt = composite_grads(fn, (input, target), [need_x, need_t], grad)
        return gx, gt, None, None, None, None, None
    gx = gt = None
    if need_t:  # probability targets: -(scaled) w q' log_softmax, through torch (rare)
        gt = composite_grads(fn, (input, target), [False, True], grad)[1]
    if need_x:
        if buf is None or getattr(ctx, "consumed", False):  # again (retain_graph): recompute
            buf = _ops.cross_entropy(input, target, weight, ignore_index, reduction, ls, True)[1]
        gx = _scaled(buf, grad)
        ctx.consumed = True
    return gx, gt, None, None, None, None, None


torch.library.register_autograd("fusedops::cross_entropy", _ce_backward, setup_context=_ce_setup)


def _lce_setup(ctx, inputs, output):
    input, weight, target, bias, ignore_index, reduction, ls, mask = inputs
    ctx.args = (ignore_index, reduction, ls)
    ctx.set_materialize_grads(False)  # no zeros for the gradient outputs' (absent) gradients
    for g in output[1:]:
        if g is not None:
            ctx.mark_non_differentiable(g)
    ctx.save_for_backward(input, weight, target, bias, *output[1:])


def _lce_backward(ctx, grad, *_unused):
    if grad is None:
        return (None,) * 8
    input, weight, target, bias, gx, gw, gb = ctx.saved_tensors
    ignore_index, reduction, ls = ctx.args
    needs = needs_grad(ctx, 4)
    need = [needs[0], needs[1], needs[3] and bias is not None]
    if torch.is_grad_enabled():
        def fn(x, w, b):
            return F.cross_entropy(F.linear(x, w, b), target, ignore_index=ignore_index,
                                   reduction=reduction, label_smoothing=ls)
        gx, gw, gb = composite_grads(fn, (input, weight, bias), need, grad)
        return gx, gw, None, gb, None, None, None, None
    saved = [gx, gw, gb]
    fresh = not getattr(ctx, "consumed", False)  # a second backward (retain_graph) recomputes
    ctx.consumed = True
    if fresh and all(s is not None or not n for s, n in zip(saved, need)):
        out = [_scaled(s, grad) if n else None for s, n in zip(saved, need)]
    else:
        out = list(_ops.linear_cross_entropy_backward(
            grad, input, weight, target, bias, ignore_index, reduction, ls, need))
    return out[0], out[1], None, out[2], None, None, None, None


torch.library.register_autograd(
    "fusedops::linear_cross_entropy", _lce_backward, setup_context=_lce_setup
)


def _mse_setup(ctx, inputs, output):
    ctx.reduction = inputs[2]
    ctx.save_for_backward(inputs[0], inputs[1])


def _mse_backward(ctx, grad):
    input, target = ctx.saved_tensors
    need_x, need_t = needs_grad(ctx, 2)
    if torch.is_grad_enabled():
        fn = lambda x, t: F.mse_loss(x, t, reduction=ctx.reduction)  # noqa: E731
        gx, gt = composite_grads(fn, (input, target), [need_x, need_t], grad)
        return gx, gt, None
    g = _ops.mse_loss_backward(grad, input, target, ctx.reduction) if need_x or need_t else None
    return (g if need_x else None), (-g if need_t else None), None


torch.library.register_autograd("fusedops::mse_loss", _mse_backward, setup_context=_mse_setup)


def _bce_setup(ctx, inputs, output):
    input, target, weight, pos_weight, reduction = inputs
    ctx.reduction = reduction
    ctx.save_for_backward(input, target, weight, pos_weight)


def _bce_backward(ctx, grad):
    input, target, weight, pos_weight = ctx.saved_tensors
    need_x, need_t = needs_grad(ctx, 2)
    if torch.is_grad_enabled():
        def fn(x, t):
            return F.binary_cross_entropy_with_logits(x, t, weight, reduction=ctx.reduction,
                                                      pos_weight=pos_weight)
        gx, gt = composite_grads(fn, (input, target), [need_x, need_t], grad)
        return gx, gt, None, None, None
    gx, gt = _ops.binary_cross_entropy_with_logits_backward(
        grad, input, target, weight, pos_weight, ctx.reduction, [need_x, need_t])
    return gx, gt, None, None, None


torch.library.register_autograd(
    "fusedops::binary_cross_entropy_with_logits", _bce_backward, setup_context=_bce_setup
)

# Under CPU autocast the losses return float32: torch's policy for cross_entropy, mse_loss and
# binary_cross_entropy_with_logits. bf16 logits go to cross_entropy's bf16 kernel as they are
# (fp32 log-sum-exp and loss, the loss rounded once to bf16 by the kernel and returned as
# float32), so no float32 copy of them is made or saved; linear_cross_entropy's hidden states go
# to bfloat16, so its three products run on the bf16 GEMM over the fp32 master weight read in
# place (the logits chunk, the loss and the weight gradient stay fp32). mse_loss and
# binary_cross_entropy_with_logits compute in float32 (they have no bf16 kernels of their own).
register_autocast_cpu_fp32("mse_loss")
register_autocast_cpu_fp32("binary_cross_entropy_with_logits")


def _ce_autocast(input, target, weight=None, *rest):
    from ._registry import _AUTOCAST_KEYS, _to_float32

    op = _ops.cross_entropy.default
    bf16 = (input.dtype == torch.bfloat16
            and (not target.is_floating_point() or target.dtype == torch.bfloat16)
            and (weight is None or weight.dtype in (torch.float32, torch.bfloat16)))
    with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
        if not bf16:
            return op(*_to_float32((input, target, weight, *rest)))
        loss, grad = op(input, target, weight, *rest)
    return loss.float(), grad


_LIB.impl("cross_entropy", _ce_autocast, "AutocastCPU")


def _lce_autocast(input, weight, *rest):
    from ._registry import _AUTOCAST_KEYS, _to_float32

    op = _ops.linear_cross_entropy.default
    bf16 = (torch.get_autocast_dtype("cpu") == torch.bfloat16 and input.dtype != torch.float64
            and weight.dtype != torch.float64)
    with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
        if not bf16:
            return op(*_to_float32((input, weight, *rest)))
        out = op(input.to(torch.bfloat16), weight, *rest)
    return (out[0].float(), *out[1:])


_LIB.impl("linear_cross_entropy", _lce_autocast, "AutocastCPU")
