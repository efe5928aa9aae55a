"""conv2d and max_pool2d: the functions, their autograd formulas and fake (meta) shapes.

Backward passes run in our kernels (`conv2d_backward`, `max_pool2d_backward`). Higher-order
gradients (`create_graph=True`) differentiate torch's own composite formulas, so they are
correct to any order but do not run in our kernels.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from ._autograd import composite_grads, needs_grad
from ._registry import register_autocast_cpu_lowp, register_fake

_ops = torch.ops.fusedops
_IntPair = Union[int, Sequence[int]]


def _pair(v, op, name):
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) == 1:
        return [int(v[0]), int(v[0])]
    if len(v) != 2:
        raise ValueError(f"fusedops.{op}: {name} must be an int or a pair of ints, got {v!r}")
    return [int(v[0]), int(v[1])]


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: _IntPair = 1,
    padding: Union[str, _IntPair] = 0,
    dilation: _IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d``: input [N, C, H, W] or [C, H, W], weight
    [out_channels, C / groups, kH, kW]; padding an int, a pair, "valid" or "same" (an even
    dilated kernel pads one more row/column at the bottom/right, as torch does)."""
    stride = _pair(stride, "conv2d", "stride")
    dilation = _pair(dilation, "conv2d", "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            if stride != [1, 1]:
                raise ValueError(
                    "fusedops.conv2d: padding='same' is not supported for strided convolutions"
                )
            if weight.dim() != 4:
                raise ValueError(
                    f"fusedops.conv2d: weight must be 4-D, got shape {tuple(weight.shape)}"
                )
            total = [dilation[i] * (weight.shape[2 + i] - 1) for i in range(2)]
            padding = [t // 2 for t in total]
            extra = [t - 2 * p for t, p in zip(total, padding)]
            if extra != [0, 0]:  # the odd row/column goes to the bottom/right
                input = F.pad(input, [0, extra[1], 0, extra[0]])
        else:
            raise ValueError(
                f"fusedops.conv2d: padding must be 'valid', 'same', an int or a pair, got {padding!r}"
            )
    else:
        padding = _pair(padding, "conv2d", "padding")
    return _ops.conv2d(input, weight, bias, stride, padding, dilation, groups)


def max_pool2d(
    input: torch.Tensor,
    kernel_size: _IntPair,
    stride: Optional[_IntPair] = None,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """``torch.nn.functional.max_pool2d``; stride defaults to kernel_size. With
    return_indices, also the flat index (h * W + w) of each maximum in its plane."""
    k = _pair(kernel_size, "max_pool2d", "kernel_size")
    if stride is None or (not isinstance(stride, int) and len(stride) == 0):
        s = list(k)
    else:
        s = _pair(stride, "max_pool2d", "stride")
    out, idx = _ops.max_pool2d_with_indices(
        input, k, s, _pair(padding, "max_pool2d", "padding"),
        _pair(dilation, "max_pool2d", "dilation"), bool(ceil_mode)
    )
    return (out, idx) if return_indices else out


# ---- fake (meta) implementations -------------------------------------------------------------


def _conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@register_fake("fusedops::conv2d")
def _conv2d_fake(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    torch._check(input.dim() in (3, 4), lambda: "fusedops.conv2d: input must be 3-D or 4-D")
    torch._check(weight.dim() == 4, lambda: "fusedops.conv2d: weight must be 4-D")
    torch._check(
        weight.shape[2] > 0 and weight.shape[3] > 0,
        lambda: "fusedops.conv2d: weight's kernel size (kH, kW) must be positive",
    )
    torch._check(groups > 0, lambda: "fusedops.conv2d: groups must be positive")
    batched = input.dim() == 4
    n = input.shape[0] if batched else 1
    c, h, w = input.shape[-3:]
    k = weight.shape[0]
    torch._check(
        weight.shape[1] * groups == c,
        lambda: "fusedops.conv2d: input channels must equal weight.size(1) * groups",
    )
    torch._check(k % groups == 0, lambda: "fusedops.conv2d: groups must divide the output channels")
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == k,
            lambda: "fusedops.conv2d: bias must be 1-D [out_channels]",
        )
    oh = _conv_out(h, weight.shape[2], stride[0], padding[0], dilation[0])
    ow = _conv_out(w, weight.shape[3], stride[1], padding[1], dilation[1])
    torch._check(oh > 0 and ow > 0, lambda: "fusedops.conv2d: output size must be positive")
    cl = batched and (
        suggest_memory_format(input) == torch.channels_last
        or suggest_memory_format(weight) == torch.channels_last
    )
    out = torch.empty(
        (n, k, oh, ow), dtype=input.dtype, device=input.device,
        memory_format=torch.channels_last if cl else torch.contiguous_format,
    )
    return out if batched else out.squeeze(0)


@register_fake("fusedops::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty(weight.shape[:1]) if output_mask[2] else None,
    )


def _pool_out(size, k, p, s, d, ceil_mode):
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _empty_pool_window(size, out, p, s, d):
    """The first output whose window holds no input element, or -1 (see common/conv_args.h)."""
    if d <= size:
        return -1
    for o in range(out):
        start = o * s - p
        if start >= 0:
            break
        if start + -(start // d) * d >= size:
            return o
    return -1


@register_fake("fusedops::max_pool2d_with_indices")
def _max_pool2d_fake(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    torch._check(input.dim() in (3, 4), lambda: "fusedops.max_pool2d: input must be 3-D or 4-D")
    torch._check(
        padding[0] <= kernel_size[0] // 2 and padding[1] <= kernel_size[1] // 2,
        lambda: "fusedops.max_pool2d: padding must be at most half the kernel size",
    )
    h, w = input.shape[-2:]
    oh = _pool_out(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    ow = _pool_out(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    torch._check(oh > 0 and ow > 0, lambda: "fusedops.max_pool2d: output size must be positive")
    if input.numel() > 0:
        torch._check(
            _empty_pool_window(h, oh, padding[0], stride[0], dilation[0]) < 0
            and _empty_pool_window(w, ow, padding[1], stride[1], dilation[1]) < 0,
            lambda: "fusedops.max_pool2d: every pooling window must hold an input element",
        )
    shape = (*input.shape[:-2], oh, ow)
    fmt = suggest_memory_format(input) if input.dim() == 4 else torch.contiguous_format
    out = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)
    idx = torch.empty(shape, dtype=torch.long, device=input.device, memory_format=fmt)
    return out, idx


@register_fake("fusedops::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation,
                              ceil_mode):
    return input.new_empty(input.shape)


# ---- autograd -------------------------------------------------------------------------------




def _conv2d_setup(ctx, inputs, output):
    input, weight, bias = inputs[:3]
    rest = (list(inputs[3:]) + [None] * 4)[:4]
    defaults = ([1, 1], [0, 0], [1, 1], 1)
    ctx.conf = tuple(d if v is None else v for v, d in zip(rest, defaults))
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, bias)


def _conv2d_backward(ctx, grad):
    input, weight, bias = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conf
    mask = needs_grad(ctx, 3)
    mask[2] = mask[2] and ctx.has_bias
    if torch.is_grad_enabled():
        fn = lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)  # noqa: E731
        return (*composite_grads(fn, (input, weight, bias), mask, grad), None, None, None, None)
    gx, gw, gb = _ops.conv2d_backward(grad, input, weight, stride, padding, dilation, groups, mask)
    return gx, gw, gb, None, None, None, None


torch.library.register_autograd("fusedops::conv2d", _conv2d_backward, setup_context=_conv2d_setup)


def _pool_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.conf = tuple(inputs[1:]) + ((0, 0), (1, 1), False)[len(inputs) - 3:]
    ctx.save_for_backward(inputs[0], output[1])


def _scatter_grad(input, indices, grad):
    """The max-pool input gradient through differentiable torch ops (for double backward)."""
    flat = grad.new_zeros(input.shape).flatten(-2)
    return flat.scatter_add(-1, indices.flatten(-2), grad.flatten(-2)).view(input.shape)


def _pool_backward(ctx, grad, _grad_idx):
    input, indices = ctx.saved_tensors
    if not needs_grad(ctx, 1)[0]:
        return None, None, None, None, None, None
    if torch.is_grad_enabled():
        gx = _scatter_grad(input, indices, grad)
    else:
        gx = _ops.max_pool2d_backward(grad, input, indices, *ctx.conf)
    return gx, None, None, None, None, None


torch.library.register_autograd(
    "fusedops::max_pool2d_with_indices", _pool_backward, setup_context=_pool_setup
)

# bf16 autocast: the input in bfloat16, the weight and bias as they are (fp32 masters are read in
# place), so no float32 copy of a bfloat16 input and no bfloat16 copy of a weight is saved; the
# output is bfloat16, as torch's conv2d under autocast.
register_autocast_cpu_lowp("conv2d", bf16_args=(0,))
