"""batch_norm: the function, its autograd formula and fake (meta) shapes.

The op (``fusedops::batch_norm``) is functional: in training it returns the output and the
batch's per-channel mean, rstd = 1 / sqrt(var + eps) and biased variance; this function then
updates the running statistics in place as torch does (``running = (1 - momentum) * running +
momentum * batch``, with the unbiased variance ``var * n / (n - 1)`` for running_var, n the
values per channel). In eval mode the running statistics normalise.

Statistics: per channel, the mean of ``x - x0`` (x0 the channel's first value), then the
centred sum of squares around it, each a two-level sum (float lanes over blocks of at most 4096
values, block totals in double): sound for large offsets and long channels. For NCHW input
each channel is read from memory once: its variance and output passes find it in the L2 cache
while it fits (N * H * W values). Channels-last (NHWC) input is read in place and gives a
channels-last output. The backward (``batch_norm_backward``) makes one pass for the two
per-channel sums and one for the input gradient. Every sum is taken in an order fixed by the
shape: the same bits for any thread count. First derivatives only (no double backward).
"""
from typing import Optional

import torch

from ._autograd import needs_grad
from ._registry import _AUTOCAST_KEYS, _LIB

_ops = torch.ops.fusedops
_OP = "fusedops.batch_norm"


def _check_batch(input: torch.Tensor) -> None:
    # as torch: training statistics need more than one value per channel
    if input.dim() >= 2 and input.numel() // max(input.shape[1], 1) == 1 and input.numel() > 0:
        raise ValueError(f"{_OP}: expected more than 1 value per channel when training, got input size "
                         f"{list(input.shape)}")


def batch_norm(
    input: torch.Tensor,
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-05,
) -> torch.Tensor:
    """``torch.nn.functional.batch_norm`` over input [N, C, *]: per channel,
    ``(x - mean) / sqrt(var + eps) * weight + bias``. With ``training``, the batch's statistics
    are used and ``running_mean`` / ``running_var`` (when given) are updated in place with
    ``momentum``; otherwise the running statistics are used."""
    if training:
        _check_batch(input)
        out, mean, _, var = _ops.batch_norm(input, None, None, weight, bias, True, eps)
        n = input.numel() // max(input.shape[1], 1)
        if n > 0 and (running_mean is not None or running_var is not None):  # empty batch: as torch, kept
            with torch.no_grad():
                if running_mean is not None:
                    running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                if running_var is not None:
                    unbiased = var * (n / (n - 1)) if n > 1 else var
                    running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        return out
    if running_mean is None or running_var is None:
        raise ValueError(f"{_OP}: running_mean and running_var are needed when training=False")
    return _ops.batch_norm(input, running_mean, running_var, weight, bias, False, eps)[0]


# ---- fake (meta) implementations -------------------------------------------------------------


def _stat_dtype(input):
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _channels_last(input):
    return input.dim() == 4 and not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last)


def _empty_like_layout(input):
    fmt = torch.channels_last if _channels_last(input) else torch.contiguous_format
    return torch.empty_like(input, memory_format=fmt)


@torch.library.register_fake("fusedops::batch_norm")
def _batch_norm_fake(input, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-05):
    torch._check(input.dim() >= 2, lambda: f"{_OP}: input must have at least 2 dimensions [N, C, ...]")
    C = input.shape[1]
    stats = [input.new_empty((C,), dtype=_stat_dtype(input)) for _ in range(3)]
    return (_empty_like_layout(input), *stats)


@torch.library.register_fake("fusedops::batch_norm_backward")
def _batch_norm_backward_fake(grad_output, input, mean, rstd, weight, training, output_mask):
    C = input.shape[1]
    dx = _empty_like_layout(input) if output_mask[0] else None
    dw = input.new_empty((C,)) if output_mask[1] else None
    db = input.new_empty((C,)) if output_mask[2] else None
    return dx, dw, db


# ---- autograd -------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    defaults = [None, None, False, None]  # trailing arguments left at their defaults
    input, _, _, weight, bias, training, _ = list(inputs) + defaults[len(inputs) - 3:]
    _, mean, rstd, var = output
    ctx.mark_non_differentiable(mean, rstd, var)
    ctx.training = training
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.save_for_backward(input, mean, rstd, weight)


def _backward(ctx, grad, *_stat_grads):
    input, mean, rstd, weight = ctx.saved_tensors
    nig = needs_grad(ctx, 5)
    mask = [nig[0], ctx.has_weight and nig[3], ctx.has_bias and nig[4]]
    dx = dw = db = None
    if any(mask):
        dx, dw, db = _ops.batch_norm_backward(grad, input, mean, rstd, weight, ctx.training, mask)
    return dx, None, None, dw, db, None, None


torch.library.register_autograd("fusedops::batch_norm", _backward, setup_context=_setup)


# ---- autocast -------------------------------------------------------------------------------
# Under CPU autocast a bfloat16/float16 input (a linear's output) is normalised in float32 and
# the output comes back in the input's dtype; the statistics stay float32.

def _batch_norm_autocast(input, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-05):
    op = _ops.batch_norm.default
    lowp = input.dtype in (torch.bfloat16, torch.float16)

    def f32(t):
        return t.float() if t is not None and lowp and t.dtype != torch.float64 else t

    with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
        out, mean, rstd, var = op(f32(input), running_mean, running_var, f32(weight), f32(bias), training, eps)
    return (out.to(input.dtype) if lowp else out), mean, rstd, var


_LIB.impl("batch_norm", _batch_norm_autocast, "AutocastCPU")
