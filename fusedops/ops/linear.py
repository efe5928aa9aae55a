"""linear and matmul: the functions, their autograd formulas and fake (meta) shapes.

Backward passes run in our kernels (`linear_backward`, `matmul_backward`). A linear with a
fused GELU, when it needs gradients, runs `linear_act`, which also returns the
pre-activation for the backward; called directly, `torch.ops.fusedops.linear` recomputes it.
Higher-order gradients (`create_graph=True`) differentiate torch's own composite formulas,
so they are correct to any order but do not run in our kernels.
"""
from typing import Optional

import torch

from ._autograd import composite_grads, needs_grad
from ._registry import register_autocast_cpu_lowp, register_fake

_ops = torch.ops.fusedops
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


def linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """``act(input @ weight.T + bias)``, as ``torch.nn.functional.linear`` followed by the
    activation, fused into the GEMM epilogue.

    input: [..., in_features]; weight: [out_features, in_features]; bias: [out_features];
    activation: None, "relu", "gelu" (erf) or "gelu_tanh" (tanh approximation).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"fusedops.linear: activation must be one of {ACTIVATIONS}, got {activation!r}"
        )
    if activation in ("gelu", "gelu_tanh") and torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return _ops.linear_act(input, weight, bias, activation)[0]
    return _ops.linear(input, weight, bias, activation)


def matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``input @ other`` for 2-D and 3-D operands, with the batch dimension broadcast as
    ``torch.matmul`` does ([B, M, K] @ [K, N], [M, K] @ [B, K, N], batch 1 against B).
    The arguments are named as torch.matmul's."""
    return _ops.matmul(input, other)


# ---- fake (meta) implementations -------------------------------------------------------------


def _linear_shape(input, weight):
    torch._check(weight.dim() == 2, lambda: "fusedops.linear: weight must be 2-D")
    torch._check(input.dim() >= 1, lambda: "fusedops.linear: input must be at least 1-D")
    torch._check(
        input.shape[-1] == weight.shape[1],
        lambda: "fusedops.linear: input's last dimension must equal weight's in_features",
    )
    return (*input.shape[:-1], weight.shape[0])


def _check_bias(bias, weight):
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == weight.shape[0],
            lambda: "fusedops.linear: bias must be 1-D [out_features]",
        )


@register_fake("fusedops::linear")
def _linear_fake(input, weight, bias=None, activation=None):
    _check_bias(bias, weight)
    return input.new_empty(_linear_shape(input, weight))


@register_fake("fusedops::linear_act")
def _linear_act_fake(input, weight, bias, activation):
    _check_bias(bias, weight)
    shape = _linear_shape(input, weight)
    return input.new_empty(shape), input.new_empty(shape)


@register_fake("fusedops::linear_backward")
def _linear_backward_fake(grad_output, input, weight, act_input, activation, output_mask):
    return (
        input.new_empty(input.shape) if output_mask[0] else None,
        weight.new_empty(weight.shape) if output_mask[1] else None,
        weight.new_empty(weight.shape[:1]) if output_mask[2] else None,
    )


def _matmul_shape(a, b):
    torch._check(a.dim() in (2, 3), lambda: "fusedops.matmul: input must be 2-D or 3-D")
    torch._check(b.dim() in (2, 3), lambda: "fusedops.matmul: other must be 2-D or 3-D")
    torch._check(a.shape[-1] == b.shape[-2], lambda: "fusedops.matmul: inner dimensions differ")
    if a.dim() == 2 and b.dim() == 2:
        return (a.shape[0], b.shape[1])
    if a.dim() == 2:
        batch = b.shape[0]
    elif b.dim() == 2:
        batch = a.shape[0]
    else:
        torch._check(
            a.shape[0] == b.shape[0] or a.shape[0] == 1 or b.shape[0] == 1,
            lambda: "fusedops.matmul: batch sizes must match or be 1",
        )
        batch = b.shape[0] if a.shape[0] == 1 else a.shape[0]
    return (batch, a.shape[-2], b.shape[-1])


@register_fake("fusedops::matmul")
def _matmul_fake(a, b):
    return a.new_empty(_matmul_shape(a, b))


@register_fake("fusedops::matmul_backward")
def _matmul_backward_fake(grad_output, a, b, output_mask):
    return (
        a.new_empty(a.shape) if output_mask[0] else None,
        b.new_empty(b.shape) if output_mask[1] else None,
    )


# ---- autograd -------------------------------------------------------------------------------

_TORCH_ACT = {
    None: lambda z: z,
    "relu": torch.nn.functional.relu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh"),
}




def _linear_setup(ctx, inputs, output):
    input, weight, bias, activation = (list(inputs) + [None, None])[:4]
    ctx.activation = activation
    # relu's derivative reads the output; gelu's the pre-activation, recomputed from the bias.
    ctx.save_for_backward(input, weight, bias, output if activation == "relu" else None)


def _linear_backward(ctx, grad):
    input, weight, bias, act_input = ctx.saved_tensors
    act, mask = ctx.activation, needs_grad(ctx, 3)
    if torch.is_grad_enabled():
        fn = lambda x, w, b: _TORCH_ACT[act](torch.nn.functional.linear(x, w, b))  # noqa: E731
        return (*composite_grads(fn, (input, weight, bias), mask, grad), None)
    if act in ("gelu", "gelu_tanh"):
        act_input = _ops.linear(input, weight, bias, None)
    gx, gw, gb = _ops.linear_backward(grad, input, weight, act_input, act, mask)
    return gx, gw, gb, None


torch.library.register_autograd("fusedops::linear", _linear_backward, setup_context=_linear_setup)


def _linear_act_setup(ctx, inputs, output):
    input, weight, bias, activation = inputs
    ctx.activation = activation
    # The pre-activation is returned to be saved for backward, not to be differentiated.
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, weight, bias, output[1])


def _linear_act_backward(ctx, grad, _grad_preact):
    input, weight, bias, preact = ctx.saved_tensors
    act, mask = ctx.activation, needs_grad(ctx, 3)
    if torch.is_grad_enabled():
        fn = lambda x, w, b: _TORCH_ACT[act](torch.nn.functional.linear(x, w, b))  # noqa: E731
        return (*composite_grads(fn, (input, weight, bias), mask, grad), None)
    gx, gw, gb = _ops.linear_backward(grad, input, weight, preact, act, mask)
    return gx, gw, gb, None


torch.library.register_autograd(
    "fusedops::linear_act", _linear_act_backward, setup_context=_linear_act_setup
)


def _matmul_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _matmul_backward(ctx, grad):
    a, b = ctx.saved_tensors
    mask = needs_grad(ctx, 2)
    if torch.is_grad_enabled():
        return tuple(composite_grads(torch.matmul, (a, b), mask, grad))
    return tuple(_ops.matmul_backward(grad, a, b, mask))


torch.library.register_autograd("fusedops::matmul", _matmul_backward, setup_context=_matmul_setup)

# bf16 autocast: the input in bfloat16, the weight and bias as they are (fp32 masters are read
# in place); matmul's two operands in bfloat16.
register_autocast_cpu_lowp("linear", bf16_args=(0,))
register_autocast_cpu_lowp("linear_act", bf16_args=(0,))
register_autocast_cpu_lowp("matmul", bf16_args=(0, 1))
